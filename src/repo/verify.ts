/**
 * Verifying a repository: every backup's summary and manifest readable, every pack its
 * manifests reference present and long enough (from one LIST), and — unless quick — every
 * referenced blob downloaded (ranged GETs, as a restore reads them), checked and decoded; the
 * WAL archive continuous from each backup's start to the newest segment of its timeline and,
 * unless quick, every WAL object decoded against its SHA-256. From what is damaged follows what
 * can no longer be restored (lostRanges).
 */
import { Writable } from 'node:stream';
import { PgarkError } from '../errors.ts';
import { DigestStage } from '../pipeline/digest.ts';
import { decodeStages, isEncryptedKey } from '../pipeline/object-format.ts';
import { runPipeline } from '../pipeline/run.ts';
import { parseWalFileName, segmentName, segmentNumber } from '../postgres/wal.ts';
import { mapSettled } from '../util/concurrency.ts';
import { freeNow } from '../util/memory.ts';
import { BACKUPS_PREFIX, isValidPackId, PACKS_PREFIX, packKey, parseWalObjectKey } from './layout.ts';
import { latestSummaryKeys, readBackupSummary, readManifest, type BackupSummary } from './backup-manifest.ts';
import { rangeDecoder } from './blob-check.ts';
import { recoverability } from './recoverability.ts';
import type { Repository } from './repository.ts';
import { fetchRange, planRanges, type BlobRef } from './restore-files.ts';
import { listWalObjects, type StoredWalObject } from './wal-archive.ts';
import { coverageOf, type ArchiveCoverage } from './wal-ranges.ts';
import type { VerifyState } from './verify-state.ts';
import { byCodeUnits } from '../util/order.ts';

export type VerifyMode = 'quick' | 'incremental' | 'full';

export type ProblemKind = 'summary' | 'manifest' | 'pack-missing' | 'pack-truncated' | 'blob-damaged' | 'wal-gap' | 'wal-damaged' | 'wal-conflict';

export interface Problem {
  kind: ProblemKind;
  /** The object (key) or WAL range concerned. */
  object: string;
  message: string;
  /** Backups that can no longer be restored, or restored as far, because of it. */
  backups: string[];
}

export interface ReadCounter {
  objects: number;
  bytes: number;
  /** Objects not read because an earlier run verified them. */
  skipped: number;
}

export interface TimeRange {
  from: string;
  to: string;
}

export interface BackupVerdict {
  id: string;
  type: BackupSummary['type'] | undefined;
  stoppedAt: string | undefined;
  /** Its summary, manifest and every blob it references are intact. */
  intact: boolean;
  /** Intact and its WAL from start to stop is archived and readable. */
  restorable: boolean;
  /** The latest time it recovers to (its unbroken WAL), when restorable. */
  reachesTime: string | undefined;
}

export interface VerifyReport {
  ok: boolean;
  mode: VerifyMode;
  backups: BackupVerdict[];
  problems: Problem[];
  /** WAL gaps no backup needs (before every backup's start): reported, not failures. */
  warnings: string[];
  wal: { files: number; coverage: ArchiveCoverage };
  /** Time ranges the repository can restore to now, and the ones damage took away. */
  recoverable: TimeRange[];
  lost: TimeRange[];
  read: { manifests: ReadCounter; packs: ReadCounter; wal: ReadCounter };
  /** The state to remember (undefined in quick mode). */
  state: Pick<VerifyState, 'packs' | 'wal'> | undefined;
}

interface PackUse {
  blobs: Map<number, BlobRef & { needed: number }>;
  backups: Set<string>;
  /** Bytes the pack must have: the end of its last referenced blob. */
  end: number;
}

export interface VerifyOptions {
  mode: VerifyMode;
  concurrency: number;
  previous: VerifyState | undefined;
  signal?: AbortSignal;
  onBytes?: (bytes: number) => void;
}

const counter = (): ReadCounter => ({ objects: 0, bytes: 0, skipped: 0 });

export async function verifyRepository(repo: Repository, options: VerifyOptions): Promise<VerifyReport> {
  const segmentSize = repo.identity!.postgres.walSegmentSize;
  const problems: Problem[] = [];
  const read = { manifests: counter(), packs: counter(), wal: counter() };
  const damagedBackups = new Set<string>();
  const damage = (problem: Problem) => {
    problems.push(problem);
    for (const id of problem.backups) damagedBackups.add(id);
  };

  // ---- backups: summaries and manifests ----
  const backupObjects = new Map<string, number>();
  for await (const object of repo.storage.list(BACKUPS_PREFIX)) backupObjects.set(object.key, object.size);
  const summaryKeys = [...latestSummaryKeys(backupObjects.keys())].sort(([a], [b]) => byCodeUnits(a, b));
  const summaries: BackupSummary[] = [];
  for (const [id, { key }] of summaryKeys) {
    try {
      summaries.push(await readBackupSummary(repo, key));
    } catch (error) {
      if (isOutage(error)) throw error;
      damage({ kind: 'summary', object: key, message: `the summary of backup ${id} is unreadable: ${(error as Error).message}`, backups: [id] });
    }
  }

  // A missing identity is a configuration error, not damage to every encrypted manifest.
  if (summaries.some((s) => isEncryptedKey(s.manifestKey))) await repo.identities('the backup manifests');
  const packs = new Map<string, PackUse>();
  for (const summary of summaries) {
    options.signal?.throwIfAborted();
    const manifestSize = backupObjects.get(summary.manifestKey);
    if (manifestSize === undefined) {
      damage({ kind: 'manifest', object: summary.manifestKey, message: `the manifest of backup ${summary.id} is missing`, backups: [summary.id] });
      continue;
    }
    read.manifests.objects++;
    read.manifests.bytes += manifestSize;
    try {
      for await (const entry of readManifest(repo, summary)) {
        if (entry.t !== 'f') continue;
        for (const [, count, packId, offset, length, skip, checksum] of entry.x) {
          if (!isValidPackId(packId)) throw new PgarkError('INTEGRITY', `invalid pack id "${packId}" in the manifest`);
          let use = packs.get(packId);
          if (!use) packs.set(packId, (use = { blobs: new Map(), backups: new Set(), end: 0 }));
          use.backups.add(summary.id);
          use.end = Math.max(use.end, offset + length);
          // The decoded blob must reach into the last block an extent takes from it.
          const needed = (skip + count - 1) * summary.blockSize + 1;
          const blob = use.blobs.get(offset);
          if (!blob) use.blobs.set(offset, { packId, offset, length, needed, ...(checksum ? { checksum } : {}) });
          else blob.needed = Math.max(blob.needed, needed);
        }
      }
    } catch (error) {
      if ((error as Error).name === 'AbortError' || isOutage(error)) throw error;
      damage({ kind: 'manifest', object: summary.manifestKey, message: `the manifest of backup ${summary.id} is unreadable: ${(error as Error).message}`, backups: [summary.id] });
    }
  }

  // ---- packs: present and long enough (one LIST), then their blobs ----
  const stored = new Map<string, number>();
  for await (const object of repo.storage.list(PACKS_PREFIX)) {
    const id = object.key.slice(object.key.lastIndexOf('/') + 1);
    if (packKey(id) === object.key) stored.set(id, object.size);
  }
  const toRead: [string, PackUse][] = [];
  for (const [packId, use] of packs) {
    const size = stored.get(packId);
    const backups = [...use.backups].sort();
    if (size === undefined) {
      damage({ kind: 'pack-missing', object: packKey(packId), message: `pack ${packId} is missing`, backups });
    } else if (size < use.end) {
      damage({ kind: 'pack-truncated', object: packKey(packId), message: `pack ${packId} is truncated: ${size} bytes stored, its blobs end at ${use.end}`, backups });
    } else if (options.mode !== 'quick') {
      if (options.mode === 'incremental' && options.previous?.packs[packId] === size) read.packs.skipped++;
      else toRead.push([packId, use]);
    }
  }

  const verifiedPacks: Record<string, number> = {};
  if (options.mode === 'incremental' && options.previous) {
    for (const [packId, size] of Object.entries(options.previous.packs)) if (stored.get(packId) === size) verifiedPacks[packId] = size;
  }
  if (toRead.length > 0) {
    const identities = toRead.some(([id]) => id.endsWith('.age')) ? await repo.identities('the backups') : [];
    const results = await mapSettled(toRead, options.concurrency, async ([packId, use]) => {
      const key = packKey(packId);
      let damaged = 0;
      let first: string | undefined;
      for (const range of planRanges(use.blobs.values())) {
        options.signal?.throwIfAborted();
        const data = await fetchRange(repo, range);
        read.packs.bytes += data.length;
        options.onBytes?.(data.length);
        // As a restore decodes: the blobs of one range through one decoder (blob-check.ts).
        let decoder = rangeDecoder(key, identities);
        try {
          for (const blob of range.blobs) {
            try {
              const parts = await decoder.decode(data.subarray(blob.offset - range.start, blob.offset - range.start + blob.length), blob);
              const needed = (blob as BlobRef & { needed: number }).needed;
              let decoded = 0;
              for (const part of parts) {
                decoded += part.length;
                freeNow(part); // only its length matters: free it now, not at the next GC (memory.ts)
              }
              if (decoded < needed) throw new PgarkError('INTEGRITY', `a blob in pack ${packId} (offset ${blob.offset}) is damaged: ${decoded} bytes decoded, its extents need ${needed}`);
            } catch (error) {
              damaged++;
              first ??= (error as Error).message;
              // A failed frame leaves the context unusable: the next blobs get a fresh one.
              decoder.close();
              decoder = rangeDecoder(key, identities);
            }
          }
          await decoder.finish().catch((error: unknown) => {
            damaged++;
            first ??= `the last blob read from pack ${packId} is damaged: ${(error as Error).message}`;
          });
        } finally {
          decoder.close();
          freeNow(data);
        }
      }
      read.packs.objects++;
      if (damaged > 0) throw new PgarkError('INTEGRITY', damaged > 1 ? `${first} (and ${damaged - 1} more damaged blob(s) in this pack)` : first!);
      verifiedPacks[packId] = stored.get(packId)!;
    });
    results.forEach((result, i) => {
      if (result.status === 'fulfilled') return;
      if (options.signal?.aborted) throw options.signal.reason;
      if (isOutage(result.reason)) throw result.reason;
      const [packId, use] = toRead[i]!;
      damage({ kind: 'blob-damaged', object: packKey(packId), message: (result.reason as Error).message, backups: [...use.backups].sort() });
    });
  }

  // ---- WAL: listing, continuity, content ----
  const wal = await listWalObjects(repo);
  const coverage = coverageOf(wal, segmentSize);
  const unusable = new Set<string>(); // WAL names that cannot be restored (damaged, ambiguous)
  for (const name of coverage.conflicts) {
    unusable.add(name);
    problems.push({ kind: 'wal-conflict', object: name, message: `${name} is archived with different contents (two servers archiving into one repository?)`, backups: [] });
  }
  const verifiedWal: Record<string, number> = {};
  if (options.mode !== 'quick') {
    const toCheck: StoredWalObject[] = [];
    for (const object of wal) {
      if (options.mode === 'incremental' && options.previous?.wal[object.key] === object.size) {
        verifiedWal[object.key] = object.size;
        read.wal.skipped++;
      } else {
        toCheck.push(object);
      }
    }
    const identities = toCheck.some((o) => isEncryptedKey(o.key)) ? await repo.identities('the WAL archive') : [];
    const results = await mapSettled(toCheck, options.concurrency, async (object) => {
      options.signal?.throwIfAborted();
      await checkStoredWal(repo, object, identities);
      read.wal.objects++;
      read.wal.bytes += object.size;
      options.onBytes?.(object.size);
      verifiedWal[object.key] = object.size;
    });
    results.forEach((result, i) => {
      if (result.status === 'fulfilled') return;
      if (options.signal?.aborted) throw options.signal.reason;
      if (isOutage(result.reason)) throw result.reason;
      const object = toCheck[i]!;
      unusable.add(object.name);
      problems.push({ kind: 'wal-damaged', object: object.key, message: (result.reason as Error).message, backups: [] });
    });
  }

  // ---- what can be restored, and what damage took away ----
  const healthyWal = wal.filter((object) => !unusable.has(object.name));
  const intact = summaries.filter((s) => !damagedBackups.has(s.id));
  const window = recoverability(intact, healthyWal, segmentSize);
  const warnings: string[] = [];

  // Every missing stretch of WAL (gaps, damaged or ambiguous segments) concerns the backups whose
  // WAL, from their start to the newest segment of their timeline, runs through it.
  const listedNames = new Set(wal.map((o) => o.name));
  for (const hole of walHoles(healthyWal, wal, segmentSize)) {
    const affected = summaries.filter((s) => {
      const start = parseWalFileName(s.startWal)!;
      return start.timeline === hole.timeline && segmentNumber(start, segmentSize) <= hole.lastSegno;
    }).map((s) => s.id);
    for (const p of problems) {
      const name = p.kind === 'wal-conflict' ? p.object : p.kind === 'wal-damaged' ? parseWalObjectKey(p.object)?.name : undefined;
      if (name && hole.names.includes(name)) p.backups = affected;
    }
    if (hole.names.every((name) => listedNames.has(name))) continue; // damaged or ambiguous: reported above
    const what = `WAL ${hole.first}..${hole.last} (${hole.count} segment(s)) is missing from the archive`;
    if (affected.length === 0) warnings.push(`${what}; no backup needs it`);
    else problems.push({ kind: 'wal-gap', object: `${hole.first}..${hole.last}`, message: what, backups: affected });
  }

  const verdicts: BackupVerdict[] = summaryKeys.map(([id]) => {
    const summary = summaries.find((s) => s.id === id);
    const r = window.backups.find((b) => b.id === id);
    return {
      id,
      type: summary?.type,
      stoppedAt: summary?.stoppedAt,
      intact: summary !== undefined && !damagedBackups.has(id),
      restorable: r?.consistent ?? false,
      reachesTime: r?.reachesTime,
    };
  });

  const recoverable = mergeRanges(window.backups.filter((b) => b.consistent).map((b) => ({ from: summaries.find((s) => s.id === b.id)!.stoppedAt, to: b.reachesTime! })));
  // What the repository should cover: from each backup's stop to the newest WAL of its timeline.
  const newestByTimeline = new Map<number, string>();
  for (const object of wal) {
    const file = parseWalFileName(object.name);
    if (file?.kind !== 'segment') continue;
    const time = object.lastModified.toISOString();
    if ((newestByTimeline.get(file.timeline) ?? '') < time) newestByTimeline.set(file.timeline, time);
  }
  const expected = mergeRanges(summaries.map((s) => ({ from: s.stoppedAt, to: laterOf(s.stoppedAt, newestByTimeline.get(s.timeline) ?? s.stoppedAt) })));
  const lost = subtractRanges(expected, recoverable);

  return {
    ok: problems.length === 0,
    mode: options.mode,
    backups: verdicts,
    problems,
    warnings,
    wal: { files: wal.length, coverage },
    recoverable,
    lost,
    read,
    state: options.mode === 'quick' ? undefined : { packs: verifiedPacks, wal: verifiedWal },
  };
}

/**
 * A failed read because the store is unreachable or refuses us: that stops the run with its
 * error, rather than being reported as damage to the objects being read.
 */
function isOutage(error: unknown): boolean {
  return error instanceof PgarkError && (error.code === 'STORAGE' || error.code === 'UNREACHABLE' || error.code === 'AUTH' || error.code === 'CONFIG');
}

/**
 * Decodes a WAL object as a stream into its SHA-256 (compare readStoredWal, which returns the
 * content): no 16 MiB buffers to allocate, copy and collect, which made verify GC-bound.
 */
async function checkStoredWal(repo: Repository, object: StoredWalObject, identities: readonly string[]): Promise<void> {
  const digest = new DigestStage();
  try {
    await runPipeline([await repo.storage.get(object.key), ...(await decodeStages(object.key, identities)), digest, new Writable({ write: (_chunk, _encoding, done) => done() })]);
  } catch (error) {
    if (error instanceof PgarkError && error.code !== 'INTEGRITY') throw error;
    throw new PgarkError('INTEGRITY', `${object.name} in the archive is damaged: ${(error as Error).message}`, { cause: error });
  }
  if (digest.digest() !== object.sha256) throw new PgarkError('INTEGRITY', `${object.name} in the archive failed its SHA-256 check`);
}

interface WalHole {
  timeline: number;
  first: string;
  last: string;
  lastSegno: number;
  count: number;
  names: string[];
}

/** Runs of segments missing from the usable WAL, between the first and last listed segment of each timeline. */
function walHoles(usable: readonly StoredWalObject[], all: readonly StoredWalObject[], segmentSize: number): WalHole[] {
  const segnos = (objects: readonly StoredWalObject[]) => {
    const byTimeline = new Map<number, Set<number>>();
    for (const object of objects) {
      const file = parseWalFileName(object.name);
      if (file?.kind !== 'segment') continue;
      let set = byTimeline.get(file.timeline);
      if (!set) byTimeline.set(file.timeline, (set = new Set()));
      set.add(segmentNumber(file, segmentSize));
    }
    return byTimeline;
  };
  const have = segnos(usable);
  const holes: WalHole[] = [];
  for (const [timeline, listed] of segnos(all)) {
    const sorted = [...listed].sort((a, b) => a - b);
    const present = have.get(timeline) ?? new Set<number>();
    let start: number | undefined;
    for (let n = sorted[0]!; n <= sorted.at(-1)! + 1; n++) {
      const missing = n <= sorted.at(-1)! && !present.has(n);
      if (missing && start === undefined) start = n;
      if (!missing && start !== undefined) {
        const names: string[] = [];
        for (let m = start; m < n; m++) names.push(segmentName(timeline, m, segmentSize));
        holes.push({ timeline, first: names[0]!, last: names.at(-1)!, lastSegno: n - 1, count: n - start, names });
        start = undefined;
      }
    }
  }
  return holes;
}

function laterOf(a: string, b: string): string {
  return a > b ? a : b;
}

/** Sorts and merges overlapping ISO-time ranges. */
export function mergeRanges(ranges: readonly TimeRange[]): TimeRange[] {
  const sorted = ranges.filter((r) => r.from <= r.to).sort((a, b) => (a.from < b.from ? -1 : a.from > b.from ? 1 : 0));
  const out: TimeRange[] = [];
  for (const range of sorted) {
    const last = out.at(-1);
    if (last && range.from <= last.to) last.to = laterOf(last.to, range.to);
    else out.push({ ...range });
  }
  return out;
}

/** `a` minus `b` (both merged), dropping empty ranges. */
export function subtractRanges(a: readonly TimeRange[], b: readonly TimeRange[]): TimeRange[] {
  const out: TimeRange[] = [];
  for (const range of a) {
    let pieces: TimeRange[] = [{ ...range }];
    for (const cut of b) {
      pieces = pieces.flatMap((p) => {
        if (cut.to <= p.from || cut.from >= p.to) return [p];
        const left = cut.from > p.from ? [{ from: p.from, to: cut.from }] : [];
        const right = cut.to < p.to ? [{ from: cut.to, to: p.to }] : [];
        return [...left, ...right];
      });
    }
    out.push(...pieces.filter((p) => p.from < p.to));
  }
  return out;
}
