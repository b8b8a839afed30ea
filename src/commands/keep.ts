/** pgark keep ID / pgark keep --off ID: mark a backup to be kept by retention, or unmark it. */
import type { CommandContext } from '../cli/context.ts';
import { PgarkError } from '../errors.ts';
import { listBackups } from '../repo/backup-manifest.ts';
import { writeKeepMarker } from '../repo/keep.ts';
import { isValidBackupId } from '../repo/layout.ts';
import { RepositoryLock } from '../repo/lock.ts';
import { Repository } from '../repo/repository.ts';

export async function run(ctx: CommandContext): Promise<number> {
  const id = ctx.args[0]!;
  if (!isValidBackupId(id)) throw new PgarkError('USAGE', `"${id}" is not a backup id`, { hint: 'backup ids look like 20261121T101500F; `pgark info` lists them' });
  const keep = !ctx.options.off;
  const repo = await Repository.open(ctx.loaded, { requireInit: true });
  // Shared, like a backup: an expire running now has decided already, and must finish first.
  const lock = await RepositoryLock.acquire(repo, 'shared', `pgark keep${keep ? '' : ' --off'} ${id}`, { leaseMs: ctx.loaded.config['lock-lease'], waitMs: ctx.loaded.config['lock-wait'], signal: ctx.signal });
  try {
    const backups = await listBackups(repo);
    if (!backups.some((b) => b.id === id)) throw new PgarkError('NOT_FOUND', `no backup ${id}`, { hint: '`pgark info` lists the backups' });
    const key = await writeKeepMarker(repo, id, keep);
    if (ctx.json) process.stdout.write(JSON.stringify({ id, keep, marker: key }) + '\n');
    else process.stdout.write(`backup ${id} ${keep ? 'is kept by retention until `pgark keep --off ' + id + '`' : 'is no longer kept: retention decides'}\n`);
    return 0;
  } finally {
    await lock.release();
    await repo.close();
  }
}
