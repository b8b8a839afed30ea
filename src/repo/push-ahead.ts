/**
 * What wal-push and its background pusher (wal-push-ahead) share: which WAL files PostgreSQL
 * has waiting, and how a wal-push call waits for the pusher to archive its file.
 *
 * PostgreSQL marks a finished WAL file with archive_status/NAME.ready and calls the
 * archive_command for the files in order (timeline histories first, then the oldest); after
 * exit 0 it renames .ready to .done. The pusher works on a window of the first
 * archive-push-ahead + 1 ready files, so the file PostgreSQL is asking for is always in it.
 */
import { join } from 'node:path';
import { PgarkError } from '../errors.ts';
import { parseWalFileName } from '../postgres/wal.ts';
import { fs } from '../util/node-fs.ts';
import { SpoolWatcher, type PushFailure, type Spool } from './spool.ts';

/** Errors that say the store is unavailable (as opposed to refusing this particular file). */
export function isOutage(error: unknown): error is PgarkError {
  return error instanceof PgarkError && (error.code === 'STORAGE' || error.code === 'UNREACHABLE' || error.code === 'AUTH');
}

export interface ReadyFile {
  name: string;
  path: string;
}

/** WAL files PostgreSQL has marked ready, in the order it archives them: histories first, then oldest. */
export async function readyFiles(walDirectory: string): Promise<ReadyFile[]> {
  const entries = fs.readdirSync(join(walDirectory, 'archive_status'));
  const names = entries
    .filter((entry) => entry.endsWith('.ready'))
    .map((entry) => entry.slice(0, -'.ready'.length))
    .filter((name) => parseWalFileName(name) !== undefined);
  const rank = (name: string) => (name.endsWith('.history') ? 0 : 1);
  names.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  return names.map((name) => ({ name, path: join(walDirectory, name) }));
}

/** Whether `name` is among the first `pushAhead + 1` ready files: the ones the pusher archives. */
export async function inPushWindow(walDirectory: string, name: string, pushAhead: number): Promise<boolean> {
  try {
    return (await readyFiles(walDirectory)).slice(0, pushAhead + 1).some((file) => file.name === name);
  } catch {
    return false; // no archive_status: not called by PostgreSQL's archiver
  }
}

export type PusherOutcome = { kind: 'archived' } | { kind: 'failed'; failure: PushFailure } | { kind: 'stopped' } | { kind: 'timeout' };

/** Longest pause between two looks at the spool; a new marker wakes the waiter at once. */
const POLL_MS = 100;

/**
 * Waits until the background pusher has archived `name` (its marker matches `file`), recorded
 * a failure for it, or is no longer running (`pusherRunning`), or until `deadline`. A failure
 * recorded before `since` (ms since the epoch) is stale — the pusher failed the file while
 * pushing ahead, before PostgreSQL asked for it — and is removed so that the pusher tries again.
 */
export async function awaitPusher(
  spool: Spool,
  name: string,
  file: { size: number; mtimeMs: number },
  options: { deadline: number; since: number; pusherRunning: () => Promise<boolean> },
): Promise<PusherOutcome> {
  const watcher = new SpoolWatcher(spool, ['archived']);
  try {
    for (;;) {
      if (await spool.isMarkedArchived(name, file)) return { kind: 'archived' };
      const failure = await spool.readPushFailure(name);
      if (failure) {
        if (failure.at >= options.since) return { kind: 'failed', failure }; // the caller reports (and removes) it
        await spool.clearPushFailure(name);
        continue;
      }
      if (!(await options.pusherRunning())) {
        // it may have marked the file just before it exited
        return (await spool.isMarkedArchived(name, file)) ? { kind: 'archived' } : { kind: 'stopped' };
      }
      if (Date.now() > options.deadline) return { kind: 'timeout' };
      await watcher.pause(POLL_MS);
    }
  } finally {
    watcher.close();
  }
}

/**
 * When this process started (ms since the epoch): a wal-push call passes a second before it as
 * awaitPusher's `since`. (Not performance.timeOrigin: reading it loads perf_hooks, ~4 ms of a
 * fast-path call.)
 */
export function processStartedAt(): number {
  return Date.now() - process.uptime() * 1000;
}

/** The size and mtime of a WAL file (what a marker records), or undefined if it is missing. */
export async function walFileInfo(path: string): Promise<{ size: number; mtimeMs: number } | undefined> {
  try {
    const info = fs.statSync(path, { throwIfNoEntry: false });
    return info ? { size: info.size, mtimeMs: info.mtimeMs } : undefined;
  } catch {
    return undefined; // unreadable (EACCES, …): treated as missing
  }
}

/**
 * Reads WAL files into buffers that are reused once a push is done. The pusher reads one 16 MiB
 * segment after another; a fresh buffer for each makes V8 run a full garbage collection every
 * few segments (it counts the memory outside its heap), which cost the pusher about as much CPU
 * as hashing the segments.
 */
export class WalFileReader {
  private readonly free = new Map<number, Buffer[]>();

  /** The file's content; call `release` once nothing uses it any more. */
  async read(path: string): Promise<{ content: Buffer; release: () => void }> {
    const handle = await fs.promises.open(path, 'r');
    try {
      const { size } = await handle.stat();
      const buffer = this.free.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
      let length = 0;
      while (length < size) {
        const { bytesRead } = await handle.read(buffer, length, size - length, length);
        if (bytesRead === 0) break; // shrank meanwhile: what is there
        length += bytesRead;
      }
      let released = false;
      const release = (): void => {
        if (released) return;
        released = true;
        const pool = this.free.get(size) ?? [];
        this.free.set(size, pool);
        pool.push(buffer);
      };
      return { content: buffer.subarray(0, length), release };
    } finally {
      await handle.close();
    }
  }
}
