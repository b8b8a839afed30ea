/**
 * A bandwidth limit (bytes per second) shared by every transfer of the process, uploads and
 * downloads alike, as a wrapper around any driver.
 */
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { DelegatingStorage } from './delegating.ts';
import type { ByteRange, PutOptions, Storage } from './types.ts';

/** Token bucket with a one-second burst. */
export class TokenBucket {
  private readonly rate: number;
  private tokens: number;
  private last = performance.now();

  constructor(bytesPerSecond: number) {
    this.rate = bytesPerSecond;
    this.tokens = bytesPerSecond;
  }

  /** Waits until `bytes` may pass. Large requests go into debt, so any size passes eventually. */
  async take(bytes: number): Promise<void> {
    const now = performance.now();
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    this.tokens -= bytes;
    if (this.tokens < 0) await sleep((-this.tokens / this.rate) * 1000);
  }
}

export function throttleStream(bucket: TokenBucket): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      bucket.take(chunk.length).then(() => callback(null, chunk), callback);
    },
  });
}

export class ThrottledStorage extends DelegatingStorage {
  private readonly bucket: TokenBucket;

  constructor(inner: Storage, bytesPerSecond: number) {
    super(inner);
    this.bucket = new TokenBucket(bytesPerSecond);
  }

  override async put(key: string, body: Readable | Buffer, options: PutOptions): Promise<{ size: number }> {
    if (Buffer.isBuffer(body)) {
      await this.bucket.take(body.length);
      return this.inner.put(key, body, options);
    }
    return this.inner.put(key, body.pipe(throttleStream(this.bucket)), options);
  }

  override async get(key: string, range?: ByteRange): Promise<Readable> {
    const body = await this.inner.get(key, range);
    const throttled = throttleStream(this.bucket);
    body.on('error', (error) => throttled.destroy(error));
    return body.pipe(throttled);
  }
}
