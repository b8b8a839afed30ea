/**
 * The local spool: a directory on the database host where wal-push records the WAL files it
 * uploaded ahead of PostgreSQL asking, and where wal-fetch keeps segments it prefetched. Each
 * repository gets its own subdirectory. Losing the spool loses nothing: a missing marker only
 * means one more (recognised as duplicate) upload, a missing prefetched file one more download.
 */
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Config } from '../config/load.ts';
import { PgarkError } from '../errors.ts';

const DEFAULT_SPOOL = '/var/spool/pgark';

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export class Spool {
  readonly root: string;

  private constructor(root: string) {
    this.root = root;
  }

  static open(config: Config, repoUrl: string): Spool {
    const base = config['spool-path'] ?? (writable(DEFAULT_SPOOL) ? DEFAULT_SPOOL : join(tmpdir(), `pgark-spool-${process.getuid?.() ?? 0}`));
    const root = join(base, createHash('sha256').update(repoUrl).digest('hex').slice(0, 16));
    try {
      mkdirSync(join(root, 'archived'), { recursive: true, mode: 0o700 });
      mkdirSync(join(root, 'fetched'), { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new PgarkError('CONFIG', `cannot create the spool directory ${root}: ${(error as NodeJS.ErrnoException).code}`, {
        hint: 'set spool-path to a directory the PostgreSQL OS user can write',
      });
    }
    return new Spool(root);
  }

  /** Writes a file atomically (temp + rename) inside the spool. */
  async writeAtomic(relativePath: string, content: Buffer | string): Promise<void> {
    const path = join(this.root, relativePath);
    const temp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
    await writeFile(temp, content, { mode: 0o600 });
    await rename(temp, path);
  }

  // ---- cached repository description (immutable after init: saves a GET per call) ----

  async readCachedIdentity(): Promise<string | undefined> {
    return readFile(join(this.root, 'pgark.json'), 'utf8').catch(() => undefined);
  }

  async cacheIdentity(text: string): Promise<void> {
    await this.writeAtomic('pgark.json', text);
  }

  // ---- wal-push: markers of files uploaded ahead ----

  /**
   * A marker records the size and mtime of the file that was uploaded, so a file that changed
   * since (a recycled segment reused under the same name cannot happen, but a restored PGDATA
   * can) is uploaded again rather than trusted.
   */
  async markArchived(name: string, file: { size: number; mtimeMs: number }): Promise<void> {
    await this.writeAtomic(join('archived', name), JSON.stringify({ size: file.size, mtimeMs: file.mtimeMs }));
  }

  async isMarkedArchived(name: string, file: { size: number; mtimeMs: number }): Promise<boolean> {
    try {
      const marker = JSON.parse(await readFile(join(this.root, 'archived', name), 'utf8')) as { size: number; mtimeMs: number };
      return marker.size === file.size && marker.mtimeMs === file.mtimeMs;
    } catch {
      return false;
    }
  }

  async clearArchived(name: string): Promise<void> {
    await rm(join(this.root, 'archived', name), { force: true });
  }

  /** Appends to dropped.log: WAL files given up under archive-queue-max (see wal-push). */
  async recordDropped(name: string, reason: string): Promise<void> {
    const { appendFile } = await import('node:fs/promises');
    await appendFile(join(this.root, 'dropped.log'), `${new Date().toISOString()} ${name} ${reason.replaceAll('\n', ' ')}\n`, { mode: 0o600 });
  }

  // ---- wal-fetch: prefetched segments ----

  fetchedPath(name: string): string {
    return join(this.root, 'fetched', name);
  }

  /** Removes prefetched segments that sort before `name` (older, or an earlier timeline). */
  async removeFetchedBefore(name: string): Promise<void> {
    const { readdir } = await import('node:fs/promises');
    for (const entry of await readdir(join(this.root, 'fetched')).catch(() => [] as string[])) {
      if (entry < name) await rm(join(this.root, 'fetched', entry), { force: true });
    }
  }

  async storeFetched(name: string, content: Buffer): Promise<void> {
    await this.writeAtomic(join('fetched', name), content);
  }

  /**
   * Takes a lock file holding our PID; a lock whose process is gone is taken over. Returns a
   * release function, or undefined if another live process holds the lock.
   */
  async tryLock(name: string): Promise<(() => Promise<void>) | undefined> {
    const path = join(this.root, `${name}.lock`);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const handle = await open(path, 'wx', 0o600);
        await handle.writeFile(String(process.pid));
        await handle.close();
        return async () => { await rm(path, { force: true }); };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        const holder = Number(await readFile(path, 'utf8').catch(() => '0'));
        if (holder > 0 && processAlive(holder)) return undefined;
        const info = await stat(path).catch(() => undefined);
        // A lock that was just created may not have its PID written yet.
        if (!holder && info && Date.now() - info.mtimeMs < 5000) return undefined;
        await rm(path, { force: true });
      }
    }
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
