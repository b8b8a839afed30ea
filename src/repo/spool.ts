/**
 * The local spool: a directory on the database host where wal-push records the WAL files it
 * uploaded ahead of PostgreSQL asking, and where wal-fetch keeps segments it prefetched. Each
 * repository gets its own subdirectory. Losing the spool loses nothing: a missing marker only
 * means one more (recognised as duplicate) upload, a missing prefetched file one more download.
 *
 * In a repository's subdirectory:
 *   archived/NAME        marker: NAME is stored (size and mtime of the file uploaded)
 *   failed/NAME          why the background pusher could not archive NAME (for the call for NAME)
 *   fetched/NAME         a prefetched segment, verified
 *   fetch-position       the last segment wal-fetch served
 *   requests/NAME        a wal-fetch call asks the running prefetcher for NAME (content: a token)
 *   answers/NAME         the prefetcher's "not in the archive" / "failed" for that token
 *   push.lock, prefetch.lock, wal-push-ahead.log, wal-prefetch.log   the background processes
 *   pgark.json           the repository description (cached), dropped.log (archive-queue-max)
 * and, in the default spool base, locators/ (src/cli/spool-locator.ts).
 */
import { join } from 'node:path';
import type { Config } from '../config/load.ts';
import { PgarkError, type PgarkErrorCode } from '../errors.ts';
import { DirectoryWatcher } from '../util/directory-watcher.ts';
import { errorCode, fs } from '../util/node-fs.ts';

const DEFAULT_SPOOL = '/var/spool/pgark';

let tempCounter = 0;
/**
 * A name for a temporary file, unique among processes (PID) and within one. Not random bytes:
 * node:crypto alone costs several milliseconds of start-up, and the fast paths
 * (src/cli/fast-path.ts) write files too.
 */
export function tempSuffix(): string {
  return `${process.pid.toString(36)}-${Date.now().toString(36)}-${(tempCounter++).toString(36)}`;
}

function writable(path: string): boolean {
  try {
    fs.accessSync(path, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The spool base when spool-path is not set: /var/spool/pgark if writable, else one in TMPDIR. */
export function defaultSpoolBase(): string {
  return writable(DEFAULT_SPOOL) ? DEFAULT_SPOOL : join(process.getBuiltinModule('node:os').tmpdir(), `pgark-spool-${process.getuid?.() ?? 0}`);
}

/** What the background pusher recorded about a WAL file it could not archive (see wal-push). */
export interface PushFailure {
  code: PgarkErrorCode;
  message: string;
  hint?: string;
  exitCode: number;
  /** When it was recorded (ms since the epoch). */
  at: number;
}

/**
 * The prefetcher's answer to a request it could not serve by storing the file in fetched/:
 * `missing` — a listing of the archive that started after the request was read does not have
 * it; `failed` — listing or downloading failed (the call then takes the normal path).
 */
export interface FetchAnswer {
  token: string;
  kind: 'missing' | 'failed';
  message?: string;
}

export class Spool {
  readonly root: string;

  private constructor(root: string) {
    this.root = root;
  }

  /**
   * A spool whose root is already known (written by an earlier Spool.open): the fast paths of
   * wal-push and wal-fetch, which do not read the configuration (src/cli/fast-path.ts).
   */
  static existing(root: string): Spool {
    return new Spool(root);
  }

  static open(config: Config, repoUrl: string): Spool {
    const base = config['spool-path'] ?? defaultSpoolBase();
    // Loaded here, not at the top: the fast paths import this module but never call open().
    const { createHash } = process.getBuiltinModule('node:crypto');
    const root = join(base, createHash('sha256').update(repoUrl).digest('hex').slice(0, 16));
    try {
      fs.mkdirSync(join(root, 'archived'), { recursive: true, mode: 0o700 });
      fs.mkdirSync(join(root, 'fetched'), { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new PgarkError('CONFIG', `cannot create the spool directory ${root}: ${(error as NodeJS.ErrnoException).code}`, {
        hint: 'set spool-path to a directory the PostgreSQL OS user can write',
      });
    }
    return new Spool(root);
  }

  /**
   * Writes a small file atomically (temp + rename) inside the spool: markers, records, answers.
   * Synchronously: they are a few bytes (see src/util/node-fs.ts).
   */
  async writeAtomic(relativePath: string, content: string): Promise<void> {
    const path = join(this.root, relativePath);
    const temp = `${path}.tmp-${tempSuffix()}`;
    fs.writeFileSync(temp, content, { mode: 0o600 });
    fs.renameSync(temp, path);
  }

  /** A small spool file's content, or undefined when it is not there (or unreadable). */
  private readSmall(relativePath: string): string | undefined {
    try {
      return fs.readFileSync(join(this.root, relativePath), 'utf8');
    } catch {
      return undefined;
    }
  }

  /** A small JSON record written atomically into `directory` (made when missing). */
  private async writeRecord(directory: string, name: string, record: unknown): Promise<void> {
    fs.mkdirSync(join(this.root, directory), { recursive: true, mode: 0o700 });
    await this.writeAtomic(join(directory, name), JSON.stringify(record));
  }

  /** The JSON record `name` in `directory`, or undefined when it is missing or unreadable. */
  private readRecord<T>(directory: string, name: string): T | undefined {
    try {
      const text = this.readSmall(join(directory, name));
      return text === undefined ? undefined : (JSON.parse(text) as T);
    } catch {
      return undefined;
    }
  }

  private remove(relativePath: string): void {
    fs.rmSync(join(this.root, relativePath), { force: true });
  }

  /** Entries of a spool directory, temporary files of killed writes excluded; empty when it is missing. */
  private entries(directory: string): string[] {
    try {
      return fs.readdirSync(join(this.root, directory)).filter((entry) => !entry.includes('.tmp-'));
    } catch {
      return [];
    }
  }

  // ---- cached repository description (immutable after init: saves a GET per call) ----

  async readCachedIdentity(): Promise<string | undefined> {
    return this.readSmall('pgark.json');
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
    const marker = this.readRecord<{ size: number; mtimeMs: number } | null>('archived', name);
    return marker?.size === file.size && marker.mtimeMs === file.mtimeMs;
  }

  async clearArchived(name: string): Promise<void> {
    this.remove(join('archived', name));
  }

  /** Names of the WAL files marked as archived (temporary files of killed writes excluded). */
  async archivedNames(): Promise<string[]> {
    return this.entries('archived');
  }

  // ---- wal-push: failures of the background pusher, for the call PostgreSQL makes for the file ----

  async recordPushFailure(name: string, error: unknown): Promise<void> {
    const failure: PushFailure = error instanceof PgarkError
      ? { code: error.code, message: error.message, hint: error.hint, exitCode: error.exitCode, at: Date.now() }
      : { code: 'INTERNAL', message: error instanceof Error ? error.message : String(error), exitCode: 3, at: Date.now() };
    await this.writeRecord('failed', name, failure);
  }

  /** The directory of the failure records (made when missing): the pusher watches it. */
  pushFailureDirectory(): string {
    const directory = join(this.root, 'failed');
    fs.mkdirSync(directory, { recursive: true, mode: 0o700 });
    return directory;
  }

  async readPushFailure(name: string): Promise<PushFailure | undefined> {
    return this.readRecord<PushFailure>('failed', name);
  }

  async clearPushFailure(name: string): Promise<void> {
    this.remove(join('failed', name));
  }

  async pushFailureNames(): Promise<string[]> {
    return this.entries('failed');
  }

  /** Appends to dropped.log: WAL files given up under archive-queue-max (see wal-push). */
  async recordDropped(name: string, reason: string): Promise<void> {
    await fs.promises.appendFile(join(this.root, 'dropped.log'), `${new Date().toISOString()} ${name} ${reason.replaceAll('\n', ' ')}\n`, { mode: 0o600 });
  }

  // ---- wal-fetch: prefetched segments ----

  fetchedPath(name: string): string {
    return join(this.root, 'fetched', name);
  }

  /**
   * Moves the prefetched segment `name` to `target` (rename; a copy then rename when the spool
   * is on another filesystem). False when it is not in the spool.
   */
  async takeFetched(name: string, target: string): Promise<boolean> {
    const source = this.fetchedPath(name);
    try {
      fs.renameSync(source, target);
      return true;
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ENOENT') return false;
      if (code !== 'EXDEV') throw error;
    }
    const temp = `${target}.pgark-${tempSuffix()}`;
    try {
      await fs.promises.copyFile(source, temp);
    } catch (error) {
      fs.rmSync(temp, { force: true });
      if (errorCode(error) === 'ENOENT') return false;
      throw error;
    }
    fs.renameSync(temp, target);
    fs.rmSync(source, { force: true });
    return true;
  }

  /** The last segment wal-fetch served: the background prefetcher keeps the segments after it. */
  async setFetchPosition(name: string): Promise<void> {
    await this.writeAtomic('fetch-position', name);
  }

  async readFetchPosition(): Promise<string | undefined> {
    return this.readSmall('fetch-position')?.trim() || undefined;
  }

  /** Removes prefetched segments that sort before `name` (older, or an earlier timeline). */
  async removeFetchedBefore(name: string): Promise<void> {
    for (const entry of await fs.promises.readdir(join(this.root, 'fetched')).catch(() => [] as string[])) {
      if (entry < name) await fs.promises.rm(join(this.root, 'fetched', entry), { force: true });
    }
  }

  async hasFetched(name: string): Promise<boolean> {
    return fs.existsSync(this.fetchedPath(name));
  }

  /** Stores a verified segment in fetched/ (temp + rename; asynchronously: it is a whole segment). */
  async storeFetched(name: string, content: Buffer): Promise<void> {
    const path = this.fetchedPath(name);
    const temp = `${path}.tmp-${tempSuffix()}`;
    await fs.promises.writeFile(temp, content, { mode: 0o600 });
    fs.renameSync(temp, path);
  }

  // ---- wal-fetch: requests to the running prefetcher (see src/repo/fetch-requests.ts) ----

  /** Asks the prefetcher for `name`; `token` identifies this request in the answer. */
  async writeFetchRequest(name: string, token: string): Promise<void> {
    for (const directory of ['requests', 'answers']) fs.mkdirSync(join(this.root, directory), { recursive: true, mode: 0o700 });
    await this.writeAtomic(join('requests', name), token);
  }

  async readFetchRequest(name: string): Promise<string | undefined> {
    return this.readSmall(join('requests', name));
  }

  /** Names with a pending request (temporary files of killed writes excluded). */
  async fetchRequestNames(): Promise<string[]> {
    return this.entries('requests');
  }

  async writeFetchAnswer(name: string, answer: FetchAnswer): Promise<void> {
    await this.writeRecord('answers', name, answer);
  }

  async readFetchAnswer(name: string): Promise<FetchAnswer | undefined> {
    return this.readRecord<FetchAnswer>('answers', name);
  }

  /** Removes the request for `name` and its answer (done by the call that made it, or by the prefetcher at exit). */
  async clearFetchRequest(name: string): Promise<void> {
    this.remove(join('requests', name));
    this.remove(join('answers', name));
  }

  /** The PID of the live process holding lock `name`, if any. */
  async lockHolder(name: string): Promise<number | undefined> {
    const holder = Number(this.readSmall(`${name}.lock`) ?? '0');
    return holder > 0 && processAlive(holder) ? holder : undefined;
  }

  /**
   * Takes a lock file holding our PID; a lock whose process is gone is taken over. Returns a
   * release function, or undefined if another live process holds the lock.
   */
  async tryLock(name: string): Promise<(() => Promise<void>) | undefined> {
    const path = join(this.root, `${name}.lock`);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = fs.openSync(path, 'wx', 0o600);
        try {
          fs.writeFileSync(fd, String(process.pid));
        } finally {
          fs.closeSync(fd);
        }
        return async () => fs.rmSync(path, { force: true });
      } catch (error) {
        if (errorCode(error) !== 'EEXIST') throw error;
        const holder = Number(this.readSmall(`${name}.lock`) ?? '0');
        if (holder > 0 && processAlive(holder)) return undefined;
        const info = fs.statSync(path, { throwIfNoEntry: false });
        // A lock that was just created may not have its PID written yet.
        if (!holder && info && Date.now() - info.mtimeMs < 5000) return undefined;
        fs.rmSync(path, { force: true });
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
    return errorCode(error) === 'EPERM';
  }
}

/** A DirectoryWatcher of directories of the spool (e.g. 'archived'). */
export class SpoolWatcher extends DirectoryWatcher {
  constructor(spool: Spool, directories: readonly string[]) {
    super(directories.map((directory) => join(spool.root, directory)));
  }
}
