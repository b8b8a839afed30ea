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
 *    needs, keep markers of deleted backups, multipart uploads open for over a day.
 * An expire interrupted anywhere leaves a repository whose retained backups are whole; the
 * next run removes what is left. Nothing is rewritten: expire only deletes.
 */
import { PgarkError } from '../errors.ts';
import type { ObjectInfo } from '../storage/types.ts';
import { storageRequests } from '../storage/metrics.ts';
import { mapSettled } from '../util/concurrency.ts';
import { log } from '../util/log.ts';
import { readBackupSummary, readManifestObject, type BackupSummary } from './backup-manifest.ts';
import { isKept, readKeepMarkers } from './keep.ts';
import { BACKUPS_PREFIX, backupIdOfKey, backupSummaryKey, isValidPackId, parseBackupCheckpointKey, PACKS_PREFIX } from './layout.ts';
import { RepositoryLock, type LockOptions } from './lock.ts';
import type { Repository } from './repository.ts';
import { decideRetention, hasPolicy, walNeeded, type RetainReason, type RetentionPolicy } from './retention.ts';
import { listWalObjects } from './wal-archive.ts';

const STALE_UPLOAD_MS = 24 * 3600 * 1000;

export interface ExpireOptions {
  policy: RetentionPolicy;
  dryRun: boolean;
  /** The clock the window is measured against (PGARK_TEST_NOW in tests). */
  now: Date;
  lock: LockOptions;
  concurrency: number;
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
  deleted: { backupObjects: Deletion; packs: Deletion; wal: Deletion; keepMarkers: number; bytes: number };
  remaining: { packs: Deletion; wal: Deletion };
  abortedUploads: number;
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
    const completeIds = [...objectsOf].filter(([id, objects]) => objects.some((o) => o.key === backupSummaryKey(id))).map(([id]) => id).sort();
    const backups: BackupSummary[] = [];
    for (const id of completeIds) backups.push(await readBackupSummary(repo, id));
    const markers = await readKeepMarkers(repo);
    const decision = decideRetention(backups, options.policy, options.now, (b) => isKept(b, markers));
    const retained = backups.filter((b) => decision.retained.has(b.id));

    const stamp = (id: string) => id.slice(0, 15);
    const newestComplete = completeIds.at(-1);
    const incompleteIds = [...objectsOf.keys()].filter((id) => !completeIds.includes(id)).sort((a, b) => stamp(a).localeCompare(stamp(b)));
    const candidate = incompleteIds.at(-1);
    const keptIncomplete = candidate && (!newestComplete || stamp(candidate) > stamp(newestComplete)) ? candidate : undefined;
    const garbageIncomplete = incompleteIds.filter((id) => id !== keptIncomplete);

    // ---- 2. mark ----
    const referenced = new Set<string>();
    const sources: { key: string; what: string; requireEnd: boolean }[] = retained.map((b) => ({ key: b.manifestKey, what: `backup ${b.id}`, requireEnd: true }));
    if (keptIncomplete) {
      for (const o of objectsOf.get(keptIncomplete)!) if (parseBackupCheckpointKey(o.key)) sources.push({ key: o.key, what: `the unfinished backup ${keptIncomplete}`, requireEnd: false });
    }
    const marked = await mapSettled(sources, options.concurrency, async (source) => {
      for await (const entry of readManifestObject(repo, source.key, source.what, { requireEnd: source.requireEnd })) {
        if (entry.t === 'f') for (const extent of entry.x) referenced.add(extent[2]);
      }
    });
    const failed = marked.find((r) => r.status === 'rejected');
    if (failed) {
      // Without every reference known, no pack may go.
      const error = (failed as PromiseRejectedResult).reason as Error;
      throw new PgarkError(error instanceof PgarkError ? error.code : 'STORAGE', `cannot read every retained manifest, nothing was deleted: ${error.message}`, { hint: (error as PgarkError).hint, cause: error });
    }

    // ---- what goes ----
    const summaries = decision.expired.map((b) => backupSummaryKey(b.id));
    const expiredBackupObjects = decision.expired.flatMap((b) => objectsOf.get(b.id)!);
    const garbageObjects = garbageIncomplete.flatMap((id) => objectsOf.get(id)!);

    const deadPacks: ObjectInfo[] = [];
    const livePacks: ObjectInfo[] = [];
    for await (const object of repo.storage.list(PACKS_PREFIX)) {
      const packId = packIdOfKey(object.key);
      if (!packId) continue;
      (referenced.has(packId) ? livePacks : deadPacks).push(object);
    }

    const wal = await listWalObjects(repo);
    // With no complete backup, no WAL is known to be useless: a first backup may need it.
    const needed = backups.length > 0 ? walNeeded(backups, decision, identity.postgres.walSegmentSize) : () => true;
    const deadWal = wal.filter((o) => !needed(o.name));
    const liveWal = wal.filter((o) => needed(o.name));

    const existing = new Set([...completeIds.filter((id) => decision.retained.has(id)), ...(keptIncomplete ? [keptIncomplete] : [])]);
    const deadMarkers = [...markers.keys].filter(([id]) => !existing.has(id)).flatMap(([, keys]) => keys);

    const report: ExpireReport = {
      dryRun: options.dryRun,
      now: options.now.toISOString(),
      windowStart: decision.windowStart ?? null,
      retained: retained.map((b) => ({ id: b.id, type: b.type, stoppedAt: b.stoppedAt, reasons: decision.retained.get(b.id)! })),
      expired: decision.expired.map((b) => ({ id: b.id, type: b.type, stoppedAt: b.stoppedAt })),
      incomplete: { deleted: garbageIncomplete, kept: keptIncomplete ?? null },
      deleted: {
        backupObjects: sum([...expiredBackupObjects, ...garbageObjects]),
        packs: sum(deadPacks),
        wal: sum(deadWal),
        keepMarkers: deadMarkers.length,
        bytes: sum([...expiredBackupObjects, ...garbageObjects, ...deadPacks, ...deadWal]).bytes,
      },
      remaining: { packs: sum(livePacks), wal: sum(liveWal) },
      abortedUploads: 0,
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
      await step('objects of expired and unfinished backups', [...expiredBackupObjects, ...garbageObjects].map((o) => o.key).filter((k) => !k.endsWith('/backup.json')));
      await step('unreferenced packs', deadPacks.map((o) => o.key));
      await step('WAL files no retained backup needs', deadWal.map((o) => o.key));
      await step('keep markers of deleted backups', deadMarkers);
      lock.assertHeld('aborting stale multipart uploads');
      report.abortedUploads = (await repo.storage.abortStaleUploads?.(new Date(options.now.getTime() - STALE_UPLOAD_MS))) ?? 0;
    }
    report.durationMs = Date.now() - started;
    report.requests = repo.description.startsWith('s3://') ? storageRequests.count - requestsBefore : null;
    return report;
  } finally {
    await lock?.release();
  }
}
