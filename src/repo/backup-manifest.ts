/**
 * Backup manifests and summaries (docs/FORMAT.md, "Base backups").
 *
 * The manifest is JSON lines, streamed in both directions so memory does not grow with the
 * number of files: one line per directory, link and file in walk order (pgdata.ts), then an
 * end line with backup_label and tablespace_map. A file's content is a list of extents, each
 * mapping a run of its 8 KiB blocks onto a run of blocks inside one stored blob:
 *
 *   [firstBlock, blockCount, packId, blobOffset, blobLength, firstBlockInBlob, crc32?]
 *
 * (crc32: of the stored blob, only for encodings without a check of their own: blob-check.ts)
 *
 * Blobs are independently encoded (compressed, encrypted) pieces of up to 128 blocks, stored
 * back to back in pack objects; an incremental backup's unchanged blocks are extents pointing
 * into older packs.
 */
import { PassThrough, Readable } from 'node:stream';
import { z } from 'zod';
import { PgarkError } from '../errors.ts';
import { decodeStages, encodeStages, isEncryptedKey, suffixOf, type WriteFormat } from '../pipeline/object-format.ts';
import { runPipeline } from '../pipeline/run.ts';
import { mapSettled } from '../util/concurrency.ts';
import { BACKUPS_PREFIX, backupManifestKey, backupSummaryKey, parseBackupSummaryKey } from './layout.ts';
import type { Repository } from './repository.ts';
import { byCodeUnits } from '../util/order.ts';

export type Extent = [firstBlock: number, blockCount: number, packId: string, blobOffset: number, blobLength: number, firstBlockInBlob: number, crc32?: string];

export type ManifestEntry =
  | { t: 'd'; p: string; m: number }
  | { t: 'l'; p: string; target: string }
  | { t: 'f'; p: string; m: number; s: number; mt: number; h?: string; x: Extent[] };

export interface ManifestEnd {
  t: 'end';
  backupLabel: string;
  tablespaceMap: string;
}

const BackupSummarySchema = z.object({
  format: z.literal(1),
  id: z.string(),
  type: z.enum(['full', 'incremental']),
  base: z.string().nullable(),
  /** The interrupted backup whose stored files this one reused (backup-resume.ts). */
  resumedFrom: z.string().optional(),
  systemIdentifier: z.string(),
  pgMajor: z.number().int(),
  timeline: z.number().int(),
  startLsn: z.string(),
  stopLsn: z.string(),
  startWal: z.string(),
  stopWal: z.string(),
  startedAt: z.string(),
  stoppedAt: z.string(),
  blockSize: z.number().int(),
  fromStandby: z.boolean(),
  manifestKey: z.string(),
  /** Packs this backup wrote (later ones may reference them too). */
  packs: z.array(z.string()),
  files: z.number().int(),
  /** Bytes of the data directory backed up (logical size). */
  size: z.number(),
  /** Bytes this backup added to the repository (new blobs plus manifest). */
  storedBytes: z.number(),
  /** Blocks stored anew / referenced from earlier backups (relation files and others). */
  blocksStored: z.number(),
  blocksReferenced: z.number(),
  /** Bytes read from the data directory; less than `size` when the WAL block map let an incremental skip unchanged pages. */
  readBytes: z.number().optional(),
  /** The incremental knew the changed blocks from the WAL block map (wal-block-map.ts) instead of comparing page LSNs. */
  walBlockMap: z.boolean().optional(),
  durationMs: z.number(),
  tablespaces: z.array(z.object({ oid: z.string(), location: z.string() })),
  keep: z.boolean().default(false),
  /** Absent in generation 1; n > 1 when expire's repack rewrote the manifest (layout.ts). */
  generation: z.number().int().min(2).optional(),
  /** Pages that failed their data checksum while being read (first 1,000). */
  pageChecksumErrors: z.array(z.object({ path: z.string(), block: z.number().int() })).optional(),
  /** Oldest transaction (full 64-bit xid) still running just after the backup started: a
   * --target-xid at or above it can be reached from this backup. Absent in older backups. */
  startXmin: z.string().regex(/^\d+$/).optional(),
});
export type BackupSummary = z.infer<typeof BackupSummarySchema>;

/**
 * The summary key each backup is read from, by backup id: that of its highest generation.
 * Every reader of summaries goes through this (listBackups, verify, expire), so all follow a
 * repack the moment its summary exists.
 */
export function latestSummaryKeys(keys: Iterable<string>): Map<string, { key: string; generation: number }> {
  const latest = new Map<string, { key: string; generation: number }>();
  for (const key of keys) {
    const parsed = parseBackupSummaryKey(key);
    if (parsed && parsed.generation > (latest.get(parsed.id)?.generation ?? 0)) latest.set(parsed.id, { key, generation: parsed.generation });
  }
  return latest;
}

/** Reads and checks one summary; `key` is from latestSummaryKeys. */
export async function readBackupSummary(repo: Repository, key: string): Promise<BackupSummary> {
  const { id, generation } = parseBackupSummaryKey(key) ?? { id: key, generation: 0 };
  const chunks: Buffer[] = [];
  for await (const chunk of await repo.storage.get(key)) chunks.push(chunk as Buffer);
  let parsed;
  try {
    parsed = BackupSummarySchema.safeParse(JSON.parse(Buffer.concat(chunks).toString('utf8')));
  } catch {
    parsed = undefined;
  }
  if (!parsed?.success || parsed.data.id !== id || (parsed.data.generation ?? 1) !== generation || !parsed.data.manifestKey.startsWith(`${BACKUPS_PREFIX}${id}/`)) {
    throw new PgarkError('INTEGRITY', `the summary of backup ${id} is malformed (${key})`);
  }
  return parsed.data;
}

/** Backup summaries read at once. */
const SUMMARY_READS = 16;

/** Every complete backup (one with a summary), oldest first, each at its highest generation. */
export async function listBackups(repo: Repository): Promise<BackupSummary[]> {
  const keys: string[] = [];
  for await (const object of repo.storage.list(BACKUPS_PREFIX)) keys.push(object.key);
  const latest = [...latestSummaryKeys(keys)].sort(([a], [b]) => byCodeUnits(a, b));
  // Several at a time: on S3 each is a round trip, and every backup and restore lists them all.
  const read = await mapSettled(latest, SUMMARY_READS, ([, { key }]) => readBackupSummary(repo, key));
  return read.map((result) => {
    if (result.status === 'rejected') throw result.reason;
    return result.value;
  });
}

export async function writeBackupSummary(repo: Repository, summary: BackupSummary): Promise<void> {
  await repo.storage.put(backupSummaryKey(summary.id, summary.generation ?? 1), Buffer.from(JSON.stringify(summary, null, 2) + '\n'), { kind: 'meta' });
}

/** Extents per piece of a long line (a piece of ~60 KB: young-generation garbage once written). */
const EXTENTS_PER_PIECE = 1024;
/** Stands for the extent list in the rest of a long line (a key never holds a NUL). */
const EXTENTS_PLACEHOLDER = '\u0000extents';

/**
 * An entry's line (JSON and a newline) as UTF-8, in pieces whose concatenation is exactly
 * JSON.stringify(entry) + '\n'. A fragmented segment's line runs to 4 MB (70,000 extents): made
 * as one string it was built in parts and flattened, copied into a Buffer for the stream and
 * held besides for the backup's next checkpoint, ~16 MB at the moment a backup peaked.
 */
export function* manifestLinePieces(entry: ManifestEntry | ManifestEnd): Generator<Buffer> {
  if (entry.t !== 'f' || entry.x.length <= EXTENTS_PER_PIECE) {
    yield Buffer.from(JSON.stringify(entry) + '\n');
    return;
  }
  const rest = JSON.stringify({ ...entry, x: EXTENTS_PLACEHOLDER });
  const at = rest.lastIndexOf(JSON.stringify(EXTENTS_PLACEHOLDER));
  yield Buffer.from(rest.slice(0, at) + '[');
  for (let i = 0; i < entry.x.length; i += EXTENTS_PER_PIECE) {
    const extents = JSON.stringify(entry.x.slice(i, i + EXTENTS_PER_PIECE));
    yield Buffer.from((i === 0 ? '' : ',') + extents.slice(1, -1));
  }
  yield Buffer.from(']' + rest.slice(at + JSON.stringify(EXTENTS_PLACEHOLDER).length) + '\n');
}

/**
 * Lines are handed to the compressor in batches of about this size: one call per line (most are
 * ~100 bytes) cost a thread-pool round trip each, ~50 ms of a small incremental's 1,000 files.
 */
const MANIFEST_BATCH_BYTES = 256 * 1024;

/** Streams manifest lines into the repository while the backup runs. */
export class ManifestWriter {
  readonly key: string;
  private readonly input = new PassThrough();
  /** Lines (pieces) not handed to the compressor yet. */
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private readonly done: Promise<void>;
  private storedBytes = 0;

  private constructor(key: string, done: (input: PassThrough, count: (n: number) => void) => Promise<void>) {
    this.key = key;
    this.done = done(this.input, (n) => (this.storedBytes += n));
    this.done.catch(() => {}); // surfaced by finish()
  }

  static async open(repo: Repository, id: string, format: WriteFormat, signal?: AbortSignal, generation = 1): Promise<ManifestWriter> {
    const key = backupManifestKey(id, suffixOf(format), generation);
    const stages = await encodeStages(format);
    return new ManifestWriter(key, async (input, count) => {
      await runPipeline([input, ...stages, async (output: AsyncIterable<Buffer>) => {
        await repo.storage.put(key, Readable.from((async function* () {
          for await (const chunk of output) {
            count(chunk.length);
            yield chunk;
          }
        })()), { kind: 'meta', signal });
      }], signal);
    });
  }

  /**
   * Writes one line, waiting when the upload falls behind (backpressure); returns the line, in
   * the pieces it was written in (manifestLinePieces).
   */
  async write(entry: ManifestEntry | ManifestEnd): Promise<Buffer[]> {
    const pieces: Buffer[] = [];
    for (const piece of manifestLinePieces(entry)) {
      pieces.push(piece);
      this.batch.push(piece);
      this.batchBytes += piece.length;
      if (this.batchBytes >= MANIFEST_BATCH_BYTES) await this.writeBatch();
    }
    return pieces;
  }

  private async writeBatch(): Promise<void> {
    if (this.batch.length === 0) return;
    const content = this.batch.length === 1 ? this.batch[0]! : Buffer.concat(this.batch);
    this.batch = [];
    this.batchBytes = 0;
    if (!this.input.write(content)) {
      await new Promise<void>((resolve) => this.input.once('drain', resolve));
    }
  }

  async finish(): Promise<number> {
    await this.writeBatch();
    this.input.end();
    await this.done;
    return this.storedBytes;
  }

  abort(error: Error): void {
    this.input.destroy(error);
  }
}

/** Reads a manifest line by line (entries, then the end line). */
export function readManifest(repo: Repository, summary: BackupSummary): AsyncGenerator<ManifestEntry | ManifestEnd> {
  return readManifestObject(repo, summary.manifestKey, `backup ${summary.id}`, { requireEnd: true });
}

/**
 * The lines of a stream, read as they are consumed. (readline reads ahead up to 1,024 lines: a
 * whole manifest of a few hundred files, fragmented segments' lines of MiB each among them,
 * held in memory while a backup walks its base.)
 */
async function* linesOf(input: AsyncIterable<Buffer>): AsyncGenerator<string> {
  let pending: Buffer[] = [];
  for await (const chunk of input) {
    let start = 0;
    for (let end = chunk.indexOf(10); end !== -1; end = chunk.indexOf(10, start)) {
      pending.push(chunk.subarray(start, end));
      yield Buffer.concat(pending).toString('utf8').replace(/\r$/, '');
      pending = [];
      start = end + 1;
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  }
  if (pending.length > 0) yield Buffer.concat(pending).toString('utf8').replace(/\r$/, '');
}

/** Parses the next non-empty line; undefined at the end. */
async function nextEntry(lines: AsyncGenerator<string>, what: string): Promise<ManifestEntry | ManifestEnd | undefined> {
  for (;;) {
    const next = await lines.next();
    if (next.done) return undefined;
    if (next.value === '') continue;
    try {
      return JSON.parse(next.value) as ManifestEntry | ManifestEnd;
    } catch {
      throw new PgarkError('INTEGRITY', `the manifest of ${what} has a malformed line`);
    }
  }
}

/**
 * Reads any manifest-format object line by line: a backup's manifest, or a checkpoint
 * (partial-NNNN.jsonl) of a backup in progress, which has no end line (requireEnd false).
 */
export async function* readManifestObject(repo: Repository, key: string, what: string, options: { requireEnd: boolean }): AsyncGenerator<ManifestEntry | ManifestEnd> {
  const identities = isEncryptedKey(key) ? await repo.identities(what) : [];
  const stages = await decodeStages(key, identities);
  const decoded = new PassThrough();
  const body = await repo.storage.get(key);
  const piping = runPipeline([body, ...stages, decoded]).catch((error: unknown) => decoded.destroy(error as Error));
  let sawEnd = false;
  // A generator keeps its locals while it waits at `yield`: the line and the entry just yielded
  // would stay in memory until the caller asks for the next one (a fragmented segment's line is
  // ~4 MB, its entry ~10 MiB as objects, also after the caller dropped it). So the line is
  // parsed in a function of its own, and the entry handed over from a slot it leaves.
  const lines = linesOf(decoded);
  const slot: { entry?: ManifestEntry | ManifestEnd } = {};
  const take = (): ManifestEntry | ManifestEnd => {
    const entry = slot.entry!;
    slot.entry = undefined;
    return entry;
  };
  try {
    while ((slot.entry = await nextEntry(lines, what)) !== undefined) {
      if (slot.entry.t === 'end') sawEnd = true;
      yield take();
    }
  } finally {
    await lines.return(undefined);
  }
  await piping;
  if (!sawEnd && options.requireEnd) throw new PgarkError('INTEGRITY', `the manifest of ${what} is truncated`);
}
