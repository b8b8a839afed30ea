/**
 * pgark wal-prefetch NAME [WALDIR] — started in the background by wal-fetch (WALDIR: where the
 * calls write the files, pg_wal; while it runs, the launcher serves prefetched segments too, see
 * src/repo/quick-markers.ts). One runs per spool (a lock);
 * it keeps an S3 (or other store) client open so that the wal-fetch calls PostgreSQL makes, one
 * process per WAL file, need not start one each. It does two things:
 *
 *   - keeps the `wal-prefetch` segments following replay's position (the last segment wal-fetch
 *     served, recorded in the spool; the segment after NAME until that position changes) in
 *     spool/fetched/, verified, so the next calls find them there. Everything else in fetched/
 *     is removed, so the spool holds at most those segments (plus a file a call asked for).
 *   - answers requests (spool/requests/NAME, see src/repo/fetch-requests.ts): a call whose file
 *     is not in fetched/ asks for it; the prefetcher downloads it into fetched/ (or waits for the
 *     download already running), or answers "missing" — but only from a listing of the archive
 *     that it started after it read the request, so the answer is exactly as fresh as the
 *     call's own listing would have been. Nothing is ever answered from memory: a file that
 *     appears in the archive a moment after a "missing" is found by the next request.
 *
 * It exits when replay has not moved and no request came for a few seconds.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { CommandContext } from '../cli/context.ts';
import { requireSetting } from '../config/load.ts';
import { parseWalFileName, requireWalFileName, segmentName, segmentNumber } from '../postgres/wal.ts';
import { walDirectoryOf } from '../repo/layout.ts';
import { QuickPrefetch } from '../repo/quick-markers.ts';
import { Repository } from '../repo/repository.ts';
import { Spool } from '../repo/spool.ts';
import { findStoredWal, listWalObjects, WalReadBuffers, type StoredWalObject } from '../repo/wal-archive.ts';
import { mapSettled } from '../util/concurrency.ts';
import { log } from '../util/log.ts';

/** How long the prefetcher waits for replay to move on, or for a request, before it exits. */
const LINGER_MS = 3_000;
/** Longest pause between two looks at the spool; a new request or position wakes it at once. */
const POLL_MS = 50;

export async function run(ctx: CommandContext): Promise<number> {
  const start = requireWalFileName(ctx.args[0]!);
  const spool = Spool.open(ctx.loaded.config, requireSetting(ctx.loaded, 'repo', 'where to fetch WAL from?'));
  const release = await spool.tryLock('prefetch');
  if (!release) return 0; // another prefetcher is running; it follows the position and answers requests
  const prefetcher = new Prefetcher(ctx, spool);
  const quick = QuickPrefetch.forPrefetcher(ctx.args[1] === undefined ? undefined : resolve(ctx.args[1]), spool.root);
  try {
    let repo: Repository;
    try {
      repo = await Repository.open(ctx.loaded, { requireInit: true, spool });
    } catch (error) {
      // Tell the waiting calls at once, so they take the normal path (which reports the error).
      await prefetcher.failPendingRequests(error);
      throw error;
    }
    try {
      quick?.start();
      await prefetcher.run(repo, start.name);
    } finally {
      quick?.stop();
      await repo.close();
    }
  } finally {
    await release();
    await prefetcher.clearHandledRequests().catch(() => {});
  }
  return 0;
}

class Prefetcher {
  private readonly ctx: CommandContext;
  private readonly spool: Spool;
  private repo!: Repository;
  /** Segment buffers and zstd contexts, reused from one download to the next. */
  private reads!: WalReadBuffers;
  /** Downloads into fetched/ running now, by name (window and requests share them). */
  private readonly downloads = new Map<string, Promise<void>>();
  /** Requests seen: name → token. A request is handled once per token. */
  private readonly handled = new Map<string, string>();
  private readonly serving = new Set<Promise<void>>();
  private readonly answeredMissing = new Set<string>();
  private wake: () => void = () => {};

  constructor(ctx: CommandContext, spool: Spool) {
    this.ctx = ctx;
    this.spool = spool;
  }

  async run(repo: Repository, start: string): Promise<void> {
    this.repo = repo;
    this.reads = new WalReadBuffers(repo.identity!.postgres.walSegmentSize);
    const watchers = this.watchSpool();
    try {
      // A position left by an earlier replay is not ours: start after `start`, follow changes.
      let recorded = await this.spool.readFetchPosition();
      let position = start;
      let filledFor: string | undefined;
      let fill: Promise<void> | undefined;
      let activeAt = Date.now();
      while (!this.ctx.signal.aborted && Date.now() - activeAt <= LINGER_MS) {
        const woken = new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, POLL_MS);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        if (await this.takeRequests()) activeAt = Date.now();
        const now = await this.spool.readFetchPosition();
        if (now !== recorded) {
          recorded = now;
          if (now) position = now;
        }
        if (position !== filledFor && !fill) {
          filledFor = position;
          const current = position;
          fill = this.fillWindow(current)
            .catch((error: unknown) => log.warn(`prefetch after ${current} failed; wal-fetch will download the segments itself`, { error: (error as Error).message }))
            .finally(() => (fill = undefined));
        }
        if (fill || this.serving.size > 0) activeAt = Date.now();
        await woken;
      }
      await fill;
      await Promise.allSettled(this.serving);
    } finally {
      for (const watcher of watchers) watcher.close();
      this.reads.close();
    }
  }

  /** Wakes the loop when a request arrives or the position changes (inotify; polling covers the rest). */
  private watchSpool(): FSWatcher[] {
    const watchers: FSWatcher[] = [];
    for (const directory of [this.spool.root, join(this.spool.root, 'requests')]) {
      try {
        const watcher = watch(directory, { persistent: false }, () => this.wake());
        watcher.on('error', () => {});
        watchers.push(watcher);
      } catch {
        // not there yet, or no inotify: polling only
      }
    }
    return watchers;
  }

  /** Starts serving the requests not seen yet; true when there was one. */
  private async takeRequests(): Promise<boolean> {
    const names = await this.spool.fetchRequestNames();
    for (const name of this.handled.keys()) if (!names.includes(name)) this.handled.delete(name); // done with
    let any = false;
    for (const name of names) {
      const token = await this.spool.readFetchRequest(name);
      if (!token || this.handled.get(name) === token || !parseWalFileName(name)) continue;
      this.handled.set(name, token);
      any = true;
      const serving = this.serve(name, token).finally(() => this.serving.delete(serving));
      this.serving.add(serving);
    }
    return any;
  }

  /** Puts `name` into fetched/, or answers why not. Never throws. */
  private async serve(name: string, token: string): Promise<void> {
    try {
      const running = this.downloads.get(name);
      if (running) return await running;
      if (await this.spool.hasFetched(name)) return; // stored meanwhile: the call takes it
      // Listed now, after the request was read: a "missing" is as fresh as the call's own listing.
      const stored = await findStoredWal(this.repo, name);
      if (!stored) {
        await this.spool.writeFetchAnswer(name, { token, kind: 'missing' });
        // Once per name at info: a standby waiting for the next segment asks every few seconds.
        (this.answeredMissing.has(name) ? log.debug : log.info)(`${name} is not in the archive (answered a request)`);
        this.answeredMissing.add(name);
        return;
      }
      if (!this.downloads.has(name)) await this.makeRoomFor(name);
      await this.download(stored);
    } catch (error) {
      await this.spool.writeFetchAnswer(name, { token, kind: 'failed', message: (error as Error).message }).catch(() => {});
      log.warn(`could not fetch ${name} for wal-fetch; it downloads it itself`, { error: (error as Error).message });
    }
  }

  /** Downloads one stored object into fetched/ (once: a second caller gets the same promise). */
  private download(object: StoredWalObject): Promise<void> {
    const existing = this.downloads.get(object.name);
    if (existing) return existing;
    const started = Date.now();
    const download = (async () => {
      // Verified before it is written (storeFetched makes it appear at once, complete).
      await this.reads.withContent(this.repo, object, (content) => this.spool.storeFetched(object.name, content));
      log.debug(`prefetched ${object.name}`, { ms: Date.now() - started });
    })().finally(() => this.downloads.delete(object.name));
    this.downloads.set(object.name, download);
    return download;
  }

  /** The `wal-prefetch` segment names after segment `position`; empty for other names. */
  private windowAfter(position: string): string[] {
    const after = parseWalFileName(position);
    if (after?.kind !== 'segment') return [];
    const segmentSize = this.repo.identity!.postgres.walSegmentSize;
    const first = segmentNumber(after, segmentSize) + 1;
    return Array.from({ length: this.ctx.loaded.config['wal-prefetch'] }, (_, i) => segmentName(after.timeline, first + i, segmentSize));
  }

  /**
   * Removes from fetched/ what is not in `keep`, nor asked for, nor being downloaded (a temporary
   * file of a download running now included; one of a killed run is removed). Returns the names present.
   */
  private async prune(keep: ReadonlySet<string>): Promise<Set<string>> {
    const fetchedDirectory = join(this.spool.root, 'fetched');
    const present = new Set<string>();
    for (const entry of await readdir(fetchedDirectory)) {
      const name = entry.split('.tmp-')[0]!;
      if (this.downloads.has(name) || this.handled.has(name)) continue;
      if (keep.has(entry)) present.add(entry);
      else await rm(join(fetchedDirectory, entry), { force: true }); // consumed, stale, or a temp file of a killed run
    }
    return present;
  }

  /** Before a requested segment is stored: what is not in its window goes (replay jumped). */
  private async makeRoomFor(name: string): Promise<void> {
    if (parseWalFileName(name)?.kind === 'segment') await this.prune(new Set(this.windowAfter(name)));
  }

  /** Makes fetched/ hold the `wal-prefetch` segments after `position` (those the archive has), and nothing else. */
  private async fillWindow(position: string): Promise<void> {
    const wanted = this.windowAfter(position);
    if (wanted.length === 0) return;
    const wantedSet = new Set(wanted);
    const present = await this.prune(wantedSet);
    const missing = wanted.filter((name) => !present.has(name) && !this.downloads.has(name));
    if (missing.length === 0) return;

    const available = new Map<string, StoredWalObject>();
    for (const directory of new Set(missing.map(walDirectoryOf))) {
      for (const object of await listWalObjects(this.repo, directory)) if (wantedSet.has(object.name)) available.set(object.name, object);
    }
    const downloads = missing.filter((name) => available.has(name));
    const results = await mapSettled(downloads, this.ctx.loaded.config['process-max'], (name) => this.download(available.get(name)!));
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length > 0) log.warn(`prefetch: ${failed.length} segment(s) failed; wal-fetch will download them itself`, { error: ((failed[0] as PromiseRejectedResult).reason as Error).message });
  }

  /** When the store cannot be opened: every pending request is answered "failed". */
  async failPendingRequests(error: unknown): Promise<void> {
    for (const name of await this.spool.fetchRequestNames()) {
      const token = await this.spool.readFetchRequest(name);
      if (token) await this.spool.writeFetchAnswer(name, { token, kind: 'failed', message: (error as Error).message }).catch(() => {});
    }
  }

  /** At exit: requests this process answered whose call is gone (killed) would linger. */
  async clearHandledRequests(): Promise<void> {
    for (const [name, token] of this.handled) {
      if ((await this.spool.readFetchRequest(name)) === token) await this.spool.clearFetchRequest(name);
    }
  }
}
