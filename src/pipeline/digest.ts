/** A pass-through stage that hashes (SHA-256) and counts what flows through it. */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

export class DigestStage extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;
  private result: string | undefined;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  /** Hex SHA-256 of everything that passed; valid once the stream has ended. */
  digest(): string {
    this.result ??= this.hash.digest('hex');
    return this.result;
  }
}

/** Counts bytes and reports each chunk to a callback (progress bars). */
export class CountStage extends Transform {
  bytes = 0;
  private readonly onChunk: ((bytes: number) => void) | undefined;

  constructor(onChunk?: (bytes: number) => void) {
    super();
    this.onChunk = onChunk;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.onChunk?.(chunk.length);
    callback(null, chunk);
  }
}
