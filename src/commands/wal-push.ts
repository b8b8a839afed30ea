/**
 * pgark wal-push %p — PostgreSQL's archive_command.
 *
 * PostgreSQL runs one archive_command per WAL file and waits for it, so one round trip per
 * segment would cap archiving far below what a busy server writes. So, as pgBackRest's
 * asynchronous archive-push does, the uploads run in a background process (wal-push-ahead):
 * it archives the WAL files PostgreSQL has marked .ready, several in parallel, and leaves a
 * marker in the local spool for each once the store has confirmed it. A call of this command
 * returns as soon as the marker of its own file is there — usually at once, from the fast path
 * that does not even load the configuration (src/cli/fast-path.ts) — and starts the pusher
 * when none is running. A marker is written only after the store confirmed the upload, so a
 * process killed at any moment loses nothing: PostgreSQL calls again and the upload is redone
 * (or recognised as a duplicate). Errors of the pusher for a file (a conflict, a foreign
 * segment, the store unreachable) are recorded in the spool and reported, with the same message
 * and exit status, by the call for that file.
 *
 * A file outside that window (wal-push run by hand, no archive_status) or with
 * archive-push-ahead = 0 is uploaded by the call itself.
 */
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { CommandContext } from '../cli/context.ts';
import { pusherOf } from '../cli/background.ts';
import { rememberSpoolLocation } from '../cli/spool-locator.ts';
import { requireSetting } from '../config/load.ts';
import { PgarkError } from '../errors.ts';
import { requireWalFileName } from '../postgres/wal.ts';
import { awaitPusher, inPushWindow, isOutage, processStartedAt, readyFiles, walFileInfo, type PusherOutcome } from '../repo/push-ahead.ts';
import { Repository } from '../repo/repository.ts';
import { Spool } from '../repo/spool.ts';
import { pushWalFile } from '../repo/wal-archive.ts';
import { log } from '../util/log.ts';
import { formatBytes } from '../util/units.ts';

async function requireWalFile(path: string): Promise<{ size: number; mtimeMs: number }> {
  const info = await walFileInfo(path);
  if (!info) {
    throw new PgarkError('USAGE', `cannot read WAL file ${path}: no such file`, {
      hint: `archive_command must pass %p (a path relative to the data directory), e.g. archive_command = 'pgark wal-push %p'`,
    });
  }
  return info;
}

async function readWalFile(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new PgarkError('USAGE', `cannot read WAL file ${path}: ${code === 'ENOENT' ? 'no such file' : code}`, { cause: error });
  }
}

export async function run(ctx: CommandContext): Promise<number> {
  const started = Date.now();
  const walPath = resolve(ctx.args[0]!);
  const walDirectory = dirname(walPath);
  const name = basename(walPath);
  requireWalFileName(name);
  const { config } = ctx.loaded;
  const spool = Spool.open(config, requireSetting(ctx.loaded, 'repo', 'where to archive WAL?'));
  await rememberSpoolLocation(process.argv.slice(2), {
    spoolRoot: spool.root, logLevel: config['log-level'], logFormat: config['log-format'],
    pushAhead: config['archive-push-ahead'], archiveTimeoutMs: config['archive-timeout'], walPrefetch: config['wal-prefetch'],
  });
  const file = await requireWalFile(walPath);

  let outcome: PusherOutcome | undefined;
  if (await spool.isMarkedArchived(name, file)) outcome = { kind: 'archived' };
  else if (config['archive-push-ahead'] > 0 && (await inPushWindow(walDirectory, name, config['archive-push-ahead']))) {
    outcome = await waitForPusher(ctx, spool, walDirectory, name, file);
  }
  if (outcome?.kind === 'archived') {
    await spool.clearArchived(name);
    log.info(`archived ${name} (uploaded ahead)`, { ms: Date.now() - started });
    return 0;
  }
  if (outcome?.kind === 'failed') {
    const { failure } = outcome;
    await spool.clearPushFailure(name);
    return failed(ctx, spool, walDirectory, name, new PgarkError(failure.code, failure.message, { hint: failure.hint, exitCode: failure.exitCode }));
  }
  if (outcome) log.debug(`the background pusher did not archive ${name} (${outcome.kind}); archiving it here`);

  const repo = await Repository.open(ctx.loaded, { requireInit: true, spool });
  try {
    const result = await pushWalFile(repo, name, await readWalFile(walPath), ctx.signal);
    log.info(result === 'already-archived' ? `${name} was already archived with the same content` : `archived ${name}`, { ms: Date.now() - started });
    return 0;
  } catch (error) {
    if (error instanceof PgarkError) return failed(ctx, spool, walDirectory, name, error);
    throw error;
  } finally {
    await repo.close();
  }
}

/** Starts the background pusher when none runs, and waits for it to archive `name`. */
async function waitForPusher(ctx: CommandContext, spool: Spool, walDirectory: string, name: string, file: { size: number; mtimeMs: number }): Promise<PusherOutcome> {
  return awaitPusher(spool, name, file, {
    deadline: Date.now() + ctx.loaded.config['archive-timeout'],
    since: processStartedAt() - 1000,
    pusherRunning: pusherOf(spool, walDirectory, ctx.forwardArgs, ctx.forwardEnv),
  });
}

/** An error archiving `name`: dropped under archive-queue-max when the store is unreachable, else thrown. */
async function failed(ctx: CommandContext, spool: Spool, walDirectory: string, name: string, error: PgarkError): Promise<number> {
  if (isOutage(error) && (await dropForDiskSpace(ctx, spool, walDirectory, name, error))) return 0;
  throw error;
}

/**
 * The archive-queue-max escape hatch (as pgBackRest's archive-push-queue-max): while the store
 * is unreachable, WAL piles up in pg_wal; past the configured size, report success so that
 * PostgreSQL recycles it instead of filling its disk and stopping. The dropped file is recorded
 * and logged loudly: point-in-time recovery across it is impossible until the next backup.
 */
async function dropForDiskSpace(ctx: CommandContext, spool: Spool, walDirectory: string, name: string, cause: PgarkError): Promise<boolean> {
  const max = ctx.loaded.config['archive-queue-max'];
  if (max <= 0) return false;
  let queued = 0;
  for (const file of await readyFiles(walDirectory).catch(() => [])) queued += (await walFileInfo(file.path))?.size ?? 0;
  if (queued <= max) return false; // drop only when MORE than archive-queue-max waits (as documented)
  log.error(`DROPPED WAL file ${name} without archiving it: ${formatBytes(queued)} of WAL wait to be archived, more than archive-queue-max (${formatBytes(max)})`, {
    reason: cause.message,
    consequence: 'point-in-time recovery is broken across this gap until the next backup completes',
  });
  await spool.recordDropped(name, cause.message);
  return true;
}
