/**
 * Compressing many independent buffers (backup blobs, WAL segments) into one zstd frame each,
 * reusing compression contexts. zlib's one-shot zstdCompress creates and frees a context per
 * call, which doubled the CPU per byte against the zstd CLI on 1 MiB blobs; a long-lived
 * stream ended with a ZSTD_e_end flush produces the same self-contained frame at CLI speed.
 * Idle contexts are kept in a small pool per level; each is used by one caller at a time.
 */
import { constants, createZstdCompress, createZstdDecompress, type ZstdCompress, type ZstdDecompress } from 'node:zlib';

class FrameCompressor {
  private readonly stream: ZstdCompress;
  private output: Buffer[] = [];
  private failure: Error | undefined;

  constructor(level: number) {
    this.stream = createZstdCompress({
      chunkSize: 1 << 20,
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
      this.stream.write(content);
      this.stream.flush(constants.ZSTD_e_end, () => {
        if (this.failure) return reject(this.failure);
        const frame = this.output.length === 1 ? this.output[0]! : Buffer.concat(this.output);
        this.output = [];
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
 * Decompresses a sequence of zstd frames (the blobs of one ranged GET, in order) with one
 * decompression context, returning each frame's content separately. zlib's one-shot
 * zstdDecompress makes a context per call and copies its output once more; here a 1 MiB blob
 * comes out as one buffer. Each `decode` must be given exactly one whole frame: a frame cut
 * short either fails its content checksum when the next one is read into it, or fails `finish`.
 */
export class ZstdFrameSequence {
  private readonly stream: ZstdDecompress;
  private output: Buffer[] = [];
  private failure: Error | undefined;

  constructor(chunkSize = 1 << 20) {
    this.stream = createZstdDecompress({ chunkSize });
    this.stream.on('data', (chunk: Buffer) => this.output.push(chunk));
    this.stream.on('error', (error) => {
      this.failure ??= error;
      // zlib does not call back the write it failed on.
      this.pending?.(error);
    });
  }

  private pending: ((error: Error) => void) | undefined;

  decode(frame: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.pending = reject;
      // The write callback runs once zlib has consumed the frame and emitted all its output.
      this.stream.write(frame, () => {
        this.pending = undefined;
        if (this.failure) return reject(this.failure);
        const content = this.output.length === 1 ? this.output[0]! : Buffer.concat(this.output);
        this.output = [];
        resolve(content);
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
