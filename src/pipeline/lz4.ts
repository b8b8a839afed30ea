/**
 * LZ4 compression stage, in the standard LZ4 *frame* format (the one the `lz4` command line
 * tool reads and writes), so `lz4 -d` restores what we wrote and we restore what it wrote.
 *
 * The block codec is lz4-napi (the Rust lz4_flex crate behind N-API, with prebuilt binaries
 * shipped as npm packages); it only codes single blocks, so the frame format around them is
 * ours. Blocks are compressed on libuv's thread pool, a few at a time and written in order: that
 * keeps the event loop free and uses more than one core. They are decompressed on the main thread
 * (lz4 decodes at GB/s): lz4-napi brings its own allocator (mimalloc), whose per-thread heaps in
 * the thread pool kept ~100 MiB of freed block outputs during a restore (257 against 130 MiB peak
 * RSS for a chain with an lz4 full backup, same CPU). Memory stays bounded whatever the
 * input size: a few blocks in flight, and output waits for the reader (backpressure).
 *
 * We write one frame: a 7-byte header (independent 256 KiB blocks, block checksums), the blocks
 * (a block that does not shrink is stored uncompressed), each followed by the xxHash32 of its
 * stored bytes, and the end mark. Block checksums rather than `lz4`'s default content
 * checksum: they catch damage to the stored bytes just as well (stock `lz4 -d` checks them
 * too), a damaged block fails before any of its output is passed on, and they hash the
 * compressed bytes — a third of the content on PostgreSQL data — on the event loop, where a
 * content checksum in JavaScript costs about a third of the stage's throughput. Content
 * integrity end to end is the SHA-256 the repository records anyway.
 *
 * We read any valid frame stream: concatenated frames, skippable frames, linked or
 * independent blocks (the `lz4` CLI writes independent ones unless given -BD), every block
 * size, block checksums, content checksums and content sizes, uncompressed blocks, and
 * input split anywhere. Dictionary frames (an external dictionary ID) and the legacy format
 * (`lz4 -l`) are refused. Anything malformed or failing a checksum errors the stream with
 * PgarkError('INTEGRITY').
 *
 * Format: https://github.com/lz4/lz4/blob/dev/doc/lz4_Frame_format.md
 */
import { availableParallelism } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';
import {
  compress as compressBlockAsync,
  uncompressSync as decompressBlockSync,
} from 'lz4-napi';
import { PgarkError } from '../errors.ts';

const FRAME_MAGIC = 0x184d2204;
const SKIPPABLE_MAGIC_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;
const LEGACY_MAGIC = 0x184c2102;

const FLG_VERSION_MASK = 0xc0;
const FLG_VERSION_01 = 0x40;
const FLG_BLOCK_INDEPENDENCE = 0x20;
const FLG_BLOCK_CHECKSUM = 0x10;
const FLG_CONTENT_SIZE = 0x08;
const FLG_CONTENT_CHECKSUM = 0x04;
const FLG_RESERVED = 0x02;
const FLG_DICT_ID = 0x01;
const BD_RESERVED = 0x8f;

const UNCOMPRESSED_BLOCK = 0x80000000;
/** How far back a match in a linked block may reach. */
const WINDOW = 64 * 1024;

/** Block maximum sizes by their BD code (4..7). */
const BLOCK_SIZE_BY_CODE: ReadonlyMap<number, number> = new Map([
  [4, 64 * 1024],
  [5, 256 * 1024],
  [6, 1024 * 1024],
  [7, 4 * 1024 * 1024],
]);

const DEFAULT_BLOCK_SIZE = 256 * 1024;

export type Lz4BlockSize = 65536 | 262144 | 1048576 | 4194304;

export interface Lz4CompressOptions {
  /** Maximum uncompressed size of a block; default 256 KiB (see the header comment). */
  blockSize?: Lz4BlockSize;
  /** Follow each block with the xxHash32 of its stored bytes; default true. */
  blockChecksum?: boolean;
  /** Write the xxHash32 of the content after the last block (`lz4`'s default); default false. */
  contentChecksum?: boolean;
  /**
   * Blocks compressed on the thread pool while the oldest one is written out; default 2 to 4
   * by core count. Memory use is about (concurrency + 2) x blockSize x 2.
   */
  concurrency?: number;
}

export interface Lz4DecompressOptions {
  /** Independent blocks decoded on the thread pool while the oldest one is written out; default 2 to 4. */
  concurrency?: number;
}

export function createLz4CompressStream(options: Lz4CompressOptions = {}): Transform {
  return new Lz4CompressStream(options);
}

export function createLz4DecompressStream(options: Lz4DecompressOptions = {}): Transform {
  return new Lz4DecompressStream(options);
}

function defaultConcurrency(): number {
  return Math.min(4, Math.max(2, availableParallelism()));
}

function checkConcurrency(value: number | undefined): number {
  const concurrency = value ?? defaultConcurrency();
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new PgarkError('INTERNAL', `LZ4 concurrency must be a positive integer, got ${concurrency}`);
  }
  return concurrency;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function uint32le(value: number): Buffer {
  const buffer = Buffer.allocUnsafe(4);
  buffer.writeUInt32LE(value >>> 0, 0);
  return buffer;
}

/**
 * A Transform whose pushes wait for the reader: push() returning false parks the producer
 * until the readable side asks for more, so one large input chunk (LZ4 expands up to ~255x)
 * cannot pile up unbounded output.
 */
abstract class BackpressuredTransform extends Transform {
  #readWaiter: (() => void) | undefined;

  protected async out(chunk: Buffer): Promise<void> {
    if (chunk.length === 0 || this.push(chunk)) return;
    if (this.destroyed) return;
    await new Promise<void>((resolve) => {
      this.#readWaiter = resolve;
    });
  }

  override _read(size: number): void {
    const waiter = this.#readWaiter;
    this.#readWaiter = undefined;
    waiter?.();
    super._read(size);
  }
}

interface CompressJob {
  raw: Buffer;
  /** The compressed block with a 4-byte prefix (lz4-napi's size header). */
  result: Promise<Buffer>;
}

class Lz4CompressStream extends BackpressuredTransform {
  readonly #blockSize: number;
  readonly #checksum: Xxh32 | undefined;
  readonly #blockChecksum: boolean;
  readonly #concurrency: number;
  readonly #header: Buffer;
  #pending: Buffer | undefined;
  #pendingLength = 0;
  readonly #inFlight: CompressJob[] = [];
  #headerWritten = false;

  constructor(options: Lz4CompressOptions) {
    super();
    const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    let code: number | undefined;
    for (const [c, size] of BLOCK_SIZE_BY_CODE) if (size === blockSize) code = c;
    if (code === undefined) throw new PgarkError('INTERNAL', `unsupported LZ4 block size ${blockSize}`);
    this.#blockSize = blockSize;
    this.#checksum = options.contentChecksum ? new Xxh32() : undefined;
    this.#blockChecksum = options.blockChecksum ?? true;
    this.#concurrency = checkConcurrency(options.concurrency);
    this.#header = frameHeader(code, this.#blockChecksum, this.#checksum !== undefined);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#consume(chunk).then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    this.#finish().then(() => callback(), callback);
  }

  async #consume(chunk: Buffer): Promise<void> {
    await this.#writeHeader();
    let offset = 0;
    while (offset < chunk.length) {
      this.#pending ??= Buffer.allocUnsafeSlow(this.#blockSize);
      const n = Math.min(chunk.length - offset, this.#blockSize - this.#pendingLength);
      chunk.copy(this.#pending, this.#pendingLength, offset, offset + n);
      this.#pendingLength += n;
      offset += n;
      if (this.#pendingLength === this.#blockSize) {
        this.#submit();
        while (this.#inFlight.length > this.#concurrency) await this.#writeOldest();
      }
    }
  }

  async #finish(): Promise<void> {
    await this.#writeHeader();
    if (this.#pendingLength > 0) this.#submit();
    while (this.#inFlight.length > 0) await this.#writeOldest();
    const end = Buffer.alloc(this.#checksum ? 8 : 4); // end mark: a zero block size
    if (this.#checksum) end.writeUInt32LE(this.#checksum.digest(), 4);
    await this.out(end);
  }

  async #writeHeader(): Promise<void> {
    if (this.#headerWritten) return;
    this.#headerWritten = true;
    await this.out(this.#header);
  }

  #submit(): void {
    const raw = this.#pending!.subarray(0, this.#pendingLength);
    this.#pending = undefined;
    this.#pendingLength = 0;
    this.#checksum?.update(raw);
    const result = compressBlockAsync(raw);
    result.catch(() => {}); // awaited in order later; don't let it count as unhandled meanwhile
    this.#inFlight.push({ raw, result });
  }

  async #writeOldest(): Promise<void> {
    const job = this.#inFlight.shift()!;
    let block: Buffer;
    try {
      block = await job.result;
    } catch (error) {
      throw new PgarkError('INTERNAL', `LZ4 compression failed: ${errorMessage(error)}`, { cause: error });
    }
    const compressedLength = block.length - 4;
    let stored: Buffer;
    if (compressedLength < job.raw.length) {
      // lz4-napi prefixes the block with its uncompressed size; put the frame's block size there.
      block.writeUInt32LE(compressedLength, 0);
      stored = block.subarray(4);
      await this.out(block);
    } else {
      stored = job.raw;
      await this.out(uint32le((job.raw.length | UNCOMPRESSED_BLOCK) >>> 0));
      await this.out(job.raw);
    }
    if (this.#blockChecksum) await this.out(uint32le(xxh32(stored)));
  }
}

function frameHeader(blockSizeCode: number, blockChecksum: boolean, contentChecksum: boolean): Buffer {
  const header = Buffer.alloc(7);
  header.writeUInt32LE(FRAME_MAGIC, 0);
  header[4] =
    FLG_VERSION_01 |
    FLG_BLOCK_INDEPENDENCE |
    (blockChecksum ? FLG_BLOCK_CHECKSUM : 0) |
    (contentChecksum ? FLG_CONTENT_CHECKSUM : 0);
  header[5] = blockSizeCode << 4;
  header[6] = (xxh32(header.subarray(4, 6)) >>> 8) & 0xff;
  return header;
}

interface FrameState {
  index: number;
  independent: boolean;
  blockChecksum: boolean;
  contentSize: bigint | undefined;
  checksum: Xxh32 | undefined;
  blockMaxSize: number;
  blockIndex: number;
  produced: number;
  /** Linked blocks: the last WINDOW bytes of output, which the next block may refer to. */
  history: Buffer;
}

type DecodeState =
  | { kind: 'magic' }
  | { kind: 'skippable-size' }
  | { kind: 'skip'; remaining: number }
  | { kind: 'descriptor' }
  | { kind: 'block-header'; frame: FrameState }
  | { kind: 'block-data'; frame: FrameState; length: number; compressed: boolean }
  | { kind: 'content-checksum'; frame: FrameState };

class Lz4DecompressStream extends BackpressuredTransform {
  readonly #concurrency: number;
  /** Unconsumed input: chunks[0] from offset #head on, then the rest whole. */
  readonly #chunks: Buffer[] = [];
  #head = 0;
  #buffered = 0;
  #state: DecodeState = { kind: 'magic' };
  #frames = 0;
  /** Decoded blocks not yet written, in order; each also feeds its frame's checksum. */
  readonly #inFlight: { frame: FrameState; block: number; result: Promise<Buffer> }[] = [];

  constructor(options: Lz4DecompressOptions) {
    super();
    this.#concurrency = checkConcurrency(options.concurrency);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    this.#run().then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    this.#end().then(() => callback(), callback);
  }

  async #end(): Promise<void> {
    await this.#drain();
    if (this.#state.kind !== 'magic' || this.#buffered > 0) {
      throw corrupt(`LZ4 stream is truncated (${this.#describeState()})`);
    }
    if (this.#frames === 0) throw corrupt('LZ4 stream is empty: no frame found');
  }

  #describeState(): string {
    const state = this.#state;
    switch (state.kind) {
      case 'magic':
        return `${this.#buffered} stray bytes after frame ${this.#frames}`;
      case 'skippable-size':
      case 'skip':
        return `inside skippable frame ${this.#frames + 1}`;
      case 'descriptor':
        return `inside the header of frame ${this.#frames + 1}`;
      case 'block-header':
      case 'block-data':
        return `at block ${state.frame.blockIndex} of frame ${state.frame.index}`;
      case 'content-checksum':
        return `before the content checksum of frame ${state.frame.index}`;
    }
  }

  /** Parses as far as the buffered input allows. */
  async #run(): Promise<void> {
    for (;;) {
      const state = this.#state;
      switch (state.kind) {
        case 'magic': {
          if (this.#buffered < 4) return;
          const magic = this.#take(4).readUInt32LE(0);
          if (magic === FRAME_MAGIC) {
            this.#state = { kind: 'descriptor' };
          } else if ((magic & SKIPPABLE_MAGIC_MASK) >>> 0 === SKIPPABLE_MAGIC) {
            this.#state = { kind: 'skippable-size' };
          } else if (magic === LEGACY_MAGIC) {
            throw corrupt(`frame ${this.#frames + 1} is in the legacy LZ4 format (lz4 -l), which pgark does not read`);
          } else {
            throw corrupt(
              `not LZ4 frame data: bad magic number 0x${magic.toString(16).padStart(8, '0')} at frame ${this.#frames + 1}`,
            );
          }
          break;
        }
        case 'skippable-size': {
          if (this.#buffered < 4) return;
          this.#state = { kind: 'skip', remaining: this.#take(4).readUInt32LE(0) };
          break;
        }
        case 'skip': {
          state.remaining -= this.#discard(state.remaining);
          if (state.remaining > 0) return;
          this.#frames++;
          this.#state = { kind: 'magic' };
          break;
        }
        case 'descriptor': {
          if (this.#buffered < 2) return;
          const flags = this.#peekByte(0);
          const length = 3 + (flags & FLG_CONTENT_SIZE ? 8 : 0) + (flags & FLG_DICT_ID ? 4 : 0);
          if (this.#buffered < length) return;
          const frame = this.#parseDescriptor(this.#take(length));
          this.#state = { kind: 'block-header', frame };
          break;
        }
        case 'block-header': {
          if (this.#buffered < 4) return;
          const word = this.#take(4).readUInt32LE(0);
          const frame = state.frame;
          if (word === 0) {
            this.#state = frame.checksum ? { kind: 'content-checksum', frame } : { kind: 'magic' };
            if (!frame.checksum) await this.#endFrame(frame, undefined);
            break;
          }
          const length = word & ~UNCOMPRESSED_BLOCK;
          if (length > frame.blockMaxSize) {
            throw corrupt(
              `LZ4 block ${frame.blockIndex + 1} of frame ${frame.index} claims ${length} bytes, over the frame's block size ${frame.blockMaxSize}`,
            );
          }
          this.#state = { kind: 'block-data', frame, length, compressed: (word & UNCOMPRESSED_BLOCK) === 0 };
          break;
        }
        case 'block-data': {
          const { frame, length, compressed } = state;
          const total = length + (frame.blockChecksum ? 4 : 0);
          if (this.#buffered < total) return;
          // A compressed block gets 4 bytes of room in front for lz4-napi's size header.
          const headroom = compressed ? 4 : 0;
          const data = this.#take(length, headroom);
          frame.blockIndex++;
          if (frame.blockChecksum) {
            const expected = this.#take(4).readUInt32LE(0);
            if (xxh32(data.subarray(headroom)) !== expected) {
              throw corrupt(`LZ4 block ${frame.blockIndex} of frame ${frame.index} fails its checksum`);
            }
          }
          this.#state = { kind: 'block-header', frame };
          await this.#decodeBlock(frame, data, compressed);
          break;
        }
        case 'content-checksum': {
          if (this.#buffered < 4) return;
          const expected = this.#take(4).readUInt32LE(0);
          this.#state = { kind: 'magic' };
          await this.#endFrame(state.frame, expected);
          break;
        }
      }
    }
  }

  #parseDescriptor(descriptor: Buffer): FrameState {
    const index = this.#frames + 1;
    const flags = descriptor[0]!;
    const bd = descriptor[1]!;
    const headerChecksum = descriptor[descriptor.length - 1]!;
    if (((xxh32(descriptor.subarray(0, descriptor.length - 1)) >>> 8) & 0xff) !== headerChecksum) {
      throw corrupt(`LZ4 frame ${index} has a corrupt header (header checksum mismatch)`);
    }
    if ((flags & FLG_VERSION_MASK) !== FLG_VERSION_01) {
      throw corrupt(`LZ4 frame ${index} has unsupported version ${(flags & FLG_VERSION_MASK) >> 6}`);
    }
    if (flags & FLG_RESERVED || bd & BD_RESERVED) {
      throw corrupt(`LZ4 frame ${index} has reserved header bits set`);
    }
    if (flags & FLG_DICT_ID) {
      throw corrupt(`LZ4 frame ${index} needs an external dictionary, which pgark does not support`);
    }
    const blockMaxSize = BLOCK_SIZE_BY_CODE.get(bd >> 4);
    if (blockMaxSize === undefined) {
      throw corrupt(`LZ4 frame ${index} has an invalid block size code ${bd >> 4}`);
    }
    return {
      index,
      independent: (flags & FLG_BLOCK_INDEPENDENCE) !== 0,
      blockChecksum: (flags & FLG_BLOCK_CHECKSUM) !== 0,
      contentSize: flags & FLG_CONTENT_SIZE ? descriptor.readBigUInt64LE(2) : undefined,
      checksum: flags & FLG_CONTENT_CHECKSUM ? new Xxh32() : undefined,
      blockMaxSize,
      blockIndex: 0,
      produced: 0,
      history: Buffer.alloc(0),
    };
  }

  async #decodeBlock(frame: FrameState, data: Buffer, compressed: boolean): Promise<void> {
    const block = frame.blockIndex;
    if (!compressed) {
      if (!frame.independent) frame.history = slideWindow(frame.history, data);
      this.#inFlight.push({ frame, block, result: Promise.resolve(data) });
    } else if (frame.independent) {
      // The size header is the most the block may decode to; lz4_flex refuses more.
      data.writeUInt32LE(frame.blockMaxSize, 0);
      const result = syncDecode(data);
      result.catch(() => {}); // awaited in order by #writeOldest
      this.#inFlight.push({ frame, block, result });
    } else {
      // A linked block may copy from the previous 64 KiB of output: decode it after those.
      await this.#drain();
      data.writeUInt32LE(frame.blockMaxSize, 0);
      let output: Buffer;
      try {
        output = decompressBlockSync(data, frame.history);
      } catch (error) {
        throw corruptBlock(frame, block, error);
      }
      frame.history = slideWindow(frame.history, output);
      this.#inFlight.push({ frame, block, result: Promise.resolve(output) });
    }
    while (this.#inFlight.length > this.#concurrency) await this.#writeOldest();
  }

  async #endFrame(frame: FrameState, expectedChecksum: number | undefined): Promise<void> {
    await this.#drain();
    if (frame.contentSize !== undefined && BigInt(frame.produced) !== frame.contentSize) {
      throw corrupt(
        `LZ4 frame ${frame.index} decoded to ${frame.produced} bytes but its header says ${frame.contentSize}`,
      );
    }
    if (frame.checksum && expectedChecksum !== undefined && frame.checksum.digest() !== expectedChecksum) {
      throw corrupt(`LZ4 frame ${frame.index} fails its content checksum`);
    }
    this.#frames++;
  }

  async #drain(): Promise<void> {
    while (this.#inFlight.length > 0) await this.#writeOldest();
  }

  async #writeOldest(): Promise<void> {
    const { frame, block, result } = this.#inFlight.shift()!;
    let output: Buffer;
    try {
      output = await result;
    } catch (error) {
      throw corruptBlock(frame, block, error);
    }
    frame.produced += output.length;
    frame.checksum?.update(output);
    await this.out(output);
  }

  #peekByte(index: number): number {
    let i = this.#head + index;
    for (const chunk of this.#chunks) {
      if (i < chunk.length) return chunk[i]!;
      i -= chunk.length;
    }
    throw new PgarkError('INTERNAL', 'LZ4 reader peeked past its input');
  }

  /** Removes n buffered bytes (n <= #buffered); with headroom, into a fresh buffer after that many spare bytes. */
  #take(n: number, headroom = 0): Buffer {
    const first = this.#chunks[0];
    if (headroom === 0 && first !== undefined && first.length - this.#head >= n) {
      const out = first.subarray(this.#head, this.#head + n);
      this.#advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(headroom + n);
    let written = headroom;
    while (written < out.length) {
      const chunk = this.#chunks[0]!;
      const count = Math.min(chunk.length - this.#head, out.length - written);
      chunk.copy(out, written, this.#head, this.#head + count);
      written += count;
      this.#advance(count);
    }
    return out;
  }

  /** Drops up to n buffered bytes; returns how many. */
  #discard(n: number): number {
    let dropped = 0;
    while (dropped < n && this.#buffered > 0) {
      const chunk = this.#chunks[0]!;
      const count = Math.min(chunk.length - this.#head, n - dropped);
      this.#advance(count);
      dropped += count;
    }
    return dropped;
  }

  #advance(n: number): void {
    this.#head += n;
    this.#buffered -= n;
    if (this.#head === this.#chunks[0]!.length) {
      this.#chunks.shift();
      this.#head = 0;
    }
  }
}

function syncDecode(data: Buffer): Promise<Buffer> {
  try {
    return Promise.resolve(decompressBlockSync(data));
  } catch (error) {
    return Promise.reject(error);
  }
}

/** The last WINDOW bytes of history followed by output. */
function slideWindow(history: Buffer, output: Buffer): Buffer {
  if (output.length >= WINDOW) return Buffer.from(output.subarray(output.length - WINDOW));
  const keep = Math.min(history.length, WINDOW - output.length);
  return Buffer.concat([history.subarray(history.length - keep), output]);
}

function corrupt(message: string): PgarkError {
  return new PgarkError('INTEGRITY', message, { hint: 'the data is damaged, or was not written as LZ4' });
}

function corruptBlock(frame: FrameState, block: number, error: unknown): PgarkError {
  return new PgarkError('INTEGRITY', `LZ4 block ${block} of frame ${frame.index} is corrupt: ${errorMessage(error)}`, {
    cause: error,
  });
}

// --- xxHash32 (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md) ---

const PRIME1 = 0x9e3779b1;
const PRIME2 = 0x85ebca77;
const PRIME3 = 0xc2b2ae3d;
const PRIME4 = 0x27d4eb2f;
const PRIME5 = 0x165667b1;

/** Incremental xxHash32 with seed 0, as LZ4 frames use it. */
export class Xxh32 {
  #v1 = (PRIME1 + PRIME2) | 0;
  #v2 = PRIME2 | 0;
  #v3 = 0;
  #v4 = -PRIME1 | 0;
  /** Total length mod 2^32 (all the algorithm uses) and whether it reached 16. */
  #length = 0;
  #large = false;
  readonly #tail = new Uint8Array(16);
  #tailLength = 0;

  update(data: Uint8Array): this {
    let offset = 0;
    const n = data.length;
    this.#length = (this.#length + n) >>> 0;
    if (this.#tailLength + n < 16) {
      this.#tail.set(data, this.#tailLength);
      this.#tailLength += n;
      return this;
    }
    if (this.#tailLength > 0) {
      offset = 16 - this.#tailLength;
      this.#tail.set(data.subarray(0, offset), this.#tailLength);
      this.#stripes(this.#tail, 0, 16);
      this.#tailLength = 0;
    }
    const end = offset + ((n - offset) & ~15);
    if (end > offset) this.#stripes(data, offset, end);
    this.#tail.set(data.subarray(end), 0);
    this.#tailLength = n - end;
    return this;
  }

  #stripes(data: Uint8Array, start: number, end: number): void {
    this.#large = true;
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    let v1 = this.#v1;
    let v2 = this.#v2;
    let v3 = this.#v3;
    let v4 = this.#v4;
    for (let p = start; p < end; p += 16) {
      v1 = (v1 + Math.imul(view.getUint32(p, true), PRIME2)) | 0;
      v1 = Math.imul((v1 << 13) | (v1 >>> 19), PRIME1);
      v2 = (v2 + Math.imul(view.getUint32(p + 4, true), PRIME2)) | 0;
      v2 = Math.imul((v2 << 13) | (v2 >>> 19), PRIME1);
      v3 = (v3 + Math.imul(view.getUint32(p + 8, true), PRIME2)) | 0;
      v3 = Math.imul((v3 << 13) | (v3 >>> 19), PRIME1);
      v4 = (v4 + Math.imul(view.getUint32(p + 12, true), PRIME2)) | 0;
      v4 = Math.imul((v4 << 13) | (v4 >>> 19), PRIME1);
    }
    this.#v1 = v1;
    this.#v2 = v2;
    this.#v3 = v3;
    this.#v4 = v4;
  }

  /** The hash of everything so far (does not reset). */
  digest(): number {
    let h: number;
    if (this.#large) {
      const v1 = this.#v1;
      const v2 = this.#v2;
      const v3 = this.#v3;
      const v4 = this.#v4;
      h = (((v1 << 1) | (v1 >>> 31)) + ((v2 << 7) | (v2 >>> 25)) + ((v3 << 12) | (v3 >>> 20)) + ((v4 << 18) | (v4 >>> 14))) | 0;
    } else {
      h = PRIME5;
    }
    h = (h + this.#length) | 0;
    const tail = this.#tail;
    let p = 0;
    for (; p + 4 <= this.#tailLength; p += 4) {
      const word = tail[p]! | (tail[p + 1]! << 8) | (tail[p + 2]! << 16) | (tail[p + 3]! << 24);
      h = (h + Math.imul(word, PRIME3)) | 0;
      h = Math.imul((h << 17) | (h >>> 15), PRIME4);
    }
    for (; p < this.#tailLength; p++) {
      h = (h + Math.imul(tail[p]!, PRIME5)) | 0;
      h = Math.imul((h << 11) | (h >>> 21), PRIME1);
    }
    h ^= h >>> 15;
    h = Math.imul(h, PRIME2);
    h ^= h >>> 13;
    h = Math.imul(h, PRIME3);
    h ^= h >>> 16;
    return h >>> 0;
  }
}

/** xxHash32 of data, seed 0. */
export function xxh32(data: Uint8Array): number {
  return new Xxh32().update(data).digest();
}
