/** Base of storage wrappers: every call goes to the wrapped storage unless overridden. */
import type { Readable } from 'node:stream';
import type { ByteRange, ObjectInfo, PutOptions, Storage } from './types.ts';

export class DelegatingStorage implements Storage {
  readonly description: string;
  protected readonly inner: Storage;

  constructor(inner: Storage) {
    this.inner = inner;
    this.description = inner.description;
  }

  put(key: string, body: Readable | Buffer, options: PutOptions): Promise<{ size: number }> {
    return this.inner.put(key, body, options);
  }

  get(key: string, range?: ByteRange): Promise<Readable> {
    return this.inner.get(key, range);
  }

  head(key: string): Promise<ObjectInfo | undefined> {
    return this.inner.head(key);
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }

  delete(keys: readonly string[]): Promise<void> {
    return this.inner.delete(keys);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  async abortStaleUploads(olderThan: Date): Promise<number> {
    return (await this.inner.abortStaleUploads?.(olderThan)) ?? 0;
  }

  async staleTempFiles(olderThan: Date): Promise<ObjectInfo[]> {
    return (await this.inner.staleTempFiles?.(olderThan)) ?? [];
  }

  async removeTempFiles(keys: readonly string[]): Promise<void> {
    await this.inner.removeTempFiles?.(keys);
  }
}
