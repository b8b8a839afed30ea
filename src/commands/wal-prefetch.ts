/**
 * pgark wal-prefetch SEGMENT — started in the background by wal-fetch: downloads the segments
 * following SEGMENT (same timeline) into the spool, verified, so the next wal-fetch calls find
 * them locally. One runs at a time (a lock in the spool); the spool holds at most the
 * `wal-prefetch` next segments, everything else in it is removed.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { CommandContext } from '../cli/context.ts';
import { requireSetting } from '../config/load.ts';
import { requireWalFileName, segmentName, segmentNumber } from '../postgres/wal.ts';
import { walDirectoryOf } from '../repo/layout.ts';
import { Repository } from '../repo/repository.ts';
import { Spool } from '../repo/spool.ts';
import { listWalObjects, readStoredWal, type StoredWalObject } from '../repo/wal-archive.ts';
import { mapSettled } from '../util/concurrency.ts';
import { log } from '../util/log.ts';

export async function run(ctx: CommandContext): Promise<number> {
  const after = requireWalFileName(ctx.args[0]!);
  const count = ctx.loaded.config['wal-prefetch'];
  const spool = Spool.open(ctx.loaded.config, requireSetting(ctx.loaded, 'repo', 'where to fetch WAL from?'));
  const release = await spool.tryLock('prefetch');
  if (!release) return 0; // another prefetch is running; it will serve these segments
  try {
    const repo = await Repository.open(ctx.loaded, { requireInit: true, spool });
    try {
      const segmentSize = repo.identity!.postgres.walSegmentSize;
      const first = segmentNumber(after, segmentSize) + 1;
      const wanted = Array.from({ length: count }, (_, i) => segmentName(after.timeline, first + i, segmentSize));
      const wantedSet = new Set(wanted);

      const fetchedDirectory = join(spool.root, 'fetched');
      const present = new Set<string>();
      for (const entry of await readdir(fetchedDirectory)) {
        if (wantedSet.has(entry)) present.add(entry);
        else await rm(join(fetchedDirectory, entry), { force: true }); // consumed, stale, or a temp file of a killed run
      }
      const missing = wanted.filter((name) => !present.has(name));
      if (missing.length === 0) return 0;

      const available = new Map<string, StoredWalObject>();
      for (const directory of new Set(missing.map(walDirectoryOf))) {
        for (const object of await listWalObjects(repo, directory)) if (wantedSet.has(object.name)) available.set(object.name, object);
      }
      const results = await mapSettled(missing.filter((name) => available.has(name)), ctx.loaded.config['process-max'], async (name) => {
        await spool.storeFetched(name, await readStoredWal(repo, available.get(name)!));
      });
      const failed = results.filter((r) => r.status === 'rejected');
      if (failed.length > 0) log.warn(`prefetch: ${failed.length} segment(s) failed; wal-fetch will download them itself`, { error: ((failed[0] as PromiseRejectedResult).reason as Error).message });
      return 0;
    } finally {
      await repo.close();
    }
  } finally {
    await release();
  }
}
