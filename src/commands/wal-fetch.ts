/**
 * pgark wal-fetch %f %p — PostgreSQL's restore_command.
 *
 * Exit 0: the file was written to %p (atomically: a temporary name, then rename). Exit 1: the
 * archive does not have it — quietly, because PostgreSQL asks for files that do not exist all
 * the time (the next timeline's history, the segment after the end of the archive). After
 * serving a segment, it records the segment as replay's position in the spool, and a background
 * `pgark wal-prefetch` (started when none runs) keeps the segments after it in the spool, so
 * replay does not wait for one round trip per segment. Most calls are served from the spool by
 * the fast path (src/cli/fast-path.ts), which does not load the configuration.
 */
import { rename, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { prefetcherOf } from '../cli/background.ts';
import type { CommandContext } from '../cli/context.ts';
import { rememberSpoolLocation } from '../cli/spool-locator.ts';
import { requireSetting } from '../config/load.ts';
import { PgarkError } from '../errors.ts';
import { requireWalFileName } from '../postgres/wal.ts';
import { fetchThroughSpool } from '../repo/fetch-requests.ts';
import { Repository } from '../repo/repository.ts';
import { Spool } from '../repo/spool.ts';
import { fetchWalFile } from '../repo/wal-archive.ts';
import { log } from '../util/log.ts';

/** Records segment `name` as replay's position and makes sure a prefetcher follows it. */
async function followedBy(spool: Spool, name: string, prefetcher: (() => Promise<boolean>) | undefined): Promise<void> {
  if (!prefetcher) return;
  try {
    await spool.setFetchPosition(name);
    await prefetcher();
  } catch (error) {
    log.debug('could not start the prefetcher', { error: (error as Error).message });
  }
}

export async function run(ctx: CommandContext): Promise<number> {
  const started = Date.now();
  const [name, destination] = ctx.args as [string, string];
  const file = requireWalFileName(name);
  const target = resolve(destination);
  const { config } = ctx.loaded;
  const spool = Spool.open(config, requireSetting(ctx.loaded, 'repo', 'where to fetch WAL from?'));
  await rememberSpoolLocation(process.argv.slice(2), {
    spoolRoot: spool.root, logLevel: config['log-level'], logFormat: config['log-format'],
    pushAhead: config['archive-push-ahead'], archiveTimeoutMs: config['archive-timeout'], walPrefetch: config['wal-prefetch'],
  });

  const prefetcher = config['wal-prefetch'] > 0 ? prefetcherOf(spool, name, dirname(target), ctx.forwardArgs, ctx.forwardEnv) : undefined;
  const outcome = await fetchThroughSpool(spool, name, target, prefetcher);
  if (outcome === 'missing') {
    log.debug(`${name} is not in the archive`);
    return 1;
  }
  if (outcome === 'restored') {
    if (file.kind === 'segment') await followedBy(spool, name, prefetcher);
    log.info(`restored ${name} (prefetched)`, { ms: Date.now() - started });
    return 0;
  }

  const repo = await Repository.open(ctx.loaded, { requireInit: true, spool });
  let content: Buffer | undefined;
  try {
    content = await fetchWalFile(repo, name);
  } finally {
    await repo.close();
  }
  if (!content) {
    log.debug(`${name} is not in the archive`);
    // Replay reached the end of the archive: segments prefetched before this one (a prefetch
    // that finished after its segment was fetched directly) will not be asked for again.
    if (file.kind === 'segment') await spool.removeFetchedBefore(name);
    return 1;
  }
  const temp = join(dirname(target), `.pgark-${randomBytes(4).toString('hex')}`);
  try {
    await writeFile(temp, content);
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw new PgarkError('STORAGE', `cannot write ${target}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
  }
  if (file.kind === 'segment') await followedBy(spool, name, prefetcher);
  log.info(`restored ${name}`, { ms: Date.now() - started });
  return 0;
}
