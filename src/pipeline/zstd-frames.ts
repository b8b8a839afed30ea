/**
 * Compressing many independent buffers (backup blobs, WAL segments) into one zstd frame each,
 * reusing compression contexts. zlib's one-shot zstdCompress creates and frees a context per
 * call, which doubled the CPU per byte against the zstd CLI on 1 MiB blobs; a long-lived
 * stream whose every write ends a frame (ZSTD_e_end) produces the same self-contained frame
 * at CLI speed. Idle contexts are kept in a small pool per level; each is used by one caller
 * at a time.
 */
import { constants, createZstdCompress, createZstdDecompress, type ZstdCompress, type ZstdDecompress } from 'node:zlib';
import { freeNow } from '../util/memory.ts';

const ZSTD_MAGIC = 0xfd2fb528;

/**
 * The length of the zstd frame starting at `offset` (RFC 8878, section 3.1.1), from its header
 * and block headers alone; undefined when the bytes there are not a whole frame. Used to feed a
 * decompressor exactly one frame at a time and to trim the empty frame zlib sometimes appends.
 */
export function zstdFrameLength(data: Buffer, offset = 0): number | undefined {
  if (data.length - offset < 6 || data.readUInt32LE(offset) !== ZSTD_MAGIC) return undefined;
  const descriptor = data[offset + 4]!;
  const contentSizeFlag = descriptor >> 6;
  const singleSegment = (descriptor >> 5) & 1;
  const checksum = (descriptor >> 2) & 1;
  const dictionaryIdBytes = [0, 1, 2, 4][descriptor & 3]!;
  const contentSizeBytes = [singleSegment, 2, 4, 8][contentSizeFlag]!;
  let position = offset + 5 + (singleSegment ? 0 : 1) + dictionaryIdBytes + contentSizeBytes;
  for (;;) {
    if (position + 3 > data.length) return undefined;
    const header = data.readUIntLE(position, 3);
    const last = header & 1;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) return undefined; // reserved
    position += 3 + (type === 1 ? 1 : size); // an RLE block stores its one byte
    if (last) break;
  }
  position += checksum ? 4 : 0;
  return position <= data.length ? position - offset : undefined;
}

/**
 * zlib's output buffer of a decompressor. A compressor's is smaller: each pooled compressor
 * keeps one (up to 8 per level, two levels in a backup), and a compressed blob is rarely over
 * 256 KiB by much.
 */
const OUTPUT_CHUNK = 1 << 20;
const COMPRESS_OUTPUT_CHUNK = 256 * 1024;
/** zlib's output buffer while no caller-provided one is in use (ZstdFrameSequence.decodeParts). */
const IDLE_OUTPUT = 64 * 1024;

class FrameCompressor {
  private readonly stream: ZstdCompress;
  private output: Buffer[] = [];
  private failure: Error | undefined;

  constructor(level: number) {
    this.stream = createZstdCompress({
      chunkSize: COMPRESS_OUTPUT_CHUNK,
      // Every write is a whole frame, compressed with ZSTD_e_end from its first call: zstd then
      // knows the content size (it records it in the frame header) and sizes its window to it,
      // 1 MiB instead of level 3's 2 MiB for a blob, in the compressor and in every decoder.
      // (A write followed by a ZSTD_e_end flush took a second trip through the thread pool.)
      flush: constants.ZSTD_e_end,
      params: { [constants.ZSTD_c_compressionLevel]: level, [constants.ZSTD_c_checksumFlag]: 1 },
    });
    this.stream.on('data', (chunk: Buffer) => this.output.push(chunk));
    this.stream.on('error', (error) => (this.failure = error));
  }

  get broken(): boolean {
    return this.failure !== undefined;
  }

  compress(content: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      // The write callback runs once zlib has consumed the content and emitted the whole frame.
      this.stream.write(content, () => {
        if (this.failure) return reject(this.failure);
        const chunks = this.output;
        this.output = [];
        // Copied into a buffer of its own (the caller may free it when done), in one copy.
        let frame = Buffer.allocUnsafeSlow(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
        let at = 0;
        for (const chunk of chunks) at += chunk.copy(frame, at);
        // When zlib's output buffer fills up exactly at the end of the frame, it calls zstd with
        // ZSTD_e_end once more, which starts and ends a second, empty frame: drop it.
        const length = zstdFrameLength(frame) ?? frame.length;
        if (length < frame.length) {
          const whole = Buffer.allocUnsafeSlow(length);
          frame.copy(whole, 0, 0, length);
          freeNow(frame);
          frame = whole;
        }
        // zlib's output buffers that this frame finished are freed now rather than at a distant
        // full garbage collection: their slices were all copied out, and zlib writes on in a new one.
        const current = (this.stream as unknown as { _outBuffer?: Buffer })._outBuffer?.buffer;
        if (current !== undefined) {
          for (const retired of new Set(chunks.map((chunk) => chunk.buffer))) {
            // (never a small shared allocation pool)
            if (retired !== current && retired.byteLength >= COMPRESS_OUTPUT_CHUNK) freeNow(Buffer.from(retired));
          }
        }
        resolve(frame);
      });
    });
  }

  close(): void {
    this.stream.destroy();
  }
}

const MAX_IDLE_PER_LEVEL = 8;
const idle = new Map<number, FrameCompressor[]>();

export async function zstdFrame(content: Buffer, level: number): Promise<Buffer> {
  const pool = idle.get(level) ?? [];
  idle.set(level, pool);
  const compressor = pool.pop() ?? new FrameCompressor(level);
  try {
    return await compressor.compress(content);
  } finally {
    if (!compressor.broken && pool.length < MAX_IDLE_PER_LEVEL) pool.push(compressor);
    else compressor.close();
  }
}

/**
 * Decompresses a sequence of zstd blobs (those of one ranged GET, in order) with one
 * decompression context, returning each blob's content separately. zlib's one-shot
 * zstdDecompress makes a context per call and copies its output once more; here a 1 MiB blob
 * comes out as one buffer. Frame boundaries are read from the frame headers, so a blob cut
 * short is refused before it reaches the decompressor; damage inside a frame fails its
 * content checksum.
 */
export class ZstdFrameSequence {
  private readonly stream: ZstdDecompress;
  private output: Buffer[] = [];
  private failure: Error | undefined;

  constructor(chunkSize = OUTPUT_CHUNK) {
    this.stream = createZstdDecompress({ chunkSize });
    this.stream.on('data', (chunk: Buffer) => this.output.push(chunk));
    this.stream.on('error', (error) => {
      this.failure ??= error;
      // zlib does not call back the write it failed on.
      this.pending?.(error);
    });
  }

  private pending: ((error: Error) => void) | undefined;

  /**
   * The content of one blob. A blob is normally one frame; older writers sometimes appended an
   * empty frame, and zlib ends the stream when a write holds more than one frame, so each
   * frame is written on its own.
   */
  async decode(blob: Buffer): Promise<Buffer> {
    const parts = await this.decodeParts(blob);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /**
   * The content as zlib handed it out, in consecutive pieces: a frame that starts in the middle
   * of zlib's output buffer comes out in two. Joining them would copy every such blob once more
   * (a second of CPU and most of the garbage in a restore of an incremental).
   *
   * With `output`, the content is decoded into it: the first part is a view of `output` (from
   * its start), and only content that does not fit comes in further parts of zlib's own. A
   * restore decodes every blob into a buffer it reuses (restore-files.ts): a fresh 1 MiB zlib
   * buffer per blob churned malloc's heap, which kept tens of MiB it could not give back.
   * (Node has no public way to choose the output buffer of a zlib stream: this sets the
   * stream's fields for it, `_outBuffer`, `_outOffset` and `_chunkSize`, unchanged since
   * Node 0.10; where they are missing, zlib's own buffers are used, as without `output`.)
   *
   * The parts stay valid as long as the caller holds them, also across later decodes: restore
   * keeps decoded blobs until the last window that needs them is assembled (restore-files.ts)
   * and frees them itself. Never free earlier output here.
   */
  async decodeParts(blob: Buffer, output?: Buffer): Promise<Buffer[]> {
    const parts: Buffer[] = [];
    const redirected = output !== undefined && this.redirectOutput(output);
    try {
      let offset = 0;
      do {
        const length = zstdFrameLength(blob, offset);
        if (length === undefined) throw new Error(`not a whole zstd frame at byte ${offset} of ${blob.length}`);
        for (const part of await this.decodeFrame(blob.subarray(offset, offset + length))) if (part.length > 0) parts.push(part);
        offset += length;
      } while (offset < blob.length);
    } finally {
      // zlib must never write into the caller's buffer once this returns.
      if (redirected) this.redirectOutput(this.idleOutput());
    }
    return parts;
  }

  private spare: Buffer | undefined;

  /** A small buffer of our own that zlib points at between caller-provided outputs. */
  private idleOutput(): Buffer {
    return (this.spare ??= Buffer.allocUnsafeSlow(IDLE_OUTPUT));
  }

  /** Makes zlib write its next output at the start of `buffer`; false where Node lacks the fields. */
  private redirectOutput(buffer: Buffer): boolean {
    const fields = this.stream as unknown as { _outBuffer?: unknown; _outOffset?: unknown; _chunkSize?: unknown };
    if (!Buffer.isBuffer(fields._outBuffer) || typeof fields._outOffset !== 'number' || typeof fields._chunkSize !== 'number') return false;
    fields._outBuffer = buffer;
    fields._outOffset = 0;
    fields._chunkSize = buffer.length;
    return true;
  }

  private decodeFrame(frame: Buffer): Promise<Buffer[]> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.pending = reject;
      // The write callback runs once zlib has consumed the frame and emitted all its output.
      this.stream.write(frame, () => {
        this.pending = undefined;
        if (this.failure) return reject(this.failure);
        const parts = this.output;
        this.output = [];
        resolve(parts);
      });
    });
  }

  /** Ends the sequence; fails if the last frame was incomplete. */
  finish(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.stream.once('end', () => (this.output.length > 0 ? reject(new Error('zstd output after the last frame')) : resolve()));
      this.stream.once('error', reject);
      this.stream.end();
    });
  }

  close(): void {
    this.stream.destroy();
  }
}
