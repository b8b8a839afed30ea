/**
 * Expire: applies the retention policy (retention.ts) to a repository, under the exclusive
 * repository lock (lock.ts), so no backup runs meanwhile; wal-push goes on (it only adds
 * segments newer than anything deleted here).
 *
 * 1. Plan (read only): list backups/, read the summaries and keep markers, decide what stays.
 *    Incomplete backups (a backups/<id>/ prefix without backup.json: killed) are garbage,
 *    except the newest one when it is newer than the newest complete backup (a resumable
 *    backup's checkpoints, partial-NNNNNN.jsonl, to be resumed).
 * 2. Mark: stream the manifest of every retained backup and the checkpoints of the kept
 *    incomplete one, collecting the pack ids they reference (a set of pack ids, never of blocks).
 * 3. Sweep, in this order, each step only while the lease is held: the summaries of expired
 *    backups (the backup stops existing at once), the rest of their objects and those of
 *    garbage incomplete backups, unreferenced packs, WAL no retained backup or the window
 *    needs, keep markers of deleted backups, multipart uploads open for over a day and (file
 *    repositories) temporary files of killed writers last written over a day ago.
 * 4. Repack (repack.ts): packs mostly made of blobs no retained backup references get their
 *    live blobs copied into new packs, and the backups using them a new generation of manifest
 *    and summary. Superseded generations and the old packs are deleted by a later run, once
 *    the new summary is older than REPACK_GRACE_MS (step 3 of that run).
 * An expire interrupted anywhere leaves a repository whose retained backups are whole; the
 * next run removes what is left. No object is ever rewritten.
 */
import { PgarkError } from '../errors.ts';
import type { ObjectInfo } from '../storage/types.ts';
import { storageRequests } from '../storage/metrics.ts';
import { mapSettled } from '../util/concurrency.ts';
import { log } from '../util/log.ts';
import { latestSummaryKeys, readBackupSummary, readManifestObject, type BackupSummary } from './backup-manifest.ts';
import { isKept, readKeepMarkers } from './keep.ts';
import { BACKUPS_PREFIX, backupIdOfKey, isValidPackId, parseBackupCheckpointKey, parseBackupManifestKey, parseBackupSummaryKey, PACKS_PREFIX } from './layout.ts';
import { RepositoryLock, type LockOptions } from './lock.ts';
import type { Repository } from './repository.ts';
import { decideRetention, hasPolicy, walNeeded, type RetainReason, type RetentionPolicy } from './retention.ts';
import { addLiveBlob, repack, REPACK_GRACE_MS, repackCandidates, summarize, type LiveBlobs, type RepackSummary } from './repack.ts';
import { listWalObjects } from './wal-archive.ts';
import { listWalSummaries } from './wal-block-map.ts';
import { byCodeUnits } from '../util/order.ts';

/** Unfinished uploads and temporary files older than this belong to writers that died. */
const STALE_UPLOAD_MS = 24 * 3600 * 1000;

export interface ExpireOptions {
  policy: RetentionPolicy;
  dryRun: boolean;
  /** The clock the window is measured against (PGARK_TEST_NOW in tests). */
  now: Date;
  lock: LockOptions;
  concurrency: number;
  /** Repack packs with at least this percentage of dead bytes; 0 = never. */
  repackThreshold: number;
}

interface Deletion {
  count: number;
  bytes: number;
}

export interface ExpireReport {
  dryRun: boolean;
  now: string;
  windowStart: string | null;
  retained: { id: string; type: string; stoppedAt: string; reasons: RetainReason[] }[];
  expired: { id: string; type: string; stoppedAt: string }[];
  incomplete: { deleted: string[]; kept: string | null };
  deleted: { backupObjects: Deletion; packs: Deletion; wal: Deletion; walBlockMaps: Deletion; keepMarkers: number; bytes: number };
  remaining: { packs: Deletion; wal: Deletion };
  /** What repacking did (or, in a dry run, would do). */
  repack: RepackSummary;
  abortedUploads: number;
  /** Temporary files of killed writers (file repositories), removed (or, in a dry run, to be). */
  tempFiles: Deletion & { keys: string[] };
  durationMs: number;
  /** S3 requests sent (null for other stores). */
  requests: number | null;
}

const sum = (objects: readonly { size: number }[]): Deletion => ({ count: objects.length, bytes: objects.reduce((n, o) => n + o.size, 0) });

/** The pack id of a key under packs/, or undefined for anything else (left alone). */
function packIdOfKey(key: string): string | undefined {
  const match = /^packs\/[0-9a-f]{2}\/([^/]+)$/.exec(key);
  return match && isValidPackId(match[1]!) && key.slice(PACKS_PREFIX.length, PACKS_PREFIX.length + 2) === match[1]!.slice(0, 2) ? match[1] : undefined;
}

export async function expire(repo: Repository, options: ExpireOptions): Promise<ExpireReport> {
  const started = Date.now();
  const requestsBefore = storageRequests.count;
  if (!hasPolicy(options.policy)) {
    throw new PgarkError('CONFIG', 'no retention policy: expire would not know what to keep', {
      hint: 'set retain N, retain-full N and/or retain-window (e.g. 14d), in the config file, the environment or as --retain-window 14d',
    });
  }
  const identity = repo.identity!;
  // A dry run changes nothing, so it takes no lock and never blocks a backup.
  const lock = options.dryRun ? undefined : await RepositoryLock.acquire(repo, 'exclusive', 'pgark expire', options.lock);
  try {
    // ---- 1. plan ----
    const objectsOf = new Map<string, ObjectInfo[]>();
    for await (const object of repo.storage.list(BACKUPS_PREFIX)) {
      const id = backupIdOfKey(object.key);
      if (!id) continue;
      objectsOf.set(id, [...(objectsOf.get(id) ?? []), object]);
    }
    const latest = latestSummaryKeys([...objectsOf.values()].flat().map((o) => o.key));
    const completeIds = [...latest.keys()].sort();
    const backups: BackupSummary[] = [];
    for (const id of completeIds) backups.push(await readBackupSummary(repo, latest.get(id)!.key));
    const markers = await readKeepMarkers(repo);
    const decision = decideRetention(backups, options.policy, options.now, (b) => isKept(b, markers));
    const retained = backups.filter((b) => decision.retained.has(b.id));

    const stamp = (id: string) => id.slice(0, 15);
    const newestComplete = completeIds.at(-1);
    const incompleteIds = [...objectsOf.keys()].filter((id) => !completeIds.includes(id)).sort((a, b) => byCodeUnits(stamp(a), stamp(b)));
    const candidate = incompleteIds.at(-1);
    const keptIncomplete = candidate && (!newestComplete || stamp(candidate) > stamp(newestComplete)) ? candidate : undefined;
    const garbageIncomplete = incompleteIds.filter((id) => id !== keptIncomplete);

    // Generations (layout.ts) of each complete backup: summaries and manifests older than the
    // newest summary are superseded, deleted once it is older than the grace period (a reader
    // that started before the repack may still be reading them) and marked until then; manifests
    // newer than it are what a killed repack left: garbage.
    const superseded: ObjectInfo[] = [];
    const supersededInGrace: ObjectInfo[] = [];
    const orphanManifests: ObjectInfo[] = [];
    const nextGeneration = new Map<string, number>();
    for (const id of completeIds) {
      const newest = latest.get(id)!;
      const newestSummary = objectsOf.get(id)!.find((o) => o.key === newest.key)!;
      const graceOver = newestSummary.lastModified.getTime() + REPACK_GRACE_MS <= options.now.getTime();
      let highest = newest.generation;
      for (const object of objectsOf.get(id)!) {
        const generation = (parseBackupSummaryKey(object.key) ?? parseBackupManifestKey(object.key))?.generation;
        if (generation === undefined) continue;
        highest = Math.max(highest, generation);
        if (generation > newest.generation) orphanManifests.push(object);
        else if (generation < newest.generation) (graceOver ? superseded : supersededInGrace).push(object);
      }
      nextGeneration.set(id, highest + 1);
    }

    // ---- 2. mark ----
    const referenced = new Set<string>();
    /** Blobs of the retained backups' current manifests (what repacking must keep). */
    const live: LiveBlobs = new Map();
    const packsOfBackup = new Map<string, Set<string>>();
    /** Packs the kept unfinished backup's checkpoints reference (not worth repacking). */
    const pinned = new Set<string>();
    type Source = { key: string; what: string; requireEnd: boolean; current?: string; checkpoint?: boolean };
    const sources: Source[] = retained.map((b) => ({ key: b.manifestKey, what: `backup ${b.id}`, requireEnd: true, current: b.id }));
    for (const o of supersededInGrace) {
      if (parseBackupManifestKey(o.key) && decision.retained.has(backupIdOfKey(o.key)!)) sources.push({ key: o.key, what: `backup ${backupIdOfKey(o.key)} (superseded generation)`, requireEnd: true });
    }
    if (keptIncomplete) {
      for (const o of objectsOf.get(keptIncomplete)!) if (parseBackupCheckpointKey(o.key)) sources.push({ key: o.key, what: `the unfinished backup ${keptIncomplete}`, requireEnd: false, checkpoint: true });
    }
    const trackLive = options.repackThreshold > 0;
    const marked = await mapSettled(sources, options.concurrency, async (source) => {
      const packs = new Set<string>();
      for await (const entry of readManifestObject(repo, source.key, source.what, { requireEnd: source.requireEnd })) {
        if (entry.t !== 'f') continue;
        for (const extent of entry.x) {
          referenced.add(extent[2]);
          if (source.checkpoint) pinned.add(extent[2]);
          if (source.current && trackLive) {
            packs.add(extent[2]);
            addLiveBlob(live, extent);
          }
        }
      }
      if (source.current && trackLive) packsOfBackup.set(source.current, packs);
    });
    const failed = marked.find((r) => r.status === 'rejected');
    if (failed) {
      // Without every reference known, no pack may go.
      const error = (failed as PromiseRejectedResult).reason as Error;
      throw new PgarkError(error instanceof PgarkError ? error.code : 'STORAGE', `cannot read every retained manifest, nothing was deleted: ${error.message}`, { hint: (error as PgarkError).hint, cause: error });
    }

    // ---- what goes ----
    const expiredBackupObjects = decision.expired.flatMap((b) => objectsOf.get(b.id)!);
    const summaries = expiredBackupObjects.filter((o) => parseBackupSummaryKey(o.key)).map((o) => o.key);
    const retainedSuperseded = superseded.filter((o) => decision.retained.has(backupIdOfKey(o.key)!));
    const orphans = orphanManifests.filter((o) => decision.retained.has(backupIdOfKey(o.key)!));
    const garbageObjects = garbageIncomplete.flatMap((id) => objectsOf.get(id)!);

    const deadPacks: ObjectInfo[] = [];
    const livePacks: ObjectInfo[] = [];
    const packSizes = new Map<string, number>();
    for await (const object of repo.storage.list(PACKS_PREFIX)) {
      const packId = packIdOfKey(object.key);
      if (!packId) continue;
      (referenced.has(packId) ? livePacks : deadPacks).push(object);
      packSizes.set(packId, object.size);
    }
    const candidates = repackCandidates(live, packSizes, options.repackThreshold, pinned);
    const repacked = new Set(candidates.map((c) => c.packId));
    const toRewrite = retained
      .filter((b) => [...(packsOfBackup.get(b.id) ?? [])].some((p) => repacked.has(p)))
      .map((summary) => ({ summary, generation: nextGeneration.get(summary.id)! }));
    for (const packId of [...live.keys()]) if (!repacked.has(packId)) live.delete(packId); // only the candidates' blobs are needed now

    const wal = await listWalObjects(repo);
    // With no complete backup, no WAL is known to be useless: a first backup may need it.
    const needed = backups.length > 0 ? walNeeded(backups, decision, identity.postgres.walSegmentSize) : () => true;
    const deadWal = wal.filter((o) => !needed(o.name));
    const liveWal = wal.filter((o) => needed(o.name));
    // Block maps go with their segment (and those of segments no longer archived at all).
    const liveSegments = new Set(liveWal.map((o) => `${o.name}-${o.sha256}`));
    const deadBlockMaps = (await listWalSummaries(repo)).filter((o) => !liveSegments.has(`${o.name}-${o.sha256}`));

    const existing = new Set([...completeIds.filter((id) => decision.retained.has(id)), ...(keptIncomplete ? [keptIncomplete] : [])]);
    const deadMarkers = [...markers.keys].filter(([id]) => !existing.has(id)).flatMap(([, keys]) => keys);
    const staleBefore = new Date(options.now.getTime() - STALE_UPLOAD_MS);
    const tempFiles = (await repo.storage.staleTempFiles?.(staleBefore)) ?? [];

    const report: ExpireReport = {
      dryRun: options.dryRun,
      now: options.now.toISOString(),
      windowStart: decision.windowStart ?? null,
      retained: retained.map((b) => ({ id: b.id, type: b.type, stoppedAt: b.stoppedAt, reasons: decision.retained.get(b.id)! })),
      expired: decision.expired.map((b) => ({ id: b.id, type: b.type, stoppedAt: b.stoppedAt })),
      incomplete: { deleted: garbageIncomplete, kept: keptIncomplete ?? null },
      deleted: {
        backupObjects: sum([...expiredBackupObjects, ...garbageObjects, ...retainedSuperseded, ...orphans]),
        packs: sum(deadPacks),
        wal: sum(deadWal),
        walBlockMaps: sum(deadBlockMaps),
        keepMarkers: deadMarkers.length,
        bytes: sum([...expiredBackupObjects, ...garbageObjects, ...retainedSuperseded, ...orphans, ...deadPacks, ...deadWal, ...deadBlockMaps, ...tempFiles]).bytes,
      },
      remaining: { packs: sum(livePacks), wal: sum(liveWal) },
      repack: summarize(candidates, toRewrite.length),
      abortedUploads: 0,
      tempFiles: { ...sum(tempFiles), keys: tempFiles.map((o) => o.key) },
      durationMs: 0,
      requests: null,
    };

    // ---- 3. sweep ----
    if (lock) {
      const step = async (what: string, keys: readonly string[]) => {
        if (keys.length === 0) return;
        lock.assertHeld(`deleting ${what}`);
        log.info(`deleting ${keys.length} ${what}`);
        await repo.storage.delete(keys);
      };
      await step('summaries of expired backups', summaries);
      await step('superseded summaries of repacked backups', retainedSuperseded.filter((o) => parseBackupSummaryKey(o.key)).map((o) => o.key));
      await step('objects of expired and unfinished backups', [...expiredBackupObjects, ...garbageObjects].map((o) => o.key).filter((k) => !parseBackupSummaryKey(k)));
      await step('superseded and unfinished manifests of repacked backups', [...retainedSuperseded, ...orphans].filter((o) => !parseBackupSummaryKey(o.key)).map((o) => o.key));
      await step('unreferenced packs', deadPacks.map((o) => o.key));
      await step('WAL files no retained backup needs', deadWal.map((o) => o.key));
      await step('block maps of those WAL files', deadBlockMaps.map((o) => o.key));
      await step('keep markers of deleted backups', deadMarkers);
      if (candidates.length > 0) {
        lock.assertHeld('repacking');
        log.info(`repacking ${candidates.length} pack(s): ${toRewrite.length} backup(s) get a new manifest generation`);
        report.repack.newPacks = await repack(repo, { candidates, live, backups: toRewrite, lock, concurrency: options.concurrency });
      }
      lock.assertHeld('aborting stale multipart uploads');
      report.abortedUploads = (await repo.storage.abortStaleUploads?.(staleBefore)) ?? 0;
      if (tempFiles.length > 0) {
        lock.assertHeld('removing temporary files');
        log.info(`removing ${tempFiles.length} temporary file(s) of killed writers, last written over a day ago`);
        await repo.storage.removeTempFiles?.(tempFiles.map((o) => o.key));
      }
    }
    report.durationMs = Date.now() - started;
    report.requests = repo.description.startsWith('s3://') ? storageRequests.count - requestsBefore : null;
    return report;
  } finally {
    await lock?.release();
  }
}
