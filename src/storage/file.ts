/**
 * A repository in a local (or mounted) directory. A put writes a temporary file in the target
 * directory, fsyncs it, renames it into place and fsyncs the directory, so a reader (or a
 * crash) never sees a partial object under the final name. A writer killed before the rename
 * leaves its temporary file: `pgark expire` removes those last written over a day ago
 * (staleTempFiles, removeTempFiles), as it aborts stale S3 multipart uploads.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { PgarkError } from '../errors.ts';
import type { ByteRange, ObjectInfo, PutOptions, Storage } from './types.ts';

/** Temporary files carry this marker; list() hides them and they are never a valid key. */
const TEMP_MARKER = '.pgark-tmp-';

function errnoOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

export class FileStorage implements Storage {
  readonly description: string;
  private readonly root: string;

  constructor(root: string) {
    this.root = root;
    this.description = `file://${root}`;
  }

  private pathOf(key: string): string {
    if (key === '' || key.startsWith('/') || key.split('/').some((p) => p === '..' || p === '.' || p === '') || key.includes(TEMP_MARKER)) {
      throw new PgarkError('INTERNAL', `invalid object key "${key}"`);
    }
    return join(this.root, key);
  }

  private wrap(error: unknown, action: string, key: string): PgarkError {
    const code = errnoOf(error);
    if (code === 'ENOENT') return new PgarkError('NOT_FOUND', `${key} not found in ${this.description}`);
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      return new PgarkError('AUTH', `permission denied to ${action} ${key} in ${this.description}`, {
        hint: 'check the owner and mode of the repository directory (the user running pgark must be able to write it)',
        cause: error,
      });
    }
    if (code === 'ENOSPC') return new PgarkError('STORAGE', `no space left on the device of ${this.description}`, { cause: error });
    return new PgarkError('STORAGE', `cannot ${action} ${key} in ${this.description}: ${(error as Error).message}`, { cause: error });
  }

  async put(key: string, body: Readable | Buffer, options: PutOptions): Promise<{ size: number }> {
    const finalPath = this.pathOf(key);
    const directory = dirname(finalPath);
    const tempPath = join(directory, `${TEMP_MARKER}${randomBytes(8).toString('hex')}`);
    try {
      await mkdir(directory, { recursive: true });
      const handle = await open(tempPath, 'wx', 0o640);
      let size = 0;
      try {
        const source = Buffer.isBuffer(body) ? [body] : body;
        for await (const chunk of source) {
          options.signal?.throwIfAborted();
          await handle.write(chunk as Buffer);
          size += (chunk as Buffer).length;
        }
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(tempPath, finalPath);
      await syncDirectory(directory);
      return { size };
    } catch (error) {
      await rm(tempPath, { force: true }).catch(() => {});
      if (error instanceof PgarkError) throw error;
      if ((error as Error).name === 'AbortError') throw error;
      throw this.wrap(error, 'write', key);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const path = this.pathOf(key);
    // Open first so that a missing object is reported now, not as a stream error later.
    let handle;
    try {
      handle = await open(path, 'r');
    } catch (error) {
      throw this.wrap(error, 'read', key);
    }
    if (range) {
      const { size } = await handle.stat();
      if (range.start > size || (range.end !== undefined && range.end < range.start)) {
        await handle.close();
        throw new PgarkError('STORAGE', `invalid range ${range.start}-${range.end ?? ''} of ${key} (${size} bytes)`);
      }
    }
    return createReadStream('', { fd: handle, start: range?.start, end: range?.end, highWaterMark: 1 << 20 });
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const info = await stat(this.pathOf(key));
      if (!info.isFile()) return undefined;
      return { key, size: info.size, lastModified: info.mtime };
    } catch (error) {
      if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR') return undefined;
      throw this.wrap(error, 'stat', key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // The prefix may end inside a name ("wal/00000001000000"): walk the directory part and
    // filter by the full prefix.
    const slash = prefix.lastIndexOf('/');
    const directoryKey = slash >= 0 ? prefix.slice(0, slash + 1) : '';
    yield* this.walk(directoryKey, prefix);
  }

  private async *walk(directoryKey: string, prefix: string): AsyncGenerator<ObjectInfo> {
    let entries;
    try {
      entries = await readdir(join(this.root, directoryKey), { withFileTypes: true });
    } catch (error) {
      if (errnoOf(error) === 'ENOENT' || errnoOf(error) === 'ENOTDIR') return;
      throw this.wrap(error, 'list', directoryKey || '/');
    }
    // Lexicographic order of full keys: a directory "a" sorts as "a/".
    const sorted = entries
      .map((entry) => ({ entry, key: directoryKey + entry.name + (entry.isDirectory() ? '/' : '') }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const { entry, key } of sorted) {
      if (entry.name.startsWith(TEMP_MARKER)) continue;
      if (entry.isDirectory()) {
        if (key.startsWith(prefix) || prefix.startsWith(key)) yield* this.walk(key, prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        const info = await stat(join(this.root, key)).catch(() => undefined);
        if (info) yield { key, size: info.size, lastModified: info.mtime };
      }
    }
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      try {
        await unlink(this.pathOf(key));
      } catch (error) {
        if (errnoOf(error) !== 'ENOENT') throw this.wrap(error, 'delete', key);
      }
    }
  }

  async staleTempFiles(olderThan: Date): Promise<ObjectInfo[]> {
    let entries;
    try {
      entries = await readdir(this.root, { recursive: true, withFileTypes: true });
    } catch (error) {
      throw this.wrap(error, 'list', '/');
    }
    const stale: ObjectInfo[] = [];
    for (const entry of entries) {
      if (!entry.isFile() || !entry.name.startsWith(TEMP_MARKER)) continue;
      const path = join(entry.parentPath, entry.name);
      const info = await stat(path).catch(() => undefined); // renamed or removed meanwhile
      if (info && info.mtime < olderThan) stale.push({ key: relative(this.root, path).split(sep).join('/'), size: info.size, lastModified: info.mtime });
    }
    return stale.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async removeTempFiles(keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      // Only temporary files, and only inside the repository.
      if (!basename(key).startsWith(TEMP_MARKER) || key.startsWith('/') || key.split('/').some((p) => p === '..' || p === '.' || p === '')) {
        throw new PgarkError('INTERNAL', `not a temporary file: "${key}"`);
      }
      await unlink(join(this.root, key)).catch((error: unknown) => {
        if (errnoOf(error) !== 'ENOENT') throw this.wrap(error, 'delete', key);
      });
    }
  }

  async close(): Promise<void> {}
}

async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
