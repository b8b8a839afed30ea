/**
 * Writing large, aligned pieces of restored files with O_DIRECT (Linux), past the page cache.
 *
 * Why: a restore writes gigabytes once and PostgreSQL reads them later at its own pace. Through
 * the page cache every byte is copied into kernel pages that must be allocated, dirtied and
 * written back; on the 2-vCPU VM of the benchmarks that cost 2.5–3 s of system CPU per 1.6 GB,
 * more than decompressing it, while O_DIRECT wrote 1 GiB in 0.7 s with 0.1 s of CPU. It also
 * leaves the host's page cache to the database instead of flooding it.
 *
 * O_DIRECT needs the memory address, the file offset and the length aligned to the device's
 * logical block size. Node buffers come from malloc (16-byte aligned), but a WebAssembly.Memory
 * is mapped page-aligned, so its pages serve as the aligned buffers; data is copied into one
 * before each write. Only pieces whose offset and length are multiples of DIRECT_IO_ALIGNMENT
 * and at least DIRECT_IO_MIN_BYTES go this way (smaller ones would each wait for the device);
 * the rest are ordinary writes. Mixing both on one file is coherent in Linux as long as ranges do
 * not overlap, which they never do in a restore. Where the filesystem refuses O_DIRECT (tmpfs
 * before Linux 6.6, some FUSE and network filesystems answer EINVAL), the first refusal turns
 * it off for the rest of the run and everything is written the ordinary way.
 */
import { constants, openSync, write } from 'node:fs';
import { promisify } from 'node:util';
import { log } from './log.ts';
import { Semaphore } from './concurrency.ts';

/** 4 KiB covers every common device (512e and 4Kn disks, NVMe, virtio). */
export const DIRECT_IO_ALIGNMENT = 4096;
/** Below this, a write into the page cache is cheaper than waiting for the device. */
export const DIRECT_IO_MIN_BYTES = 128 * 1024;

const WASM_PAGE = 64 * 1024;
// The project's TypeScript lib has no WebAssembly declarations: the one constructor used here.
const { WebAssembly: wasm } = globalThis as unknown as {
  WebAssembly: { Memory: new (descriptor: { initial: number; maximum: number }) => { readonly buffer: ArrayBuffer } };
};
const writeAsync = promisify(write);

/** undefined where the platform has no O_DIRECT (macOS, Windows). */
const O_DIRECT: number | undefined = (constants as { O_DIRECT?: number }).O_DIRECT;

export function isAlignedForDirectIo(position: number, length: number): boolean {
  return position % DIRECT_IO_ALIGNMENT === 0 && length % DIRECT_IO_ALIGNMENT === 0 && length >= DIRECT_IO_MIN_BYTES;
}

/**
 * A fixed set of page-aligned buffers and the switch that turns O_DIRECT off after the first
 * refusal. One per restore, shared by all files being written.
 */
export class DirectWriter {
  private readonly free: Buffer[] = [];
  private readonly slots: Semaphore;
  private disabledBecause: string | undefined;
  /** Bytes written past the page cache so far (reported by restore). */
  bytesWritten = 0;

  /** `count` buffers of `size` bytes (rounded up to whole WebAssembly pages). */
  constructor(count: number, size: number) {
    const slotSize = Math.ceil(size / WASM_PAGE) * WASM_PAGE;
    const pages = (slotSize / WASM_PAGE) * count;
    // initial = maximum: the memory never grows, so its ArrayBuffer is never detached while
    // a write in the thread pool still reads from it.
    const memory = new wasm.Memory({ initial: pages, maximum: pages });
    for (let i = 0; i < count; i++) this.free.push(Buffer.from(memory.buffer, i * slotSize, slotSize));
    this.slots = new Semaphore(count);
    if (O_DIRECT === undefined) this.disabledBecause = 'this platform has no O_DIRECT';
  }

  get enabled(): boolean {
    return this.disabledBecause === undefined;
  }

  /** Opens an existing file for direct writes; undefined (and direct I/O off) if refused. */
  open(path: string): number | undefined {
    if (!this.enabled) return undefined;
    try {
      return openSync(path, constants.O_WRONLY | constants.O_NOFOLLOW | O_DIRECT!);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
      this.disable(`the filesystem of ${path} refuses O_DIRECT`);
      return undefined;
    }
  }

  /**
   * Writes `data` at `position` through `fd` (opened by open()), copying it through the aligned
   * buffers. Returns the bytes written; fewer than data.length only when direct I/O was refused
   * part-way, and then the caller writes the rest the ordinary way.
   */
  async write(fd: number, data: Buffer, position: number): Promise<number> {
    let done = 0;
    while (done < data.length && this.enabled) {
      const release = await this.slots.acquire();
      const buffer = this.free.pop()!;
      try {
        const length = Math.min(buffer.length, data.length - done);
        data.copy(buffer, 0, done, done + length);
        let written = 0;
        while (written < length) {
          const n = (await writeAsync(fd, buffer, written, length - written, position + done + written)).bytesWritten;
          written += n;
          // A short direct write leaves an unaligned rest: let the caller finish it.
          if (written < length && written % DIRECT_IO_ALIGNMENT !== 0) {
            this.bytesWritten += written;
            return done + written;
          }
        }
        done += length;
        this.bytesWritten += length;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
        this.disable(`a direct write was refused (${(error as Error).message})`);
      } finally {
        this.free.push(buffer);
        release();
      }
    }
    return done;
  }

  private disable(reason: string): void {
    if (this.disabledBecause !== undefined) return;
    this.disabledBecause = reason;
    log.info('writing restored files through the page cache', { reason });
  }
}
