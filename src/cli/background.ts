/**
 * Starts a pgark command in the background (wal-push-ahead, wal-prefetch): detached into its
 * own session, so that it outlives the archive_command / restore_command that started it and
 * is not hit by signals sent to PostgreSQL's process group. Its standard output and input are
 * closed: a child that kept the caller's stderr pipe open would make anyone reading that pipe
 * (PostgreSQL's logger, a test) wait for it. Its log goes to `logFile` (in the spool), which is
 * started afresh once it exceeds 1 MiB.
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Spool } from '../repo/spool.ts';

const LOG_MAX_BYTES = 1 << 20;

function openLog(logFile: string | undefined): number | 'ignore' {
  if (!logFile) return 'ignore';
  try {
    if ((statSync(logFile, { throwIfNoEntry: false })?.size ?? 0) > LOG_MAX_BYTES) renameSync(logFile, `${logFile}.1`);
    return openSync(logFile, 'a', 0o600);
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
    if (typeof log === 'number') closeSync(log);
  }
}

/**
 * Makes sure a prefetcher (wal-prefetch) is running for `spool` after wal-fetch served
 * `after`: one that runs follows the position wal-fetch records, so a new one starts only when
 * none runs.
 */
export async function ensurePrefetcher(spool: Spool, after: string, args: readonly string[], env: Record<string, string>): Promise<void> {
  if (await spool.lockHolder('prefetch')) return;
  spawnBackground(['wal-prefetch', after, ...args], { env, logFile: join(spool.root, 'wal-prefetch.log') });
}
