/**
 * pgark backup: a base backup of the running cluster, logically full, physically incremental.
 *
 * 1. pg_backup_start on a connection held open throughout; the base for the incremental is
 *    the newest complete backup of this cluster on the same timeline (none: a full backup).
 *    While its checkpoint runs, the backups are listed and the WAL block map of the stretch
 *    archived so far is loaded (wal-block-map.ts) for the base that will most likely be chosen.
 * 2. Walk PGDATA and tablespaces in a fixed order; back up files in parallel (process-max):
 *    relation pages whose LSN predates the base's start are referenced, everything new is
 *    compressed, encrypted and appended to packs uploaded in the background. The manifest is
 *    streamed as files complete, in walk order (a bounded reorder window).
 * 3. pg_backup_stop (not waiting for the archiver); wait until the WAL from the start to the stop
 *    segment is in the repository.
 * 4. Wait for every pack and the manifest to be stored, then write backup.json: only now does
 *    the backup exist. An interrupted backup leaves no summary, but the checkpoints it wrote
 *    every backup-checkpoint-interval let the next backup resume it (repo/backup-resume.ts).
 */
import type { CommandContext } from '../cli/context.ts';
import { PgarkError } from '../errors.ts';
import { startBackup, stopBackup, walPosition } from '../postgres/backup-api.ts';
import { clusterInfo, connect } from '../postgres/connection.ts';
import { comparePaths, walkDataDirectory, type DataEntry } from '../postgres/pgdata.ts';
import { parseLsn, segmentName, segmentNumberOfLsn } from '../postgres/wal.ts';
import { backupFile, BLOCKS_PER_BLOB, BufferPool, type FileBackupResult } from '../repo/backup-files.ts';
import { DirectReads } from '../util/direct-io.ts';
import { CheckpointWriter, findResumableBackup, readCheckpointEntries, removeResumeRecords, writeBackupStart, type ResumableBackup } from '../repo/backup-resume.ts';
import { listBackups, ManifestWriter, readManifest, writeBackupSummary, type BackupSummary, type ManifestEntry } from '../repo/backup-manifest.ts';
import { walDirectoryOf, walObjectPrefix } from '../repo/layout.ts';
import { suffixOf } from '../pipeline/object-format.ts';
import { PACK_TARGET_SIZE, PackWriter } from '../repo/packs.ts';
import { RepositoryLock } from '../repo/lock.ts';
import { Repository } from '../repo/repository.ts';
import { listWalObjects } from '../repo/wal-archive.ts';
import { ChangedBlocks, changedBlocksSince, WalSummaryPrefetch } from '../repo/wal-block-map.ts';
import { join } from 'node:path';
import { Semaphore } from '../util/concurrency.ts';
import { log } from '../util/log.ts';
import { createProgress } from '../util/progress.ts';
import { formatBytes, formatDuration } from '../util/units.ts';

type FileEntry = Extract<ManifestEntry, { t: 'f' }>;

/** Streams the base backup's manifest in walk order; `seek` advances to a path. */
class BaseManifestCursor {
  private readonly iterator: AsyncIterator<{ t: string; p?: string }>;
  private current: FileEntry | undefined;
  private done = false;

  constructor(entries: AsyncIterable<{ t: string; p?: string }>) {
    this.iterator = entries[Symbol.asyncIterator]();
  }

  /** One string per pack id: JSON.parse gives each extent its own copy (100,000s in a fragmented segment). */
  private readonly packIds = new Map<string, string>();

  private shared(entry: FileEntry): FileEntry {
    for (const extent of entry.x) {
      const id = this.packIds.get(extent[2]);
      if (id === undefined) this.packIds.set(extent[2], extent[2]);
      else extent[2] = id;
    }
    return entry;
  }

  async seek(path: string): Promise<FileEntry | undefined> {
    for (;;) {
      if (this.current) {
        const order = comparePaths(this.current.p, path);
        if (order === 0) return this.current;
        if (order > 0) return undefined;
      }
      if (this.done) return undefined;
      const next = await this.iterator.next();
      if (next.done) {
        this.done = true;
        this.current = undefined;
        return undefined;
      }
      if (next.value.t === 'f') this.current = this.shared(next.value as FileEntry);
    }
  }
}

/** Files at least this large are backed up one at a time (see the walk below). */
const LARGE_FILE_BYTES = 64 * 1024 * 1024;

function backupId(type: 'full' | 'incremental', at: Date): string {
  return at.toISOString().replace(/[-:]/g, '').slice(0, 15) + (type === 'full' ? 'F' : 'I');
}

export async function run(ctx: CommandContext): Promise<number> {
  const started = Date.now();
  /** Debug log of a phase's end, in ms since the command began (the phases' times are what an incremental's fixed cost is made of). */
  const phase = (message: string, fields?: Record<string, unknown>): void => log.debug(message, { ms: Date.now() - started, ...fields });
  phase('backup command began', { processMs: Math.round(performance.now()) });
  const { config } = ctx.loaded;
  const repo = await Repository.open(ctx.loaded, { requireInit: true });
  const identity = repo.identity!;
  // Shared: backups may run side by side, but never during expire (which could delete the base's packs).
  let lock: RepositoryLock;
  try {
    lock = await RepositoryLock.acquire(repo, 'shared', 'pgark backup', { leaseMs: config['lock-lease'], waitMs: config['lock-wait'], signal: ctx.signal });
  } catch (error) {
    await repo.close();
    throw error;
  }
  const client = await connect(config).catch(async (error: unknown) => {
    await lock.release();
    await repo.close();
    throw error;
  });
  let backupRunning = false;
  let packs: PackWriter | undefined;
  let manifest: ManifestWriter | undefined;
  phase('repository locked, connected');
  try {
    const info = await clusterInfo(client);
    if (info.systemIdentifier !== identity.postgres.systemIdentifier) {
      throw new PgarkError('REPO_MISMATCH', `the database is system ${info.systemIdentifier}, the repository belongs to ${identity.postgres.systemIdentifier}`, { hint: 'point repo at this cluster\'s repository' });
    }
    const pgdata = config.pgdata ?? info.dataDirectory;
    if (!pgdata) throw new PgarkError('CONFIG', 'cannot tell where the data directory is', { hint: 'set pgdata (or PGDATA), or connect as a user allowed to read data_directory' });
    const settings = (await client.query<{ b: string; c: string }>("SELECT current_setting('block_size') AS b, current_setting('data_checksums') AS c")).rows[0]!;
    const blockSize = Number(settings.b);
    const dataChecksums = settings.c === 'on';

    phase('cluster settings read');
    // While the start checkpoint runs (seconds on a busy server): the backups are listed, and
    // the WAL block map of the base they most likely give is loaded up to where the WAL is now.
    const listed = listBackups(repo);
    listed.catch(() => {}); // awaited after the start
    const baseFor = (all: BackupSummary[], timeline: number, before: bigint): BackupSummary | undefined => ctx.options.full
      ? undefined
      : all.filter((b) => b.systemIdentifier === identity.postgres.systemIdentifier && b.timeline === timeline && parseLsn(b.startLsn) < before).at(-1);
    let prefetch: Promise<WalSummaryPrefetch | undefined> = Promise.resolve(undefined);
    if (!ctx.options.full && config['wal-block-map']) {
      const now = await walPosition(client).catch(() => undefined);
      if (now) {
        prefetch = listed.then((all) => {
          const guess = baseFor(all, now.timeline, now.lsn);
          return guess ? new WalSummaryPrefetch(repo, { fromLsn: parseLsn(guess.startLsn), toLsn: now.lsn, timeline: now.timeline }) : undefined;
        }, () => undefined);
      }
    }
    const label = `pgark ${new Date().toISOString()}`;
    const start = await startBackup(client, info.majorVersion, label);
    backupRunning = true;
    phase('pg_backup_start returned');
    const startLsn = parseLsn(start.startLsn);
    // Taken after the start checkpoint: a transaction at or above this xmin commits after the
    // backup's redo point, so a restore to it may start from this backup (restore.ts).
    const startXmin = (await client.query<{ xmin: string }>('SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin')).rows[0]!.xmin;

    const all = await listed;
    const base = baseFor(all, start.timeline, startLsn);
    const type = base ? 'incremental' : 'full';
    // Ids have one-second resolution; two backups in one second get consecutive seconds.
    const taken = new Set(all.map((b) => b.id.slice(0, 15)));
    let idTime = start.startedAt.getTime();
    while (taken.has(backupId(type, new Date(idTime)).slice(0, 15))) idTime += 1000;
    const id = backupId(type, new Date(idTime));
    // --full stands alone: it neither references the last backup nor resumes an interrupted one.
    const resumable: ResumableBackup | undefined = ctx.options.full ? undefined : await findResumableBackup(repo, { newerThan: all.at(-1)?.id, systemIdentifier: info.systemIdentifier, timeline: start.timeline });
    log.info(`backup ${id} started`, { type, base: base?.id, resumes: resumable?.start.id, startLsn: start.startLsn, timeline: start.timeline, pgdata });
    phase('base chosen', { backups: all.length });
    await writeBackupStart(repo, { format: 1, id, systemIdentifier: info.systemIdentifier, timeline: start.timeline, startLsn: start.startLsn, startedAt: start.startedAt.toISOString() });

    phase('backup start recorded');
    const format = await repo.writeFormat();
    packs = new PackWriter(repo, suffixOf(format), { targetSize: PACK_TARGET_SIZE, maxUploads: 2, signal: ctx.signal });
    manifest = await ManifestWriter.open(repo, id, format, ctx.signal);
    const checkpoints = new CheckpointWriter(repo, id, format, packs, config['backup-checkpoint-interval']);
    const cursor = base ? new BaseManifestCursor(readManifest(repo, base) as AsyncIterable<{ t: string; p?: string }>) : undefined;
    const resumeCursor = resumable ? new BaseManifestCursor(readCheckpointEntries(repo, resumable)) : undefined;
    // Files in flight each hold up to two buffers (one being read, one blob being filled), encoders one each.
    const maxInFlight = Math.max(2, config['process-max'] * 2);
    const fileContext = {
      blockSize,
      encoders: new Semaphore(config['process-max']),
      buffers: new BufferPool(BLOCKS_PER_BLOB * blockSize),
      reads: new DirectReads(config['backup-direct-io']),
      // Whole reads of data compress at a faster default level than the rest (codec.ts).
      format: await repo.writeFormat('backup data'),
      scatteredFormat: format,
      packs,
      baseStartLsn: base ? Number(parseLsn(base.startLsn)) : undefined,
      verifyChecksumsBefore: dataChecksums ? Number(startLsn) : undefined,
      walChanges: undefined as ChangedBlocks | undefined,
      signal: ctx.signal,
    };
    // Which blocks the WAL changed since the base began: relation files then read only those.
    if (base && config['wal-block-map']) {
      const changes = await changedBlocksSince(repo, {
        fromLsn: parseLsn(base.startLsn),
        toLsn: startLsn,
        timeline: start.timeline,
        walDirectory: join(pgdata, 'pg_wal'),
        concurrency: config['process-max'],
      }, await prefetch);
      if (changes instanceof ChangedBlocks) fileContext.walChanges = changes;
      else log.info(`this incremental reads every page (no WAL block map: ${changes.reason})`);
      phase('WAL block map loaded');
    }
    // A file the interrupted backup stored is compared with its checkpoint entry instead.
    const resumeContext = resumable ? { ...fileContext, baseStartLsn: Number(parseLsn(resumable.start.startLsn)) } : undefined;

    const progress = createProgress(`backup ${id}`);
    const totals = { files: 0, size: 0, readBytes: 0, blocksStored: 0, blocksReferenced: 0 };
    const checksumErrors: { path: string; block: number }[] = [];
    const tablespaces: { oid: string; location: string }[] = [];

    // Files are backed up concurrently; manifest lines are written in walk order.
    const window: Promise<ManifestEntry | undefined>[] = [];
    // The entry is out of reach once its line is written: a fragmented segment's extent list
    // (70,000 extents, ~7 MiB as objects) is garbage by the time the checkpoint that its 4 MB
    // line usually triggers copies and compresses that line.
    const writeNext = async (): Promise<{ file: boolean; line: Buffer[] } | undefined> => {
      const entry = await window.shift()!;
      return entry ? { file: entry.t === 'f', line: await manifest!.write(entry) } : undefined;
    };
    const drainOne = async () => {
      const written = await writeNext();
      if (!written) return;
      if (written.file) checkpoints.add(written.line);
      await checkpoints.maybeCheckpoint();
    };
    for await (const item of walkDataDirectory(pgdata)) {
      ctx.signal.throwIfAborted();
      let pending: Promise<ManifestEntry | undefined>;
      if (item.type === 'dir') pending = Promise.resolve({ t: 'd', p: item.path, m: item.mode });
      else if (item.type === 'link') {
        if (item.path.startsWith('pg_tblspc/')) tablespaces.push({ oid: item.path.slice('pg_tblspc/'.length), location: item.target });
        pending = Promise.resolve({ t: 'l', p: item.path, target: item.target });
      } else {
        const file = item as Extract<DataEntry, { type: 'file' }>;
        // Large files one at a time (their blobs are still encoded in parallel), each once the
        // entries before it are written: the extent list of a fragmented 1 GiB segment runs to
        // 100,000s of entries, tens of MiB as objects, and those of the base and of this backup
        // are what memory would otherwise grow with.
        if (file.size >= LARGE_FILE_BYTES) while (window.length > 0) await drainOne();
        const resumedEntry = resumeCursor ? await resumeCursor.seek(file.path) : undefined;
        const baseEntry = resumedEntry ?? (cursor ? await cursor.seek(file.path) : undefined);
        pending = backupFile(file, baseEntry, resumedEntry ? resumeContext! : fileContext).then((result: FileBackupResult) => {
          totals.files++;
          totals.size += result.bytesRead;
          totals.readBytes += result.readBytes;
          totals.blocksStored += result.blocksStored;
          totals.blocksReferenced += result.blocksReferenced;
          for (const block of result.checksumErrors) {
            if (checksumErrors.length < 20) log.warn(`page checksum failure: block ${block} of ${file.path}`, { hint: 'the page is corrupt on disk; the backup stores it as it is' });
            if (checksumErrors.length < 1000) checksumErrors.push({ path: file.path, block });
          }
          progress.add(result.bytesRead);
          return result.entry;
        }, (error: unknown) => {
          // A file removed while we walk (a dropped table) is not needed: WAL replay drops it.
          if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
          throw error;
        });
      }
      pending.catch(() => {}); // awaited in order below
      window.push(pending);
      if (window.length >= maxInFlight) await drainOne();
    }
    while (window.length > 0) await drainOne();
    progress.done();
    phase('files read', { files: totals.files, read: formatBytes(totals.readBytes) });
    // No blob comes any more: the last pack is stored (and the last checkpoint written) while
    // the backup stops and its WAL is archived, not after.
    const packsStored = packs.finish().then(() => checkpoints.finish());
    packsStored.catch(() => {}); // awaited below

    const stop = await stopBackup(client, info.majorVersion);
    phase('pg_backup_stop returned');
    backupRunning = false;
    await manifest.write({ t: 'end', backupLabel: stop.backupLabel, tablespaceMap: stop.tablespaceMap });

    const segmentSize = identity.postgres.walSegmentSize;
    const stopLsn = parseLsn(stop.stopLsn);
    const startWal = segmentName(start.timeline, segmentNumberOfLsn(startLsn, segmentSize), segmentSize);
    const stopWal = segmentName(start.timeline, segmentNumberOfLsn(stopLsn - 1n, segmentSize), segmentSize);
    const manifestStored = manifest.finish();
    manifestStored.catch(() => {}); // awaited below
    await waitForWal(repo, startWal, stopWal, segmentSize, config['archive-timeout'], ctx.signal, info.inRecovery);
    phase('the WAL the backup needs is archived');

    // (no checkpoint may be stored after the resume records are removed below)
    await packsStored;
    const manifestBytes = await manifestStored;
    phase('packs and manifest stored');
    const summary: BackupSummary = {
      format: 1,
      id,
      type,
      base: base?.id ?? null,
      ...(resumable ? { resumedFrom: resumable.start.id } : {}),
      systemIdentifier: info.systemIdentifier,
      pgMajor: info.majorVersion,
      timeline: start.timeline,
      startLsn: start.startLsn,
      stopLsn: stop.stopLsn,
      startWal,
      stopWal,
      startedAt: start.startedAt.toISOString(),
      startXmin,
      stoppedAt: stop.stoppedAt.toISOString(),
      blockSize,
      fromStandby: info.inRecovery,
      manifestKey: manifest.key,
      packs: packs.packs,
      files: totals.files,
      size: totals.size,
      storedBytes: packs.storedBytes + manifestBytes,
      blocksStored: totals.blocksStored,
      blocksReferenced: totals.blocksReferenced,
      readBytes: totals.readBytes,
      ...(fileContext.walChanges ? { walBlockMap: true } : {}),
      durationMs: Date.now() - started,
      tablespaces,
      keep: Boolean(ctx.options.keep),
      pageChecksumErrors: checksumErrors,
    };
    // A lapsed lease means an expire may have run meanwhile and deleted what this backup references.
    lock.assertHeld(`recording backup ${id}`);
    await writeBackupSummary(repo, summary);
    phase('backup recorded');
    await removeResumeRecords(repo, id, resumable?.start.id);
    const seconds = summary.durationMs / 1000;
    log.info(`backup ${id} complete`, {
      type,
      resumedFrom: summary.resumedFrom,
      duration: formatDuration(summary.durationMs),
      size: formatBytes(summary.size),
      read: formatBytes(totals.readBytes),
      stored: formatBytes(summary.storedBytes),
      files: summary.files,
      blocksStored: summary.blocksStored,
      blocksReferenced: summary.blocksReferenced,
      rate: `${formatBytes(summary.size / Math.max(seconds, 0.001))}/s`,
      peakRss: formatBytes(process.resourceUsage().maxRSS * 1024),
      checksums: dataChecksums ? `${checksumErrors.length} bad page(s)` : 'off',
    });
    if (ctx.json) process.stdout.write(JSON.stringify(summary) + '\n');
    if (config['expire-after-backup']) {
      await lock.release();
      await expireAfterBackup(repo, ctx, id);
    }
    return 0;
  } catch (error) {
    manifest?.abort(error as Error);
    await packs?.settle();
    if (backupRunning) await stopBackup(client, repo.identity!.postgres.majorVersion).catch(() => {});
    throw error;
  } finally {
    await client.end().catch(() => {});
    await lock.release();
    await repo.close();
  }
}

/** expire-after-backup: the backup is recorded; an expire failure is reported, not hidden. */
async function expireAfterBackup(repo: Repository, ctx: CommandContext, id: string): Promise<void> {
  const { expire } = await import('../repo/expire.ts');
  const { expireOptionsOf } = await import('./expire.ts');
  try {
    const report = await expire(repo, expireOptionsOf(ctx.loaded.config, false, ctx.signal));
    log.info('expire after backup complete', { expired: report.expired.length, retained: report.retained.length, freed: formatBytes(report.deleted.bytes) });
  } catch (error) {
    const cause = error as PgarkError;
    // Another backup (or expire) holds the lock: nothing is wrong, a later expire catches up.
    if (cause.code === 'LOCKED') {
      log.warn(`expire after backup ${id} skipped: ${cause.message}`, { hint: 'the next backup\'s expire (or pgark expire) will delete what retention no longer needs' });
      return;
    }
    throw new PgarkError(cause.code ?? 'INTERNAL', `backup ${id} is complete, but expire after it failed: ${cause.message}`, { hint: cause.hint, cause });
  }
}

/** Waits until every segment from startWal to stopWal is in the archive. */
async function waitForWal(repo: Repository, startWal: string, stopWal: string, segmentSize: number, timeoutMs: number, signal: AbortSignal, fromStandby: boolean): Promise<void> {
  const { parseWalFileName, segmentNumber } = await import('../postgres/wal.ts');
  const first = parseWalFileName(startWal)!;
  const last = parseWalFileName(stopWal)!;
  const needed: string[] = [];
  for (let n = segmentNumber(first, segmentSize); n <= segmentNumber(last, segmentSize); n++) needed.push(segmentName(first.timeline, n, segmentSize));
  const deadline = Date.now() + timeoutMs;
  // The archiver is woken by the WAL switch at backup stop: the segment usually arrives within
  // a fraction of a second (one wal-push, or the background pusher). A listing of one WAL
  // directory every 25 ms for the first second (doubling from 50 ms, the wait was seen up to
  // ~200 ms after the segment arrived: a fifth of a small incremental), then fewer.
  const waitStarted = Date.now();
  let pause = 25;
  const present = new Set<string>(); // (an archived segment stays: expire waits for the lock)
  for (;;) {
    let missing = needed.filter((name) => !present.has(name));
    // A few segments are looked for by name (a listing of one object: the file store stats
    // only that one, not the directory's 256 segments and their block maps), more by directory.
    const prefixes = missing.length <= 4 ? missing.map(walObjectPrefix) : [...new Set(missing.map(walDirectoryOf))];
    for (const prefix of prefixes) for (const object of await listWalObjects(repo, prefix)) present.add(object.name);
    missing = needed.filter((name) => !present.has(name));
    if (missing.length === 0) return;
    if (Date.now() > deadline) {
      throw new PgarkError('STORAGE', `the WAL this backup needs is not archived: ${missing[0]}${missing.length > 1 ? ` and ${missing.length - 1} more` : ''} missing after ${Math.round(timeoutMs / 1000)}s`, {
        // A standby cannot switch WAL: its stop segment is archived once the primary fills it.
        hint: fromStandby
          ? 'backing up a standby: the last segment is archived only when the primary switches WAL; run SELECT pg_switch_wal() on the primary (or set its archive_timeout) while the backup waits; the backup was not recorded'
          : "check that archive_command = 'pgark wal-push %p' works (pgark check; pg_stat_archiver); the backup was not recorded",
      });
    }
    signal.throwIfAborted();
    await new Promise((resolve) => setTimeout(resolve, pause));
    if (Date.now() - waitStarted > 1000) pause = Math.min(pause * 2, 1000);
  }
}
