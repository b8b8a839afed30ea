/**
 * pgark wal-prefetch SEGMENT — started in the background by wal-fetch: keeps the `wal-prefetch`
 * segments following replay's position (the last segment wal-fetch served, recorded in the
 * spool; SEGMENT until there is one) in the spool, verified, so the next wal-fetch calls find
 * them locally; the names it is downloading are in the spool too (`prefetching`), so that a call
 * for one of them waits instead of downloading it again. One runs at a time (a lock in the spool); it follows the position as replay
 * moves on, and exits when the position has not moved for a few seconds. The spool holds at most
 * the `wal-prefetch` next segments, everything else in it is removed.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { CommandContext } from '../cli/context.ts';
import { requireSetting } from '../config/load.ts';
import { parseWalFileName, requireWalFileName, segmentName, segmentNumber } from '../postgres/wal.ts';
import { walDirectoryOf } from '../repo/layout.ts';
import { Repository } from '../repo/repository.ts';
import { Spool } from '../repo/spool.ts';
import { listWalObjects, readStoredWal, type StoredWalObject } from '../repo/wal-archive.ts';
import { mapSettled } from '../util/concurrency.ts';
import { log } from '../util/log.ts';

/** How long the prefetcher waits for replay to move on before it exits. */
const LINGER_MS = 3_000;
/** How often it looks at the position meanwhile. */
const POLL_MS = 50;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function run(ctx: CommandContext): Promise<number> {
  const start = requireWalFileName(ctx.args[0]!);
  const spool = Spool.open(ctx.loaded.config, requireSetting(ctx.loaded, 'repo', 'where to fetch WAL from?'));
  const release = await spool.tryLock('prefetch');
  if (!release) return 0; // another prefetch is running; it follows the position
  try {
    const repo = await Repository.open(ctx.loaded, { requireInit: true, spool });
    try {
      let served: string | undefined;
      let movedAt = Date.now();
      while (!ctx.signal.aborted && Date.now() - movedAt <= LINGER_MS) {
        const position = (await spool.readFetchPosition()) ?? start.name;
        if (position !== served) {
          served = position;
          await fillWindow(ctx, repo, spool, position);
          movedAt = Date.now();
        } else {
          await sleep(POLL_MS);
        }
      }
      return 0;
    } finally {
      await repo.close();
    }
  } finally {
    await release();
  }
}

/** Makes the spool hold the `wal-prefetch` segments after `position` (those the archive has), and nothing else. */
async function fillWindow(ctx: CommandContext, repo: Repository, spool: Spool, position: string): Promise<void> {
  const after = parseWalFileName(position);
  if (after?.kind !== 'segment') return;
  const segmentSize = repo.identity!.postgres.walSegmentSize;
  const first = segmentNumber(after, segmentSize) + 1;
  const wanted = Array.from({ length: ctx.loaded.config['wal-prefetch'] }, (_, i) => segmentName(after.timeline, first + i, segmentSize));
  const wantedSet = new Set(wanted);

  const fetchedDirectory = join(spool.root, 'fetched');
  const present = new Set<string>();
  for (const entry of await readdir(fetchedDirectory)) {
    if (wantedSet.has(entry)) present.add(entry);
    else await rm(join(fetchedDirectory, entry), { force: true }); // consumed, stale, or a temp file of a killed run
  }
  const missing = wanted.filter((name) => !present.has(name));
  if (missing.length === 0) return;

  const available = new Map<string, StoredWalObject>();
  for (const directory of new Set(missing.map(walDirectoryOf))) {
    for (const object of await listWalObjects(repo, directory)) if (wantedSet.has(object.name)) available.set(object.name, object);
  }
  const downloads = missing.filter((name) => available.has(name));
  if (downloads.length === 0) return;
  await spool.setPrefetching(downloads);
  const results = await mapSettled(downloads, ctx.loaded.config['process-max'], async (name) => {
    await spool.storeFetched(name, await readStoredWal(repo, available.get(name)!));
  });
  await spool.setPrefetching([]);
  const failed = results.filter((r) => r.status === 'rejected');
  if (failed.length > 0) log.warn(`prefetch: ${failed.length} segment(s) failed; wal-fetch will download them itself`, { error: ((failed[0] as PromiseRejectedResult).reason as Error).message });
}
