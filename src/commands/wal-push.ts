/**
 * pgark wal-push %p — PostgreSQL's archive_command.
 *
 * PostgreSQL runs one archive_command per WAL file and waits for it, so one round trip per
 * segment would cap archiving far below what a busy server writes. Each call therefore also
 * uploads, in parallel, the other WAL files already waiting (.ready in archive_status) and
 * leaves a marker in the local spool for each; the calls for those files then return at once.
 * A marker is written only after the store confirmed the upload, so a process killed at any
 * moment loses nothing: PostgreSQL calls again and the upload is redone (or recognised as a
 * duplicate).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { CommandContext } from '../cli/context.ts';
import { requireSetting } from '../config/load.ts';
import { PgarkError } from '../errors.ts';
import { parseWalFileName, requireWalFileName } from '../postgres/wal.ts';
import { Repository } from '../repo/repository.ts';
import { Spool } from '../repo/spool.ts';
import { pushWalFile, type PushOutcome } from '../repo/wal-archive.ts';
import { mapSettled } from '../util/concurrency.ts';
import { log } from '../util/log.ts';
import { formatBytes } from '../util/units.ts';

/** Errors that say the store is unavailable (as opposed to refusing this particular file). */
const OUTAGE_CODES = new Set(['STORAGE', 'UNREACHABLE', 'AUTH']);

interface ReadyFile {
  name: string;
  path: string;
}

/** WAL files PostgreSQL has marked ready, in the order it archives them: histories first, then oldest. */
async function readyFiles(walDirectory: string): Promise<ReadyFile[]> {
  let entries: string[];
  try {
    entries = await readdir(join(walDirectory, 'archive_status'));
  } catch {
    return [];
  }
  const names = entries
    .filter((entry) => entry.endsWith('.ready'))
    .map((entry) => entry.slice(0, -'.ready'.length))
    .filter((name) => parseWalFileName(name) !== undefined);
  const rank = (name: string) => (name.endsWith('.history') ? 0 : 1);
  names.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  return names.map((name) => ({ name, path: join(walDirectory, name) }));
}

async function readWalFile(path: string, name: string): Promise<{ content: Buffer; size: number; mtimeMs: number }> {
  try {
    const info = await stat(path);
    return { content: await readFile(path), size: info.size, mtimeMs: info.mtimeMs };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new PgarkError('USAGE', `cannot read WAL file ${path}: ${code === 'ENOENT' ? 'no such file' : code}`, {
      hint: `archive_command must pass %p (a path relative to the data directory), e.g. archive_command = 'pgark wal-push %p'`,
      cause: error,
    });
  }
}

export async function run(ctx: CommandContext): Promise<number> {
  const started = Date.now();
  const walPath = resolve(ctx.args[0]!);
  const name = basename(walPath);
  requireWalFileName(name);
  const { config } = ctx.loaded;
  const spool = Spool.open(config, requireSetting(ctx.loaded, 'repo', 'where to archive WAL?'));

  const requested = await readWalFile(walPath, name);
  if (await spool.isMarkedArchived(name, requested)) {
    await spool.clearArchived(name);
    log.info(`archived ${name} (uploaded ahead by an earlier call)`, { ms: Date.now() - started });
    return 0;
  }

  const repo = await Repository.open(ctx.loaded, { requireInit: true, spool });
  try {
    const ahead: ReadyFile[] = [];
    if (config['archive-push-ahead'] > 0) {
      for (const file of await readyFiles(dirname(walPath))) {
        if (ahead.length >= config['archive-push-ahead']) break;
        if (file.name === name) continue;
        const info = await stat(file.path).catch(() => undefined);
        if (info && !(await spool.isMarkedArchived(file.name, { size: info.size, mtimeMs: info.mtimeMs }))) ahead.push(file);
      }
    }

    const jobs = [{ name, path: walPath }, ...ahead];
    const results = await mapSettled(jobs, config['process-max'], async (job, index): Promise<PushOutcome> => {
      const file = index === 0 ? requested : await readWalFile(job.path, job.name);
      const outcome = await pushWalFile(repo, job.name, file.content, ctx.signal);
      if (index > 0) await spool.markArchived(job.name, file);
      return outcome;
    });

    let aheadDone = 0;
    results.slice(1).forEach((result, i) => {
      if (result.status === 'fulfilled') aheadDone++;
      else log.warn(`could not archive ${ahead[i]!.name} ahead; PostgreSQL will ask again`, { error: (result.reason as Error).message });
    });

    const own = results[0]!;
    if (own.status === 'rejected') {
      const error = own.reason as unknown;
      if (error instanceof PgarkError && OUTAGE_CODES.has(error.code) && (await dropForDiskSpace(ctx, spool, dirname(walPath), name, error))) return 0;
      throw error;
    }
    log.info(own.value === 'already-archived' ? `${name} was already archived with the same content` : `archived ${name}`, {
      ahead: aheadDone,
      ms: Date.now() - started,
    });
    return 0;
  } finally {
    await repo.close();
  }
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
  for (const file of await readyFiles(walDirectory)) queued += (await stat(file.path).catch(() => undefined))?.size ?? 0;
  if (queued <= max) return false; // drop only when MORE than archive-queue-max waits (as documented)
  log.error(`DROPPED WAL file ${name} without archiving it: ${formatBytes(queued)} of WAL wait to be archived, more than archive-queue-max (${formatBytes(max)})`, {
    reason: cause.message,
    consequence: 'point-in-time recovery is broken across this gap until the next backup completes',
  });
  await spool.recordDropped(name, cause.message);
  return true;
}
