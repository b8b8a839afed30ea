/**
 * pgark wal-fetch %f %p — PostgreSQL's restore_command.
 *
 * Exit 0: the file was written to %p (atomically: a temporary name, then rename). Exit 1: the
 * archive does not have it — quietly, because PostgreSQL asks for files that do not exist all
 * the time (the next timeline's history, the segment after the end of the archive). After
 * serving a segment, a background `pgark wal-prefetch` downloads the next ones into the spool,
 * so replay does not wait for one round trip per segment.
 */
import { spawn } from 'node:child_process';
import { copyFile, rename, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import type { CommandContext } from '../cli/context.ts';
import { requireSetting } from '../config/load.ts';
import { PgarkError } from '../errors.ts';
import { requireWalFileName } from '../postgres/wal.ts';
import { Repository } from '../repo/repository.ts';
import { Spool } from '../repo/spool.ts';
import { fetchWalFile } from '../repo/wal-archive.ts';
import { log } from '../util/log.ts';

async function moveInto(source: string, target: string): Promise<boolean> {
  try {
    await rename(source, target);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    if (code !== 'EXDEV') throw error;
  }
  // The spool is on another filesystem: copy next to the target, then rename into place.
  const temp = `${target}.pgark-${randomBytes(4).toString('hex')}`;
  try {
    await copyFile(source, temp);
  } catch (error) {
    await rm(temp, { force: true });
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
  await rename(temp, target);
  await rm(source, { force: true });
  return true;
}

function startPrefetch(ctx: CommandContext, after: string): void {
  if (ctx.loaded.config['wal-prefetch'] <= 0) return;
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'wal-prefetch', after, ...ctx.forwardArgs], {
    detached: true,
    stdio: 'ignore',
    env: { ...process.env, ...ctx.forwardEnv },
  });
  child.on('error', () => {});
  child.unref();
}

export async function run(ctx: CommandContext): Promise<number> {
  const started = Date.now();
  const [name, destination] = ctx.args as [string, string];
  const file = requireWalFileName(name);
  const target = resolve(destination);
  const spool = Spool.open(ctx.loaded.config, requireSetting(ctx.loaded, 'repo', 'where to fetch WAL from?'));

  if (file.kind === 'segment' && (await moveInto(spool.fetchedPath(name), target))) {
    startPrefetch(ctx, name);
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
  if (file.kind === 'segment') startPrefetch(ctx, name);
  log.info(`restored ${name}`, { ms: Date.now() - started });
  return 0;
}
