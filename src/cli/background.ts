/**
 * Starts a pgark command in the background (wal-push-ahead, wal-prefetch): detached into its
 * own session, so that it outlives the archive_command / restore_command that started it and
 * is not hit by signals sent to PostgreSQL's process group. Its standard output and input are
 * closed: a child that kept the caller's stderr pipe open would make anyone reading that pipe
 * (PostgreSQL's logger, a test) wait for it. Its log goes to `logFile` (in the spool), which is
 * started afresh once it exceeds 1 MiB.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Spool } from '../repo/spool.ts';
import { fs } from '../util/node-fs.ts';

const LOG_MAX_BYTES = 1 << 20;

function openLog(logFile: string | undefined): number | 'ignore' {
  if (!logFile) return 'ignore';
  try {
    if ((fs.statSync(logFile, { throwIfNoEntry: false })?.size ?? 0) > LOG_MAX_BYTES) fs.renameSync(logFile, `${logFile}.1`);
    return fs.openSync(logFile, 'a', 0o600);
  } catch {
    return 'ignore';
  }
}

export function spawnBackground(args: readonly string[], options: { env?: Record<string, string>; logFile?: string } = {}): ChildProcess {
  const log = openLog(options.logFile);
  try {
    // Loaded on use: the fast paths import this module, and rarely start anything.
    const { spawn } = process.getBuiltinModule('node:child_process');
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...args], {
      detached: true,
      stdio: ['ignore', 'ignore', log],
      env: { ...process.env, ...options.env },
    });
    child.on('error', () => {});
    child.unref();
    return child;
  } finally {
    if (typeof log === 'number') fs.closeSync(log);
  }
}

/** Starts a background pgark command; the returned state says once it has exited (or failed to start). */
function startTracked(args: readonly string[], env: Record<string, string>, logFile: string): { exited: boolean } {
  const child = spawnBackground(args, { env, logFile });
  const state = { exited: false };
  child.on('exit', () => (state.exited = true));
  child.on('error', () => (state.exited = true));
  return state;
}

/**
 * The prefetcher (wal-prefetch) of `spool`, for a wal-fetch call: the returned function says
 * whether one is running, and starts one (once) when none is — `after`, the file the call
 * serves, is where it starts prefetching; `walDirectory`, where the call writes it (pg_wal: the
 * prefetcher announces itself there to the launcher, see src/repo/quick-markers.ts). A prefetcher that runs follows the position wal-fetch
 * records and answers requests, so a new one starts only when none runs.
 */
export function prefetcherOf(spool: Spool, after: string, walDirectory: string, args: readonly string[], env: Record<string, string>): () => Promise<boolean> {
  let started: { exited: boolean } | undefined;
  return async () => {
    if (await spool.lockHolder('prefetch')) return true;
    if (started) return !started.exited; // started, not holding the lock yet (or gone)
    started = startTracked(['wal-prefetch', after, walDirectory, ...args], env, join(spool.root, 'wal-prefetch.log'));
    return true;
  };
}

/** How often a call starts a new pusher when the previous one ended without archiving its file. */
const MAX_PUSHER_STARTS = 3;

/**
 * The background pusher (wal-push-ahead) of `spool`, for a wal-push call: the returned function
 * says whether one is running, and starts one when none is (at most MAX_PUSHER_STARTS times per
 * call, in case one ends without archiving the call's file).
 */
export function pusherOf(spool: Spool, walDirectory: string, args: readonly string[], env: Record<string, string>): () => Promise<boolean> {
  let starts = 0;
  let started: { exited: boolean } | undefined;
  return async () => {
    if (await spool.lockHolder('push')) return true;
    if (started && !started.exited) return true; // started, not holding the lock yet
    if (starts >= MAX_PUSHER_STARTS) return false;
    starts++;
    started = startTracked(['wal-push-ahead', walDirectory, ...args], env, join(spool.root, 'wal-push-ahead.log'));
    return true;
  };
}
