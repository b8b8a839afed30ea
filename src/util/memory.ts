/**
 * Frees a large buffer's memory at once instead of at some later garbage collection. V8 starts a
 * full collection for about every 64 MiB of buffers allocated; streaming gigabytes through 1 MiB
 * buffers made that a second of CPU per restore. Detaching the buffer (ArrayBuffer.transfer to
 * length 0) releases its backing store immediately.
 *
 * Only for a buffer that owns its whole ArrayBuffer (not a slice of a shared one) and that no
 * one will read again: afterwards every view of it is empty. Anything else (a slice, an empty or
 * already freed buffer) is left to the GC.
 */
export function freeNow(buffer: Buffer): void {
  if (buffer.length === 0 || buffer.byteOffset !== 0 || buffer.length !== buffer.buffer.byteLength || buffer.buffer instanceof SharedArrayBuffer) return;
  // (ES2024; Node has it since 21: typed here because the project's lib setting predates it.)
  try {
    (buffer.buffer as ArrayBuffer & { transfer(length: number): ArrayBuffer }).transfer(0);
  } catch {
    // Not detachable (memory a native addon owns): the GC frees it.
  }
}

/** Buffers of one size handed out and given back (ReusableBuffers, direct-io.ts ReusableAlignedBuffers). */
export interface BufferSource {
  readonly size: number;
  take(): Buffer;
  /** Returns a buffer from take(), no longer read or written by anyone. */
  give(buffer: Buffer): void;
}

/**
 * Buffers of one size, handed out again once given back instead of allocated anew. A program
 * that allocates and frees a large buffer per unit of work (restore: a MiB per decoded blob)
 * leaves glibc's heap fragmented, holding tens of MiB that it cannot return to the system;
 * buffers that live as long as the process do not. A buffer of another size given back is
 * freed at once.
 */
export class ReusableBuffers implements BufferSource {
  readonly size: number;
  private readonly idle: Buffer[] = [];

  constructor(size: number) {
    this.size = size;
  }

  take(): Buffer {
    return this.idle.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /** Returns a buffer from take(), no longer read or written by anyone. */
  give(buffer: Buffer): void {
    if (buffer.length === this.size && buffer.byteOffset === 0 && buffer.buffer.byteLength === this.size) this.idle.push(buffer);
    else freeNow(buffer);
  }
}
