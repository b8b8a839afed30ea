/**
 * Repack (part of expire): packs whose bytes are mostly blobs no retained backup references
 * any more are rewritten. Nothing is rewritten in place (S3 Object Lock, versioned buckets):
 *
 * 1. the live blobs of each such pack are copied, byte for byte, into new packs (a blob is
 *    encoded on its own, so its bytes are valid anywhere; new packs keep the old suffix);
 * 2. every retained backup whose manifest references a repacked pack gets a manifest of the
 *    next generation (the old one streamed, extents moved through the old→new blob map);
 * 3. then, last, its summary of that generation: from then on every reader uses it.
 *
 * The old packs and the superseded manifests and summaries stay until a later expire finds
 * the new summary older than REPACK_GRACE_MS (expire.ts): a restore or verify that read the
 * old summary before the repack can finish. Killed anywhere, the repository stays whole: new
 * packs and manifests without a summary are unreferenced garbage the next expire deletes.
 */
import { PgarkError } from '../errors.ts';
import { mapSettled } from '../util/concurrency.ts';
import { log } from '../util/log.ts';
import { ManifestWriter, readManifest, writeBackupSummary, type BackupSummary, type Extent } from './backup-manifest.ts';
import { packKey } from './layout.ts';
import type { RepositoryLock } from './lock.ts';
import { PACK_TARGET_SIZE, PackWriter, type BlobLocation } from './packs.ts';
import { byCodeUnits } from '../util/order.ts';
import type { Repository } from './repository.ts';

/** How long superseded generations and repacked packs outlive their replacement. */
export const REPACK_GRACE_MS = 24 * 3600 * 1000;

/** The blobs retained manifests reference, per pack: offset → length (no per-block data). */
export type LiveBlobs = Map<string, Map<number, number>>;

export interface RepackCandidate {
  packId: string;
  size: number;
  liveBytes: number;
}

export interface RepackSummary {
  /** Packs rewritten (or that a dry run would rewrite). */
  packs: number;
  /** Their total size. */
  bytes: number;
  /** Bytes of live blobs copied into new packs. */
  liveBytes: number;
  /** bytes − liveBytes: freed once the old packs are deleted, after the grace period. */
  savedBytes: number;
  /** Retained backups that got (or would get) a new generation. */
  backups: number;
  newPacks: number;
}

export function addLiveBlob(live: LiveBlobs, extent: Extent): void {
  let blobs = live.get(extent[2]);
  if (!blobs) live.set(extent[2], (blobs = new Map()));
  blobs.set(extent[3], extent[4]);
}

/**
 * Packs worth repacking: at least `thresholdPercent` of their stored bytes dead. Packs that
 * an unfinished backup's checkpoints reference (`pinned`) are left alone: they would stay
 * referenced anyway.
 */
export function repackCandidates(live: LiveBlobs, packSizes: ReadonlyMap<string, number>, thresholdPercent: number, pinned: ReadonlySet<string>): RepackCandidate[] {
  if (thresholdPercent <= 0) return [];
  const candidates: RepackCandidate[] = [];
  for (const [packId, blobs] of live) {
    const size = packSizes.get(packId);
    if (size === undefined || size === 0 || pinned.has(packId)) continue;
    let liveBytes = 0;
    for (const length of blobs.values()) liveBytes += length;
    if ((size - liveBytes) * 100 >= thresholdPercent * size) candidates.push({ packId, size, liveBytes });
  }
  return candidates.sort((a, b) => byCodeUnits(a.packId, b.packId));
}

export function summarize(candidates: readonly RepackCandidate[], backups: number): RepackSummary {
  const bytes = candidates.reduce((n, c) => n + c.size, 0);
  const liveBytes = candidates.reduce((n, c) => n + c.liveBytes, 0);
  return { packs: candidates.length, bytes, liveBytes, savedBytes: bytes - liveBytes, backups, newPacks: 0 };
}

const suffixOfPackId = (packId: string) => packId.slice(24);
const blobKey = (packId: string, offset: number) => `${packId}:${offset}`;

async function readAll(repo: Repository, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await repo.storage.get(key)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function repack(repo: Repository, options: {
  candidates: readonly RepackCandidate[];
  live: LiveBlobs;
  /** Retained backups whose manifest references a candidate, with the next free generation. */
  backups: readonly { summary: BackupSummary; generation: number }[];
  lock: RepositoryLock;
  concurrency: number;
}): Promise<number> {
  // ---- 1. copy live blobs ----
  const writers = new Map<string, PackWriter>();
  const moved = new Map<string, BlobLocation>();
  const movedTo = new Map<string, Set<string>>();
  // Packs are fetched whole (one GET, about 8 MiB; cheaper than a ranged GET per blob) a few
  // at a time; blobs go into the writer of their suffix in pack order.
  let next = 0;
  const fetches = new Map<number, Promise<Buffer>>();
  const fetch = (i: number) => {
    if (i >= options.candidates.length || fetches.has(i)) return;
    const data = readAll(repo, packKey(options.candidates[i]!.packId));
    data.catch(() => {}); // awaited in turn; one left behind by an earlier failure must not crash
    fetches.set(i, data);
  };
  for (; next < options.candidates.length; next++) {
    for (let ahead = 0; ahead < Math.max(1, Math.min(options.concurrency, 4)); ahead++) fetch(next + ahead);
    const candidate = options.candidates[next]!;
    const data = await fetches.get(next)!;
    fetches.delete(next);
    options.lock.assertHeld('repacking');
    const suffix = suffixOfPackId(candidate.packId);
    let writer = writers.get(suffix);
    if (!writer) writers.set(suffix, (writer = new PackWriter(repo, suffix, { targetSize: PACK_TARGET_SIZE, maxUploads: 2 })));
    const targets = new Set<string>();
    for (const [offset, length] of [...options.live.get(candidate.packId)!].sort(([a], [b]) => a - b)) {
      if (offset + length > data.length) throw new PgarkError('INTEGRITY', `pack ${candidate.packId} is shorter (${data.length} bytes) than a blob it holds (${offset}+${length}); nothing was repacked`, { hint: 'run pgark verify' });
      const location = await writer.add(data.subarray(offset, offset + length));
      moved.set(blobKey(candidate.packId, offset), location);
      targets.add(location.packId);
    }
    movedTo.set(candidate.packId, targets);
  }
  for (const writer of writers.values()) await writer.finish();
  const newPacks = [...writers.values()].reduce((n, w) => n + w.packs.length, 0);
  log.info(`repack: copied the live blobs of ${options.candidates.length} pack(s) into ${newPacks} new pack(s)`);

  // ---- 2 and 3. new manifests, then summaries ----
  const format = await repo.writeFormat();
  const rewritten = await mapSettled(options.backups, Math.min(options.concurrency, 4), async ({ summary, generation }) => {
    options.lock.assertHeld('writing repacked manifests');
    const writer = await ManifestWriter.open(repo, summary.id, format, undefined, generation);
    try {
      for await (const entry of readManifest(repo, summary)) {
        if (entry.t === 'f') {
          entry.x = entry.x.map((extent) => {
            const to = moved.get(blobKey(extent[2], extent[3]));
            if (!to) return extent;
            const copy = [...extent] as Extent;
            copy[2] = to.packId;
            copy[3] = to.offset;
            return copy;
          });
        }
        await writer.write(entry);
      }
      await writer.finish();
    } catch (error) {
      writer.abort(error as Error);
      throw error;
    }
    const packs = [...new Set(summary.packs.flatMap((p) => [...(movedTo.get(p) ?? [p])]))];
    options.lock.assertHeld('writing repacked summaries');
    await writeBackupSummary(repo, { ...summary, generation, manifestKey: writer.key, packs });
  });
  const failed = rewritten.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return newPacks;
}
