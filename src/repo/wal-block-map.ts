/**
 * The WAL block map: which relation blocks changed between two LSNs, from the WAL itself.
 *
 * While it archives a segment, wal-push decodes its record headers (postgres/wal-records.ts)
 * and stores a small summary next to it: the blocks each record names, the forks created or
 * truncated, the databases created or dropped. An incremental backup unions the summaries
 * from its base's start to its own start and reads only the blocks they name: the others are
 * unchanged since the base read them, and are referenced without being read. This is what
 * PostgreSQL 17's own incremental backup does with its WAL summaries (which need
 * summarize_wal = on, and 17); pgark's work on every major it supports, on the WAL it archives.
 *
 * It is an optimisation with a safe fallback: when a segment in the range has no summary (WAL
 * archived before pgark made them, or by another tool, or a segment this decoder did not
 * understand) and the segment is not in the local pg_wal either, the backup compares every
 * page's LSN as before. Summaries are tied to the archived segment's content by its SHA-256.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeBuffer, encodeBuffer, isEncryptedKey, suffixOf } from '../pipeline/object-format.ts';
import { forkKey, joinSplitRecord, segmentChanges, WalChanges } from '../postgres/wal-records.ts';
import { formatLsn, segmentName, segmentNumberOfLsn } from '../postgres/wal.ts';
import { RELSEG_BLOCKS } from '../postgres/page.ts';
import { Semaphore } from '../util/concurrency.ts';
import { log } from '../util/log.ts';
import { parseWalSummaryKey, walDirectoryOf, walObjectPrefix, walSummaryDirectoryOf, walSummaryKey, walSummaryPrefix, WAL_SUMMARY_PREFIX } from './layout.ts';
import type { Repository } from './repository.ts';
import { listWalObjects } from './wal-archive.ts';

/** The stored summary of one segment (JSON, encoded like a manifest). */
export interface StoredSummary {
  format: 1;
  segment: string;
  /** XLOG_PAGE_MAGIC of the segment: which PostgreSQL wrote it (split records are decoded with it). */
  pageMagic: number;
  /** Base64 of SegmentChanges.head / .tail, when the segment has them. */
  head?: string;
  tail?: string;
  databases: number[];
  /** [spc/db/rel/fork, limit or null, block numbers ascending as differences from the previous one]. */
  forks: [string, number | null, number[]][];
}

function toStored(segment: string, pageMagic: number, changes: WalChanges, head?: Buffer, tail?: Buffer): StoredSummary {
  const forks: StoredSummary['forks'] = [];
  for (const [key, fork] of changes.forks) {
    const sorted = Float64Array.from(fork.blocks).sort();
    const deltas: number[] = [];
    let previous = -1;
    for (const block of sorted) {
      if (block === previous) continue;
      deltas.push(previous < 0 ? block : block - previous);
      previous = block;
    }
    forks.push([key, fork.limit ?? null, deltas]);
  }
  return {
    format: 1,
    segment,
    pageMagic,
    ...(head ? { head: head.toString('base64') } : {}),
    ...(tail ? { tail: tail.toString('base64') } : {}),
    databases: [...changes.databases],
    forks,
  };
}

/**
 * Decodes a segment being archived and stores its summary. Best effort: a segment the decoder
 * does not understand gets no summary (backups then read every page of that stretch), and a
 * failure to store one is only logged — the segment itself is archived either way.
 */
export async function storeWalSummary(repo: Repository, name: string, sha256: string, content: Buffer, signal?: AbortSignal): Promise<void> {
  try {
    const decoded = segmentChanges(content);
    if (!decoded.complete) {
      log.info(`${name}: no block map for this segment (WAL this version of pgark does not decode); backups read every page of its stretch`);
      return;
    }
    const stored = toStored(name, content.readUInt16LE(0), decoded.changes, decoded.head, decoded.tail);
    const format = await repo.writeFormat();
    const key = walSummaryKey(name, sha256, suffixOf(format));
    await repo.storage.put(key, await encodeBuffer(Buffer.from(JSON.stringify(stored)), format), { kind: 'wal', signal });
  } catch (error) {
    if (signal?.aborted) throw error;
    log.warn(`${name}: could not store its block map; backups read every page of its stretch`, { error: (error as Error).message });
  }
}

/** Every stored block map (expire deletes them with their segments). */
export async function listWalSummaries(repo: Repository): Promise<{ key: string; name: string; sha256: string; size: number }[]> {
  const out: { key: string; name: string; sha256: string; size: number }[] = [];
  for await (const object of repo.storage.list(WAL_SUMMARY_PREFIX)) {
    const parsed = parseWalSummaryKey(object.key);
    if (parsed) out.push({ key: object.key, ...parsed, size: object.size });
  }
  return out;
}

// ---- reading: the changed blocks of a stretch of WAL -------------------------------------------

const DEFAULT_TABLESPACE = 1663;
const GLOBAL_TABLESPACE = 1664;
/** base/<db>/<rel>[.<seg>], global/<rel>[.<seg>], pg_tblspc/<spc>/<dir>/<db>/<rel>[.<seg>]: main forks only. */
const RELATION_PATH = /^(?:base\/(\d+)|global|pg_tblspc\/(\d+)\/[^/]+\/(\d+))\/(\d+)(?:\.(\d+))?$/;

/** What the WAL says about one relation segment file, in block numbers of the file. */
export type FileChanges =
  | { kind: 'all' }
  | {
      kind: 'blocks';
      /** Blocks at and past this changed (created or truncated); Infinity when none. */
      limit: number;
      /** Whether block `block` (of the file) changed. */
      changed: (block: number) => boolean;
      /** Whether any of blocks [0, count) of the file changed (cheaper than asking `changed` for each). */
      anyChanged: (count: number) => boolean;
    };

/**
 * A set of block numbers: a Set while small (most forks a stretch of WAL touches have a few
 * changed blocks, and a database may have 100,000s of them), then a bitmap per 1 GiB of
 * relation (16 KiB each, made when first touched): memory grows with the blocks changed, at
 * most one bit per block of the database.
 */
class BlockSet {
  private static readonly MAX_LISTED = 2048;
  private listed: Set<number> | undefined = new Set();
  private readonly chunks = new Map<number, Uint8Array>();

  add(block: number): void {
    if (this.listed) {
      this.listed.add(block);
      if (this.listed.size <= BlockSet.MAX_LISTED) return;
      const blocks = this.listed;
      this.listed = undefined;
      for (const listed of blocks) this.add(listed);
      return;
    }
    const index = Math.floor(block / RELSEG_BLOCKS);
    let chunk = this.chunks.get(index);
    if (!chunk) this.chunks.set(index, (chunk = new Uint8Array(RELSEG_BLOCKS / 8)));
    const bit = block - index * RELSEG_BLOCKS;
    chunk[bit >>> 3]! |= 1 << (bit & 7);
  }

  /** Whether any block in [from, to) is in the set. */
  hasAnyIn(from: number, to: number): boolean {
    if (this.listed) {
      for (const block of this.listed) if (block >= from && block < to) return true;
      return false;
    }
    for (let index = Math.floor(from / RELSEG_BLOCKS); index * RELSEG_BLOCKS < to; index++) {
      const chunk = this.chunks.get(index);
      if (!chunk) continue;
      const base = index * RELSEG_BLOCKS;
      const first = Math.max(from, base) - base;
      const end = Math.min(to, base + RELSEG_BLOCKS) - base;
      for (let bit = first; bit < end;) {
        // whole zero bytes at a time
        if ((bit & 7) === 0 && bit + 8 <= end) {
          if (chunk[bit >>> 3] !== 0) return true;
          bit += 8;
        } else {
          if ((chunk[bit >>> 3]! & (1 << (bit & 7))) !== 0) return true;
          bit++;
        }
      }
    }
    return false;
  }

  has(block: number): boolean {
    if (this.listed) return this.listed.has(block);
    const index = Math.floor(block / RELSEG_BLOCKS);
    const chunk = this.chunks.get(index);
    if (!chunk) return false;
    const bit = block - index * RELSEG_BLOCKS;
    return (chunk[bit >>> 3]! & (1 << (bit & 7))) !== 0;
  }
}

/**
 * The union of the changes of a stretch of WAL, one bit per changed block (memory grows with
 * the blocks changed, at most 1 bit per block of the database, not with the WAL's length).
 */
export class ChangedBlocks {
  private readonly forks = new Map<string, { blocks: BlockSet; limit: number }>();
  private readonly databases = new Set<number>();

  private fork(key: string): { blocks: BlockSet; limit: number } {
    let ours = this.forks.get(key);
    if (!ours) this.forks.set(key, (ours = { blocks: new BlockSet(), limit: Infinity }));
    return ours;
  }

  add(changes: WalChanges): void {
    for (const [key, fork] of changes.forks) {
      const ours = this.fork(key);
      for (const block of fork.blocks) ours.blocks.add(block);
      if (fork.limit !== undefined) ours.limit = Math.min(ours.limit, fork.limit);
    }
    for (const db of changes.databases) this.databases.add(db);
  }

  addStored(stored: StoredSummary): void {
    for (const [key, limit, deltas] of stored.forks) {
      const ours = this.fork(key);
      let block = 0;
      for (let i = 0; i < deltas.length; i++) {
        block = i === 0 ? deltas[0]! : block + deltas[i]!;
        ours.blocks.add(block);
      }
      if (limit !== null) ours.limit = Math.min(ours.limit, limit);
    }
    for (const db of stored.databases) this.databases.add(db);
  }

  /** The changes of main-fork relation file `path` (relative to PGDATA); undefined for other files. */
  forFile(path: string): FileChanges | undefined {
    const match = RELATION_PATH.exec(path);
    if (!match) return undefined;
    const db = Number(match[1] ?? match[3] ?? 0);
    const spc = match[1] !== undefined ? DEFAULT_TABLESPACE : match[2] !== undefined ? Number(match[2]) : GLOBAL_TABLESPACE;
    if (this.databases.has(db)) return { kind: 'all' };
    const first = Number(match[5] ?? 0) * RELSEG_BLOCKS;
    const fork = this.forks.get(forkKey(spc, db, Number(match[4]), 0));
    if (!fork) return { kind: 'blocks', limit: Infinity, changed: () => false, anyChanged: () => false };
    const limit = fork.limit - first;
    if (limit <= 0) return { kind: 'all' };
    return {
      kind: 'blocks',
      limit,
      changed: (block) => fork.blocks.has(first + block),
      anyChanged: (count) => fork.blocks.hasAnyIn(first, first + count),
    };
  }
}

interface SegmentEdges {
  head?: Buffer;
  tail?: Buffer;
  pageMagic: number;
}

/** Summaries fetched at once: each is a small object, and on S3 a round trip (90 segments took 0.76 s four at a time). */
const SUMMARY_FETCHES = 16;

/** The stored summaries of `names` made of the segments' archived content, by segment name (only those of `names`). */
async function storedSummaryKeys(repo: Repository, names: readonly string[]): Promise<Map<string, string>> {
  const wanted = new Set(names);
  const archived = new Map<string, string>();
  const summaries = new Map<string, string>();
  // A few segments (those archived since a prefetch) are listed by name: a file store then
  // stats only their objects, not a directory's 256 segments and block maps.
  const byName = names.length <= 4;
  // (otherwise one name per directory stands for it: names are in order)
  const listed = byName ? names : names.filter((name, i) => i === 0 || walDirectoryOf(name) !== walDirectoryOf(names[i - 1]!));
  for (const name of listed) {
    for (const object of await listWalObjects(repo, byName ? walObjectPrefix(name) : walDirectoryOf(name))) if (wanted.has(object.name)) archived.set(object.name, object.sha256);
    for await (const object of repo.storage.list(byName ? walSummaryPrefix(name) : walSummaryDirectoryOf(name))) {
      const parsed = parseWalSummaryKey(object.key);
      if (parsed && archived.get(parsed.name) === parsed.sha256) summaries.set(parsed.name, object.key);
    }
  }
  return summaries;
}

/** Reads one stored summary; a reason instead when this version cannot read it. */
async function readStoredSummary(repo: Repository, name: string, key: string): Promise<StoredSummary | { reason: string }> {
  const identities = isEncryptedKey(key) ? await repo.identities(`the block map of ${name}`) : [];
  const stored = JSON.parse((await decodeBuffer(await repo.storage.get(key), key, identities)).toString('utf8')) as StoredSummary;
  if (stored.format !== 1 || stored.segment !== name) return { reason: `the block map of ${name} is not one this version reads` };
  return stored;
}

function edgesOf(stored: StoredSummary): SegmentEdges {
  return { pageMagic: stored.pageMagic, ...(stored.head ? { head: Buffer.from(stored.head, 'base64') } : {}), ...(stored.tail ? { tail: Buffer.from(stored.tail, 'base64') } : {}) };
}

/** Runs `task` over `items`, `limit` at a time, until one returns a reason (then stops taking more). */
async function untilReason<T>(items: readonly T[], limit: number, task: (item: T) => Promise<string | undefined>): Promise<string | undefined> {
  let reason: string | undefined;
  let next = 0;
  const worker = async () => {
    while (next < items.length && reason === undefined) {
      const found = await task(items[next++]!);
      reason ??= found;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return reason;
}

/**
 * The summaries of the segments archived so far from `fromLsn` (a base backup's start) to
 * `toLsn` (where the WAL is now), loaded while the backup's start checkpoint runs (a fast
 * checkpoint of a busy server takes seconds): changedBlocksSince then adds only the segments
 * archived since. Best effort: any failure leaves changedBlocksSince to do all of it.
 */
export class WalSummaryPrefetch {
  readonly fromLsn: bigint;
  readonly timeline: number;
  readonly changed = new ChangedBlocks();
  readonly edges = new Map<string, SegmentEdges>();
  private readonly loaded: Promise<boolean>;

  constructor(repo: Repository, range: { fromLsn: bigint; toLsn: bigint; timeline: number }) {
    this.fromLsn = range.fromLsn;
    this.timeline = range.timeline;
    const segmentSize = repo.identity!.postgres.walSegmentSize;
    const names: string[] = [];
    for (let segno = segmentNumberOfLsn(range.fromLsn, segmentSize); segno <= segmentNumberOfLsn(range.toLsn, segmentSize); segno++) names.push(segmentName(range.timeline, segno, segmentSize));
    this.loaded = (async () => {
      const keys = await storedSummaryKeys(repo, names);
      const reason = await untilReason([...keys], SUMMARY_FETCHES, async ([name, key]) => {
        const stored = await readStoredSummary(repo, name, key);
        if ('reason' in stored) return stored.reason;
        this.changed.addStored(stored);
        this.edges.set(name, edgesOf(stored));
        return undefined;
      });
      return reason === undefined;
    })().catch((error: unknown) => {
      log.debug('could not load the WAL block map ahead of the backup start', { error: (error as Error).message });
      return false;
    });
  }

  /** Whether every summary it found was loaded (false: do not use it). */
  complete(): Promise<boolean> {
    return this.loaded;
  }
}

/**
 * The blocks changed by the WAL from `fromLsn` (a base backup's start) to `toLsn` (this
 * backup's start), both on `timeline`: from the archived segments' summaries, and from the
 * local pg_wal for segments not archived (or not summarised) yet — at least the one holding
 * `toLsn`, which is still being written. Returns a reason instead when the stretch is not
 * covered without a gap. `prefetched`: summaries loaded already (WalSummaryPrefetch), used
 * when they are of the same stretch's start.
 */
export async function changedBlocksSince(
  repo: Repository,
  range: { fromLsn: bigint; toLsn: bigint; timeline: number; walDirectory: string; concurrency: number },
  prefetched?: WalSummaryPrefetch,
): Promise<ChangedBlocks | { reason: string }> {
  const segmentSize = repo.identity!.postgres.walSegmentSize;
  const first = segmentNumberOfLsn(range.fromLsn, segmentSize);
  const last = segmentNumberOfLsn(range.toLsn, segmentSize);
  const names: string[] = [];
  for (let segno = first; segno <= last; segno++) names.push(segmentName(range.timeline, segno, segmentSize));

  const usable = prefetched && prefetched.fromLsn === range.fromLsn && prefetched.timeline === range.timeline && (await prefetched.complete());
  // (Segments the prefetch loaded were archived before this backup began: none is past `last`.)
  const changed = usable ? prefetched.changed : new ChangedBlocks();
  const loaded = usable ? prefetched.edges : new Map<string, SegmentEdges>();
  const remaining = names.filter((name) => !loaded.has(name));

  // What the archive has: each segment's SHA-256, and the summaries made of that content.
  const summaries = remaining.length > 0 ? await storedSummaryKeys(repo, remaining) : new Map<string, string>();
  const edges: (SegmentEdges | undefined)[] = names.map((name) => loaded.get(name));
  const indexOf = new Map(names.map((name, index) => [name, index]));
  // Segments read from the local pg_wal (16 MiB each) are read process-max at a time.
  const localReads = new Semaphore(Math.max(1, range.concurrency));
  const missing = await untilReason(remaining, Math.max(SUMMARY_FETCHES, range.concurrency), async (name) => {
    const index = indexOf.get(name)!;
    const key = summaries.get(name);
    if (key) {
      const stored = await readStoredSummary(repo, name, key);
      if ('reason' in stored) return stored.reason;
      changed.addStored(stored);
      edges[index] = edgesOf(stored);
      return undefined;
    }
    // Not archived (or not summarised) yet: the server's own pg_wal may still have it.
    const release = await localReads.acquire();
    try {
      const local = await readFile(join(range.walDirectory, name)).catch(() => undefined);
      const decoded = local && local.length === segmentSize ? segmentChanges(local, index === names.length - 1 ? range.toLsn : undefined) : undefined;
      if (!decoded?.complete) return `${name} has no block map in the repository and is not in ${range.walDirectory}`;
      changed.add(decoded.changes);
      edges[index] = { pageMagic: local!.readUInt16LE(0), ...(decoded.head ? { head: decoded.head } : {}), ...(decoded.tail ? { tail: decoded.tail } : {}) };
      return undefined;
    } finally {
      release();
    }
  });
  if (missing !== undefined) return { reason: missing };

  // Records split between two segments: decoded from the end of one and the start of the next.
  for (let i = 0; i + 1 < names.length; i++) {
    const tail = edges[i]!.tail;
    if (!tail) continue;
    const head = edges[i + 1]!.head;
    const split = new WalChanges();
    if (!head || !joinSplitRecord(tail, head, edges[i]!.pageMagic, split)) {
      return { reason: `the record that ${names[i]} ends with does not continue in ${names[i + 1]}` };
    }
    changed.add(split);
  }
  log.info(`block map of the WAL from ${formatLsn(range.fromLsn)} to ${formatLsn(range.toLsn)}`, { segments: names.length, fromArchive: names.length - remaining.length + summaries.size, loadedAhead: names.length - remaining.length });
  return changed;
}
