/**
 * pgark wal-push-ahead WALDIR — the background pusher that wal-push starts (see wal-push.ts).
 *
 * One runs per spool (a lock). It archives the first archive-push-ahead + 1 WAL files that
 * PostgreSQL has marked .ready in WALDIR/archive_status, process-max at a time, in PostgreSQL's
 * order, and writes the spool marker of each once the store has confirmed it; as PostgreSQL
 * takes them (.ready → .done), the window moves on. A file it cannot archive gets a failure
 * record in the spool instead, which the wal-push call for that file reports; when the store
 * is unreachable it stops (the next call starts a new pusher, so retries follow PostgreSQL's).
 * With nothing left to do it waits a few seconds for new WAL before it exits, so that under
 * steady write load the uploads start as soon as a segment is finished and the calls find
 * their marker at once.
 */
import { join, resolve } from 'node:path';
import type { CommandContext } from '../cli/context.ts';
import { requireSetting } from '../config/load.ts';
import { isOutage, readyFiles, walFileInfo, WalFileReader, type ReadyFile } from '../repo/push-ahead.ts';
import { Repository } from '../repo/repository.ts';
import { QuickPush } from '../repo/quick-markers.ts';
import { Spool } from '../repo/spool.ts';
import { pushWalFile } from '../repo/wal-archive.ts';
import { DirectoryWatcher } from '../util/directory-watcher.ts';
import { log } from '../util/log.ts';

/** How long the pusher waits for new WAL before it exits. */
const LINGER_MS = 10_000;
/**
 * How often it looks for new .ready files while it waits: a change in archive_status (a new
 * .ready, a .ready renamed to .done) wakes it at once; without inotify it polls. Each look
 * costs about a millisecond of CPU, so idle polls every 100 ms were a tenth of a second per
 * pusher lifetime.
 */
const SCAN_MS = 100;
const WATCHED_SCAN_MS = 1_000;

export async function run(ctx: CommandContext): Promise<number> {
  const walDirectory = resolve(ctx.args[0]!);
  const spool = Spool.open(ctx.loaded.config, requireSetting(ctx.loaded, 'repo', 'where to archive WAL?'));
  const release = await spool.tryLock('push');
  if (!release) return 0; // another pusher is running
  const quick = QuickPush.forPusher(walDirectory);
  try {
    quick?.start();
    let repo: Repository;
    try {
      repo = await Repository.open(ctx.loaded, { requireInit: true, spool });
    } catch (error) {
      // Say why to the call PostgreSQL is making (for the first ready file), then give up.
      const first = (await readyFiles(walDirectory).catch(() => []))[0];
      if (first) await spool.recordPushFailure(first.name, error);
      throw error;
    }
    try {
      await pushLoop(ctx, repo, spool, walDirectory, quick);
    } finally {
      await repo.close();
    }
  } finally {
    quick?.stop();
    await removeStaleRecords(spool, walDirectory, quick).catch(() => {});
    await release();
  }
  return 0;
}

async function pushLoop(ctx: CommandContext, repo: Repository, spool: Spool, walDirectory: string, quick: QuickPush | undefined): Promise<void> {
  const window = ctx.loaded.config['archive-push-ahead'] + 1;
  const processMax = ctx.loaded.config['process-max'];
  // Files this process marked: never pushed again, though PostgreSQL may not have renamed
  // their .ready yet (a marker written after the call consumed it would be left over).
  const done = new Set<string>();
  const inFlight = new Map<string, Promise<void>>();
  let outage = false;

  const reader = new WalFileReader();
  const push = async (file: ReadyFile, info: { size: number; mtimeMs: number }): Promise<void> => {
    const started = Date.now();
    try {
      const { content, release } = await reader.read(file.path);
      const outcome = await pushWalFile(repo, file.name, content, ctx.signal);
      release(); // stored: nothing reads the buffer any more (after a failure it is left to the GC: an aborted request might)
      await spool.markArchived(file.name, info);
      quick?.markArchived(file.name);
      done.add(file.name);
      log.info(outcome === 'already-archived' ? `${file.name} was already archived with the same content` : `archived ${file.name}`, { ms: Date.now() - started });
    } catch (error) {
      if (ctx.signal.aborted) return;
      await spool.recordPushFailure(file.name, error).catch(() => {});
      quick?.markFailed(file.name);
      log.warn(`could not archive ${file.name}; the wal-push call for it reports why`, { error: (error as Error).message });
      if (isOutage(error)) outage = true;
    }
  };

  // Woken by PostgreSQL marking WAL ready or taking it (.ready -> .done), and by a call removing
  // a failure record (so the pusher tries that file again).
  const watcher = new DirectoryWatcher([join(walDirectory, 'archive_status'), spool.pushFailureDirectory()]);
  const scanMs = watcher.watching ? WATCHED_SCAN_MS : SCAN_MS;
  try {
    let idleSince = Date.now();
    while (!ctx.signal.aborted) {
      const seenChanges = watcher.changes;
      let allReady: ReadyFile[];
      try {
        allReady = await readyFiles(walDirectory);
      } catch {
        break; // the WAL directory is gone (the cluster was removed)
      }
      const ready = allReady.slice(0, window);
      // Markers of files PostgreSQL has taken (.ready -> .done) have served. The launcher, which
      // answers most calls, removes nothing, and under steady load this process never exits.
      const readyNames = new Set(allReady.map((file) => file.name));
      for (const name of done) {
        if (readyNames.has(name)) continue;
        done.delete(name);
        await spool.clearArchived(name);
        quick?.forget(name);
      }
      if (!outage) {
        const failed = new Set(await spool.pushFailureNames());
        for (const file of ready) {
          if (inFlight.size >= processMax) break;
          if (done.has(file.name) || inFlight.has(file.name) || failed.has(file.name)) continue;
          const info = await walFileInfo(file.path);
          if (!info) continue;
          if (await spool.isMarkedArchived(file.name, info)) {
            done.add(file.name); // by an earlier pusher
            continue;
          }
          inFlight.set(file.name, push(file, info).finally(() => inFlight.delete(file.name)));
        }
      }
      if (inFlight.size > 0) idleSince = Date.now();
      else if (outage || Date.now() - idleSince > LINGER_MS) break;
      await Promise.race([...inFlight.values(), watcher.pause(scanMs, seenChanges)]);
    }
  } finally {
    watcher.close();
  }
  await Promise.allSettled(inFlight.values());
}

/** Markers and failure records of files PostgreSQL no longer waits for (archived, or removed). */
async function removeStaleRecords(spool: Spool, walDirectory: string, quick: QuickPush | undefined): Promise<void> {
  const ready = new Set((await readyFiles(walDirectory)).map((file) => file.name));
  quick?.removeStale(ready);
  for (const name of await spool.archivedNames()) if (!ready.has(name)) await spool.clearArchived(name);
  for (const name of await spool.pushFailureNames()) if (!ready.has(name)) await spool.clearPushFailure(name);
}
