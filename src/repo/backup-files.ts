/**
 * Backing up one file: reading it block by block, deciding per block whether the repository
 * already has it, and encoding the new blocks into blobs. Used by the backup command, which
 * runs several of these at once.
 *
 * Relation data files (main fork) are compared page by page: a page whose LSN is non-zero and
 * older than the base backup's start LSN is unchanged since the base backup and is referenced,
 * not stored. Every other file (visibility map and free space map forks, whose pages are not
 * LSN-stamped on every change; configuration; pg_xact; ...) is compared as a whole by SHA-256.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { encodeBuffer, type WriteFormat } from '../pipeline/object-format.ts';
import { isNewPage, pageChecksum, pageLsn, RELSEG_BLOCKS, storedChecksum } from '../postgres/page.ts';
import { badChecksumPages } from '../postgres/page-checksums.ts';
import { alignedBuffers, type DataFileReader, type DirectReads } from '../util/direct-io.ts';
import { freeNow } from '../util/memory.ts';
import type { Extent, ManifestEntry } from './backup-manifest.ts';
import { blobChecksum, needsBlobChecksum } from './blob-check.ts';
import type { PackWriter } from './packs.ts';
import type { Semaphore } from '../util/concurrency.ts';
import type { ChangedBlocks, FileChanges } from './wal-block-map.ts';

/** Blocks per blob: 1 MiB of 8 KiB pages. */
export const BLOCKS_PER_BLOB = 128;

/**
 * Scattered changed pages are compressed at scatteredFormat's (slower) level only while that
 * pays: once a blob of them compresses below this ratio, the file's further ones take the fast
 * level. The slower level saved a fifth of the bytes on pgbench's pages (15:1 and more), and
 * nothing on the realistic set's (about 2.5:1), where it costs half as much CPU again.
 */
const SCATTERED_SLOW_LEVEL_MIN_RATIO = 4;

/**
 * Reusable buffers of one blob's size (BLOCKS_PER_BLOB blocks): files are read into them and
 * blobs are encoded from them. Fresh 1 MiB buffers for every read cost more than the reading
 * (page faults, and garbage collections driven by external memory). They are page-aligned, as
 * direct reads need (util/direct-io.ts), and allocated a few at a time; how many are in use at
 * once is bounded by the files in flight and the encoders, so the pool stays small, and it
 * keeps them all.
 */
export class BufferPool {
  private static readonly PER_ALLOCATION = 4;
  private readonly idle: Buffer[] = [];
  readonly size: number;

  constructor(size: number) {
    this.size = size;
  }

  take(): Buffer {
    if (this.idle.length === 0) this.idle.push(...alignedBuffers(BufferPool.PER_ALLOCATION, this.size));
    return this.idle.pop()!;
  }

  give(buffer: Buffer): void {
    this.idle.push(buffer);
  }
}

export interface FileBackupContext {
  blockSize: number;
  /** Bounds the blobs being encoded at once, across all files (CPU and memory). */
  encoders: Semaphore;
  /** Buffers of BLOCKS_PER_BLOB blocks. */
  buffers: BufferPool;
  /** Opens relation files for reading, past the page cache where that pays (direct-io.ts). */
  reads: DirectReads;
  /** For blobs of whole reads of consecutive pages (a full backup, new or rewritten files). */
  format: WriteFormat;
  /** For blobs collected from changed pages scattered among unchanged ones (codec.ts says why). */
  scatteredFormat: WriteFormat;
  packs: PackWriter;
  /** Start LSN of the base backup (incrementals only). */
  baseStartLsn: number | undefined;
  /**
   * The blocks the WAL changed since the base's start (wal-block-map.ts), when known: relation
   * files then read only those, not every page.
   */
  walChanges?: ChangedBlocks;
  /** Data checksums are on: verify every relation page read; pages changed after this
   * backup's start LSN may be torn mid-write and are left to WAL replay. */
  verifyChecksumsBefore: number | undefined;
  signal?: AbortSignal;
}

export interface FileBackupResult {
  entry: Extract<ManifestEntry, { t: 'f' }>;
  /** The file's size. */
  bytesRead: number;
  /** What was actually read from disk (less when the WAL block map let unchanged pages be). */
  readBytes: number;
  blocksStored: number;
  blocksReferenced: number;
  /** Block numbers (within the file) whose data checksum is wrong. */
  checksumErrors: number[];
}

type FileEntry = Extract<ManifestEntry, { t: 'f' }>;

/** A file to back up, as the walk of the data directory found it (`size`: its length then). */
export interface DataFile {
  path: string;
  absolute: string;
  mode: number;
  size: number;
  mtimeMs: number;
  relation: boolean;
}

/** The parts of `extents` that cover blocks [from, from + count), re-based. */
export function sliceExtents(extents: readonly Extent[], from: number, count: number): Extent[] {
  const out: Extent[] = [];
  const end = from + count;
  for (const [first, blocks, packId, offset, length, skip, ...checksum] of extents) {
    const start = Math.max(first, from);
    const stop = Math.min(first + blocks, end);
    if (start < stop) out.push([start, stop - start, packId, offset, length, skip + (start - first), ...checksum]);
  }
  return out;
}

/**
 * sliceExtents for ascending, non-overlapping requests over sorted extents (a file's runs of
 * unchanged blocks, in order): each extent is visited about once, not once per run.
 */
class ExtentSlicer {
  private readonly extents: readonly Extent[];
  private next = 0;

  constructor(extents: readonly Extent[]) {
    this.extents = extents;
  }

  slice(from: number, count: number, out: Extent[]): number {
    const end = from + count;
    while (this.next < this.extents.length && this.extents[this.next]![0] + this.extents[this.next]![1] <= from) this.next++;
    let blocks = 0;
    for (let i = this.next; i < this.extents.length && this.extents[i]![0] < end; i++) {
      const extent = this.extents[i]!;
      const [first, length] = extent;
      const start = Math.max(first, from);
      const stop = Math.min(first + length, end);
      if (start >= stop) continue;
      blocks += stop - start;
      // A whole extent is shared, not copied (extents are never changed once made): a fragmented
      // segment's list runs to 100,000s of extents, each a JS array of ~100 bytes.
      if (start === first && stop === first + length) {
        out.push(extent);
      } else {
        const [, , packId, offset, stored, skip, ...checksum] = extent;
        out.push([start, stop - start, packId, offset, stored, skip + (start - first), ...checksum]);
      }
    }
    return blocks;
  }
}

function blocksOf(extents: readonly Extent[]): number {
  return extents.reduce((sum, [, count]) => sum + count, 0);
}

/** Collects changed blocks of one file into blobs of up to BLOCKS_PER_BLOB blocks. */
class BlobBuilder {
  private buffer: Buffer | undefined;
  private bytes = 0;
  private numbers: number[] = [];
  /** The blob being filled holds pages picked out of reads (add), not whole reads (adopt). */
  private scattered = false;
  /** A blob of this file's scattered pages compressed poorly: the others take the fast level. */
  private scatteredPoorly = false;
  readonly extents: Extent[] = [];
  private readonly jobs: Promise<void>[] = [];
  stored = 0;
  private readonly ctx: FileBackupContext;

  constructor(ctx: FileBackupContext) {
    this.ctx = ctx;
  }

  get empty(): boolean {
    return this.numbers.length === 0;
  }

  /**
   * Copies a run of consecutive blocks in, starting with block `firstNumber` (the last one may be
   * partial), flushing whenever the blob is full. Returns a promise only when it flushed: a run
   * that fits costs no pause of its own (an incremental adds tens of thousands of runs).
   */
  add(firstNumber: number, source: Buffer, offset: number, length: number): Promise<void> | undefined {
    const { blockSize } = this.ctx;
    this.buffer ??= this.ctx.buffers.take();
    const take = Math.min(length, this.buffer.length - this.bytes);
    source.copy(this.buffer, this.bytes, offset, offset + take);
    this.bytes += take;
    this.scattered = true;
    const count = Math.ceil(take / blockSize);
    for (let i = 0; i < count; i++) this.numbers.push(firstNumber + i);
    if (this.numbers.length < BLOCKS_PER_BLOB) return undefined;
    return (async () => {
      await this.flush();
      if (take < length) await this.add(firstNumber + count, source, offset + take, length - take);
    })();
  }

  /** Takes over a whole read buffer of consecutive changed blocks (no copy); the builder must be empty. */
  async adopt(firstNumber: number, buffer: Buffer, bytes: number): Promise<void> {
    this.buffer = buffer;
    this.bytes = bytes;
    const count = Math.ceil(bytes / this.ctx.blockSize);
    for (let i = 0; i < count; i++) this.numbers.push(firstNumber + i);
    if (count >= BLOCKS_PER_BLOB) await this.flush();
  }

  /**
   * Hands the collected blocks to an encoder and returns once one is free, not when it is
   * done: a large file keeps several cores busy. `finish` waits for all of them.
   */
  async flush(): Promise<void> {
    if (this.numbers.length === 0) return;
    const buffer = this.buffer!;
    const content = buffer.subarray(0, this.bytes);
    const numbers = this.numbers;
    const format = this.scattered && !this.scatteredPoorly ? this.ctx.scatteredFormat : this.ctx.format;
    this.buffer = undefined;
    this.bytes = 0;
    this.numbers = [];
    this.scattered = false;
    const release = await this.ctx.encoders.acquire();
    const job = (async () => {
      try {
        const encoded = await encodeBuffer(content, format);
        if (format !== this.ctx.format && encoded.length * SCATTERED_SLOW_LEVEL_MIN_RATIO > content.length) this.scatteredPoorly = true;
        // Without compression the blob may be the buffer itself: then it goes back once the pack has copied it.
        const aliased = encoded.buffer === buffer.buffer && encoded.byteOffset === buffer.byteOffset;
        if (!aliased) this.ctx.buffers.give(buffer);
        const { packId, offset, length } = await this.ctx.packs.add(encoded);
        const checksum: [string?] = needsBlobChecksum(format) ? [blobChecksum(encoded)] : [];
        // The pack has a copy: free the blob now, not at some later full garbage collection.
        if (aliased) this.ctx.buffers.give(buffer);
        else freeNow(encoded);
        // One extent per run of consecutive block numbers inside the blob.
        let runStart = 0;
        for (let i = 1; i <= numbers.length; i++) {
          if (i === numbers.length || numbers[i] !== numbers[i - 1]! + 1) {
            this.extents.push([numbers[runStart]!, i - runStart, packId, offset, length, runStart, ...checksum]);
            runStart = i;
          }
        }
        this.stored += numbers.length;
      } finally {
        release();
      }
    })();
    job.catch(() => {}); // surfaced by finish()
    this.jobs.push(job);
  }

  async finish(): Promise<void> {
    await this.flush();
    await Promise.all(this.jobs);
  }

  /** After a failure: the partly filled buffer goes back (jobs in flight return theirs). */
  discard(): void {
    if (this.buffer) this.ctx.buffers.give(this.buffer);
    this.buffer = undefined;
  }
}

async function sha256OfFile(path: string, buffers: BufferPool): Promise<string> {
  const hash = createHash('sha256');
  const handle = await open(path, 'r');
  const buffer = buffers.take();
  try {
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      hash.update(buffer.subarray(0, bytesRead));
      // A short read is the end of the file (as PieceReader takes it): most files are one read.
      if (bytesRead < buffer.length) break;
    }
  } finally {
    buffers.give(buffer);
    await handle.close();
  }
  return hash.digest('hex');
}

/**
 * A file in buffer-sized pieces, read one piece ahead: the next read is under way while the
 * current piece is checked and handed to an encoder. Direct reads wait for the device: one at a
 * time they ran at 630 MB/s here, with one more under way at 1 GB/s.
 */
class PieceReader {
  private readonly reader: DataFileReader;
  private readonly buffers: BufferPool;
  private ahead: { buffer: Buffer; read: Promise<number> } | undefined;
  private position: number;
  private ended = false;

  /** `from`: the byte offset of the first piece. */
  constructor(reader: DataFileReader, buffers: BufferPool, from = 0) {
    this.reader = reader;
    this.buffers = buffers;
    this.position = from;
  }

  private readAhead(): void {
    const buffer = this.buffers.take();
    const read = this.reader.read(buffer, buffer.length, this.position);
    read.catch(() => {}); // awaited by next() or close()
    this.ahead = { buffer, read };
    this.position += buffer.length;
  }

  /** The next piece, whose buffer the caller then owns (BufferPool.give); undefined at the end. */
  async next(): Promise<{ buffer: Buffer; bytes: number } | undefined> {
    if (this.ended) return undefined;
    if (!this.ahead) this.readAhead();
    const { buffer, read } = this.ahead!;
    this.ahead = undefined;
    let bytes: number;
    try {
      bytes = await read;
    } catch (error) {
      this.ended = true;
      this.buffers.give(buffer);
      throw error;
    }
    // A short read is the end of the file (as it was when read).
    if (bytes < buffer.length) this.ended = true;
    else this.readAhead();
    if (bytes === 0) {
      this.buffers.give(buffer);
      return undefined;
    }
    return { buffer, bytes };
  }

  /** Waits for a read still under way, takes its buffer back and closes the file. */
  async close(): Promise<void> {
    const ahead = this.ahead;
    this.ahead = undefined;
    this.ended = true;
    if (ahead) {
      await ahead.read.catch(() => {});
      this.buffers.give(ahead.buffer);
    }
    await this.reader.close();
  }
}

export async function backupFile(
  file: DataFile,
  base: FileEntry | undefined,
  ctx: FileBackupContext,
): Promise<FileBackupResult> {
  const entry: FileEntry = { t: 'f', p: file.path, m: file.mode, s: 0, mt: Math.round(file.mtimeMs), x: [] };

  // Whole-file comparison for everything but relation data.
  if (!file.relation && base?.h !== undefined) {
    const hash = await sha256OfFile(file.absolute, ctx.buffers);
    if (hash === base.h) {
      return { entry: { ...entry, s: base.s, h: hash, x: base.x }, bytesRead: base.s, readBytes: base.s, blocksStored: 0, blocksReferenced: blocksOf(base.x), checksumErrors: [] };
    }
  }

  if (file.relation && base && ctx.baseStartLsn !== undefined && ctx.walChanges) {
    const changes = ctx.walChanges.forFile(file.path);
    if (changes?.kind === 'blocks') return backupChangedBlocks(file, base, changes, ctx);
    // Created or truncated since the base (or its database was): every block counts as new.
    if (changes?.kind === 'all') base = undefined;
  }

  const { blockSize, buffers } = ctx;
  const builder = new BlobBuilder(ctx);
  const hash = file.relation ? undefined : createHash('sha256');
  const baseExtents = file.relation && base && ctx.baseStartLsn !== undefined ? new ExtentSlicer(base.x) : undefined;
  const baseBlocks = baseExtents ? Math.floor(base!.s / blockSize) : 0;
  const baseStartLsn = ctx.baseStartLsn ?? 0;
  const referenced: Extent[] = [];
  let runStart = -1; // first block of the current run of unchanged blocks
  let size = 0;
  let blocksReferenced = 0;
  const checksumErrors: number[] = [];
  const verify = file.relation && ctx.verifyChecksumsBefore !== undefined;
  const firstBlockNumber = verify ? segmentOf(file.path) * RELSEG_BLOCKS : 0;
  const unchanged = new Uint8Array(BLOCKS_PER_BLOB);

  const closeRun = (end: number): void => {
    if (runStart < 0) return;
    blocksReferenced += baseExtents!.slice(runStart, end - runStart, referenced);
    runStart = -1;
  };

  const pieces = new PieceReader(await ctx.reads.open(file.absolute, { relation: file.relation, comparedWithBase: baseExtents !== undefined }), buffers);
  try {
    let number = 0; // of the first block in the buffer
    for (;;) {
      ctx.signal?.throwIfAborted();
      const piece = await pieces.next();
      if (!piece) break;
      const { buffer, bytes: bytesRead } = piece;
      let kept = false;
      try {
        size += bytesRead;
        hash?.update(buffer.subarray(0, bytesRead));
        const blocks = Math.ceil(bytesRead / blockSize);
        let changedBlocks = 0;
        for (let i = 0; i < blocks; i++) {
          const offset = i * blockSize;
          const whole = offset + blockSize <= bytesRead;
          let lsn = -1;
          if (baseExtents && number + i < baseBlocks && whole) lsn = pageLsn(buffer, offset);
          unchanged[i] = lsn > 0 && lsn < baseStartLsn ? 1 : 0;
          if (!unchanged[i]) changedBlocks++;
        }
        if (verify) await collectChecksumErrors(file.absolute, buffer, bytesRead, number, firstBlockNumber, ctx, checksumErrors);
        if (changedBlocks === blocks && builder.empty) {
          // Every block is new (a full backup, a new or rewritten file): the buffer is the blob.
          closeRun(number);
          kept = true;
          await builder.adopt(number, buffer, bytesRead);
        } else {
          for (let i = 0; i < blocks;) {
            if (unchanged[i]) {
              if (runStart < 0) runStart = number + i;
              i++;
              continue;
            }
            closeRun(number + i);
            // the run of changed blocks starting here, copied in one piece
            let end = i + 1;
            while (end < blocks && !unchanged[end]) end++;
            const offset = i * blockSize;
            const flushed = builder.add(number + i, buffer, offset, Math.min(end * blockSize, bytesRead) - offset);
            if (flushed) await flushed;
            i = end;
          }
        }
        number += blocks;
      } finally {
        if (!kept) buffers.give(buffer);
      }
    }
    closeRun(number);
    await builder.finish();
  } finally {
    builder.discard();
    await pieces.close();
  }

  const extents = referenced.concat(builder.extents).sort((a, b) => a[0] - b[0]);
  // Referenced slices of blocks the file no longer has (it shrank) must not survive. (Copied
  // only then: the list of a fragmented segment runs to 100,000s of extents.)
  const blockCount = Math.ceil(size / blockSize);
  const clipped = extents.every(([first, count]) => first + count <= blockCount) ? extents : sliceExtents(extents, 0, blockCount);
  return {
    entry: { ...entry, s: size, ...(hash ? { h: hash.digest('hex') } : {}), x: clipped },
    bytesRead: size,
    readBytes: size,
    blocksStored: builder.stored,
    blocksReferenced,
    checksumErrors,
  };
}

/**
 * Reading a whole piece (1 MiB) costs about as much as this many reads of a few pages: measured
 * here, from the page cache, ~300 µs of CPU against 13-20 µs for one of 8 KiB (and from an SSD
 * about the same balance). A piece whose changed runs need more reads is read whole.
 */
const MAX_SEPARATE_READS = 12;
/** Unchanged blocks between two changed runs that are read anyway, to make one read of them. */
const READ_THROUGH_GAP = 4;

/**
 * An incremental of a relation file whose changes since the base the WAL block map knows: only
 * the changed blocks (and every block from the map's limit or the base's end on) are read;
 * the others are referenced from the base without being read.
 */
async function backupChangedBlocks(
  file: DataFile,
  base: FileEntry,
  changes: Extract<FileChanges, { kind: 'blocks' }>,
  ctx: FileBackupContext,
): Promise<FileBackupResult> {
  const { blockSize, buffers } = ctx;
  // No block changed since the base and the file was as long as the base's when the walk saw it
  // (after this backup began): every block is the base's, and nothing needs reading — most
  // relation files of a small incremental (a database's ~300 catalog files). Blocks the file
  // gains after that are this backup's own WAL's, which replay writes.
  const baseBlocks = base.s / blockSize;
  if (Number.isInteger(baseBlocks) && file.size === base.s && changes.limit >= baseBlocks && !changes.anyChanged(baseBlocks)) {
    return {
      entry: { t: 'f', p: file.path, m: file.mode, s: base.s, mt: Math.round(file.mtimeMs), x: base.x },
      bytesRead: base.s,
      readBytes: 0,
      blocksStored: 0,
      blocksReferenced: blocksOf(base.x),
      checksumErrors: [],
    };
  }
  const builder = new BlobBuilder(ctx);
  const slicer = new ExtentSlicer(base.x);
  const referenced: Extent[] = [];
  let blocksReferenced = 0;
  let bytesRead = 0;
  const checksumErrors: number[] = [];
  const verify = ctx.verifyChecksumsBefore !== undefined;
  const firstBlockNumber = segmentOf(file.path) * RELSEG_BLOCKS;
  // Blocks before this either changed (the map names them) or are the base's; from it on, all are read.
  const readFrom = Math.min(Math.floor(base.s / blockSize), changes.limit);
  const reader = await ctx.reads.open(file.absolute, { relation: true, comparedWithBase: true });
  let size = 0;
  let tail: PieceReader | undefined;
  const changed: number[] = [];
  const reads: number[] = []; // first block, count of each read

  /** Reads blocks [first, first + count) into `buffer` at block `at`; false when the file ended first. */
  const readBlocks = async (buffer: Buffer, at: number, first: number, count: number): Promise<boolean> => {
    const bytes = await reader.read(buffer.subarray(at * blockSize), count * blockSize, first * blockSize);
    bytesRead += bytes;
    if (verify && bytes > 0) await collectChecksumErrors(file.absolute, buffer.subarray(at * blockSize), bytes, first, firstBlockNumber, ctx, checksumErrors);
    return bytes === count * blockSize;
  };

  try {
    let truncated = false;
    for (let start = 0; start < readFrom && !truncated; start += BLOCKS_PER_BLOB) {
      ctx.signal?.throwIfAborted();
      const end = Math.min(start + BLOCKS_PER_BLOB, readFrom);
      changed.length = 0;
      for (let block = start; block < end; block++) if (changes.changed(block)) changed.push(block);
      if (changed.length === 0) {
        blocksReferenced += slicer.slice(start, end - start, referenced);
        size = end * blockSize;
        continue;
      }
      const buffer = buffers.take();
      try {
        // Runs of changed blocks, joined across short gaps: each read on its own, or the piece whole.
        reads.length = 0;
        for (let i = 0; i < changed.length && reads.length / 2 <= MAX_SEPARATE_READS;) {
          let last = i;
          while (last + 1 < changed.length && changed[last + 1]! - changed[last]! <= READ_THROUGH_GAP + 1) last++;
          reads.push(changed[i]!, changed[last]! - changed[i]! + 1);
          i = last + 1;
        }
        if (reads.length / 2 > MAX_SEPARATE_READS) {
          truncated = !(await readBlocks(buffer, 0, start, end - start));
        } else {
          for (let r = 0; r < reads.length && !truncated; r += 2) truncated = !(await readBlocks(buffer, reads[r]! - start, reads[r]!, reads[r + 1]!));
        }
        if (truncated) break; // shrank while being read: WAL replay truncates it again
        // Changed runs into the blob, unchanged ones referenced, in block order.
        let block = start;
        for (let i = 0; i < changed.length;) {
          let last = i;
          while (last + 1 < changed.length && changed[last + 1] === changed[last]! + 1) last++;
          if (changed[i]! > block) blocksReferenced += slicer.slice(block, changed[i]! - block, referenced);
          const flushed = builder.add(changed[i]!, buffer, (changed[i]! - start) * blockSize, (changed[last]! - changed[i]! + 1) * blockSize);
          if (flushed) await flushed;
          block = changed[last]! + 1;
          i = last + 1;
        }
        if (block < end) blocksReferenced += slicer.slice(block, end - block, referenced);
        size = end * blockSize;
      } finally {
        buffers.give(buffer);
      }
    }

    // From readFrom on: every block, read in whole pieces like a new file.
    if (!truncated) {
      tail = new PieceReader(reader, buffers, readFrom * blockSize);
      let position = readFrom;
      for (;;) {
        ctx.signal?.throwIfAborted();
        const piece = await tail.next();
        if (!piece) break;
        const { buffer, bytes } = piece;
        bytesRead += bytes;
        if (verify) await collectChecksumErrors(file.absolute, buffer, bytes, position, firstBlockNumber, ctx, checksumErrors);
        size = position * blockSize + bytes;
        if (builder.empty) {
          await builder.adopt(position, buffer, bytes);
        } else {
          try {
            const flushed = builder.add(position, buffer, 0, bytes);
            if (flushed) await flushed; // reads the buffer until it is done
          } finally {
            buffers.give(buffer);
          }
        }
        position += Math.ceil(bytes / blockSize);
      }
    }
    await builder.finish();
  } finally {
    builder.discard();
    if (tail) await tail.close(); // closes the reader too
    else await reader.close();
  }

  const blockCount = Math.ceil(size / blockSize);
  const extents = referenced.concat(builder.extents).sort((a, b) => a[0] - b[0]);
  const clipped = extents.every(([first, count]) => first + count <= blockCount) ? extents : sliceExtents(extents, 0, blockCount);
  return {
    entry: { t: 'f', p: file.path, m: file.mode, s: size, mt: Math.round(file.mtimeMs), x: clipped },
    bytesRead: size,
    readBytes: bytesRead,
    blocksStored: builder.stored,
    blocksReferenced,
    checksumErrors,
  };
}

/** The segment number of a relation file: "16384.2" → 2. */
function segmentOf(path: string): number {
  const dot = path.lastIndexOf('.');
  return dot > path.lastIndexOf('/') ? Number(path.slice(dot + 1)) : 0;
}

/**
 * Verifies the data checksums of `bytes` of pages read into `buffer`, the first being block
 * `first` of the file, and adds the block numbers of the confirmed failures to `errors`.
 */
async function collectChecksumErrors(path: string, buffer: Buffer, bytes: number, first: number, firstBlockNumber: number, ctx: FileBackupContext, errors: number[]): Promise<void> {
  for (const i of badChecksumPages(buffer, bytes, ctx.blockSize, firstBlockNumber + first)) {
    if (await confirmChecksumError(path, first + i, firstBlockNumber, ctx)) errors.push(first + i);
  }
}

/**
 * A page that fails its checksum may have been read while PostgreSQL was writing it: re-read
 * it; still failing and changed after the backup began (LSN at or past the start) means torn,
 * which WAL replay repairs; still failing and older means real corruption.
 */
async function confirmChecksumError(path: string, number: number, firstBlockNumber: number, ctx: FileBackupContext): Promise<boolean> {
  const page = Buffer.alloc(ctx.blockSize);
  const handle = await open(path, 'r');
  try {
    const { bytesRead } = await handle.read(page, 0, ctx.blockSize, number * ctx.blockSize);
    if (bytesRead < ctx.blockSize) return false; // truncated meanwhile
  } finally {
    await handle.close();
  }
  if (isNewPage(page) || pageChecksum(page, firstBlockNumber + number) === storedChecksum(page)) return false;
  return pageLsn(page, 0) < ctx.verifyChecksumsBefore!;
}
