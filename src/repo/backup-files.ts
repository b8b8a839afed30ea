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
import type { Extent, ManifestEntry } from './backup-manifest.ts';
import { blobChecksum, needsBlobChecksum } from './blob-check.ts';
import type { PackWriter } from './packs.ts';
import type { Semaphore } from '../util/concurrency.ts';

/** Blocks per blob: 1 MiB of 8 KiB pages. */
export const BLOCKS_PER_BLOB = 128;

export interface FileBackupContext {
  blockSize: number;
  /** Bounds the blobs being encoded at once, across all files (CPU and memory). */
  encoders: Semaphore;
  format: WriteFormat;
  packs: PackWriter;
  /** Start LSN of the base backup (incrementals only). */
  baseStartLsn: bigint | undefined;
  /** Data checksums are on: verify every relation page read; pages changed after this
   * backup's start LSN may be torn mid-write and are left to WAL replay. */
  verifyChecksumsBefore: bigint | undefined;
  signal?: AbortSignal;
}

export interface FileBackupResult {
  entry: Extract<ManifestEntry, { t: 'f' }>;
  bytesRead: number;
  blocksStored: number;
  blocksReferenced: number;
  /** Block numbers (within the file) whose data checksum is wrong. */
  checksumErrors: number[];
}

type FileEntry = Extract<ManifestEntry, { t: 'f' }>;

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

function blocksOf(extents: readonly Extent[]): number {
  return extents.reduce((sum, [, count]) => sum + count, 0);
}

/** Collects changed blocks of one file into blobs of up to BLOCKS_PER_BLOB blocks. */
class BlobBuilder {
  private blocks: Buffer[] = [];
  private numbers: number[] = [];
  readonly extents: Extent[] = [];
  private readonly jobs: Promise<void>[] = [];
  stored = 0;
  private readonly ctx: FileBackupContext;

  constructor(ctx: FileBackupContext) {
    this.ctx = ctx;
  }

  async add(blockNumber: number, block: Buffer): Promise<void> {
    this.blocks.push(block);
    this.numbers.push(blockNumber);
    if (this.blocks.length >= BLOCKS_PER_BLOB) await this.flush();
  }

  /**
   * Hands the collected blocks to an encoder and returns once one is free, not when it is
   * done: a large file keeps several cores busy. `finish` waits for all of them.
   */
  async flush(): Promise<void> {
    if (this.blocks.length === 0) return;
    const content = Buffer.concat(this.blocks);
    const numbers = this.numbers;
    this.blocks = [];
    this.numbers = [];
    const release = await this.ctx.encoders.acquire();
    const job = (async () => {
      try {
        const encoded = await encodeBuffer(content, this.ctx.format);
        const { packId, offset, length } = await this.ctx.packs.add(encoded);
        const checksum: [string?] = needsBlobChecksum(this.ctx.format) ? [blobChecksum(encoded)] : [];
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
}

const READ_SIZE = BLOCKS_PER_BLOB * 8192;

async function* readBlocks(path: string, blockSize: number): AsyncGenerator<{ number: number; block: Buffer }> {
  const handle = await open(path, 'r');
  try {
    let number = 0;
    for (;;) {
      const buffer = Buffer.allocUnsafe(Math.max(READ_SIZE, blockSize));
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) return;
      for (let offset = 0; offset < bytesRead; offset += blockSize) {
        yield { number: number++, block: buffer.subarray(offset, Math.min(offset + blockSize, bytesRead)) };
      }
      if (bytesRead < buffer.length) return;
    }
  } finally {
    await handle.close();
  }
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  const handle = await open(path, 'r');
  try {
    for await (const chunk of handle.createReadStream({ highWaterMark: READ_SIZE, autoClose: false })) hash.update(chunk as Buffer);
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

export async function backupFile(
  file: { path: string; absolute: string; mode: number; mtimeMs: number; relation: boolean },
  base: FileEntry | undefined,
  ctx: FileBackupContext,
): Promise<FileBackupResult> {
  const entry: FileEntry = { t: 'f', p: file.path, m: file.mode, s: 0, mt: Math.round(file.mtimeMs), x: [] };

  // Whole-file comparison for everything but relation data.
  if (!file.relation && base?.h !== undefined) {
    const hash = await sha256OfFile(file.absolute);
    if (hash === base.h) {
      return { entry: { ...entry, s: base.s, h: hash, x: base.x }, bytesRead: base.s, blocksStored: 0, blocksReferenced: blocksOf(base.x), checksumErrors: [] };
    }
  }

  const builder = new BlobBuilder(ctx);
  const hash = file.relation ? undefined : createHash('sha256');
  const baseExtents = file.relation && base && ctx.baseStartLsn !== undefined ? base.x : undefined;
  const baseBlocks = baseExtents ? Math.floor(base!.s / ctx.blockSize) : 0;
  let referenced: Extent[] = [];
  let runStart = -1; // first block of the current run of unchanged blocks
  let size = 0;
  let blocksReferenced = 0;
  const checksumErrors: number[] = [];
  const verify = file.relation && ctx.verifyChecksumsBefore !== undefined;
  const firstBlockNumber = verify ? segmentOf(file.path) * RELSEG_BLOCKS : 0;

  const closeRun = (end: number): void => {
    if (runStart < 0) return;
    const slice = sliceExtents(baseExtents!, runStart, end - runStart);
    referenced = referenced.concat(slice);
    blocksReferenced += blocksOf(slice);
    runStart = -1;
  };

  for await (const { number, block } of readBlocks(file.absolute, ctx.blockSize)) {
    ctx.signal?.throwIfAborted();
    size += block.length;
    hash?.update(block);
    let unchanged = false;
    if (baseExtents && number < baseBlocks && block.length === ctx.blockSize) {
      const lsn = pageLsn(block, 0);
      unchanged = lsn !== 0n && lsn < ctx.baseStartLsn!;
    }
    if (verify && block.length === ctx.blockSize && !isNewPage(block) && pageChecksum(block, firstBlockNumber + number) !== storedChecksum(block)) {
      if (await confirmChecksumError(file.absolute, number, firstBlockNumber, ctx)) checksumErrors.push(number);
    }
    if (unchanged) {
      if (runStart < 0) runStart = number;
    } else {
      closeRun(number);
      await builder.add(number, block);
    }
  }
  closeRun(Math.ceil(size / ctx.blockSize));
  await builder.finish();

  const extents = referenced.concat(builder.extents).sort((a, b) => a[0] - b[0]);
  // Referenced slices of blocks the file no longer has (it shrank) must not survive.
  const blockCount = Math.ceil(size / ctx.blockSize);
  const clipped = sliceExtents(extents, 0, blockCount);
  return {
    entry: { ...entry, s: size, ...(hash ? { h: hash.digest('hex') } : {}), x: clipped },
    bytesRead: size,
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
