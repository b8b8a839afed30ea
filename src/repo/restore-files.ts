/**
 * Writing files of a backup into a target directory. Files are restored in batches: the blobs
 * a batch needs are sorted by pack and offset and neighbouring blobs are fetched with one
 * ranged GET (up to RANGE_MAX bytes), so a full backup of many small files costs a handful of
 * requests instead of one per file, and a large file streams in big sequential ranges. Each
 * blob, once decoded, is written to every extent that points into it; with `delta`, only
 * blocks that differ from the existing file are written.
 */
import { closeSync, constants, futimesSync, ftruncateSync, openSync, read, write, writeSync } from 'node:fs';
import { promisify } from 'node:util';
import { PgarkError } from '../errors.ts';
import { freeNow } from '../util/memory.ts';
import type { Semaphore } from '../util/concurrency.ts';
import { isAlignedForDirectIo, type DirectWriter } from '../util/direct-io.ts';
import type { Extent, ManifestEntry } from './backup-manifest.ts';
import { rangeDecoder } from './blob-check.ts';
import { isValidPackId, packKey } from './layout.ts';
import type { Repository } from './repository.ts';

type FileEntry = Extract<ManifestEntry, { t: 'f' }>;

/** Largest ranged GET (process-max of them are held in memory at once), and the largest hole
 * between two blobs still fetched in one range. */
const RANGE_MAX = 4 * 1024 * 1024;
const RANGE_GAP_MAX = 256 * 1024;

export interface RestoreOptions {
  blockSize: number;
  /** Bounds ranged GETs in flight across all batches. */
  fetchers: Semaphore;
  identities: readonly string[];
  delta: boolean;
  /** Writes large aligned pieces past the page cache (util/direct-io.ts); not with delta. */
  direct?: DirectWriter;
  onBytes?: (bytes: number) => void;
}

export interface FileToRestore {
  entry: FileEntry;
  absolute: string;
}

interface BlobUse {
  file: number;
  extent: Extent;
}

export interface BlobRef {
  packId: string;
  offset: number;
  length: number;
  /** CRC-32 recorded in the manifest (blob-check.ts), when the encoding has no check. */
  checksum?: string;
}

export interface Range {
  packId: string;
  start: number;
  end: number; // exclusive
  blobs: BlobRef[];
}

/** Groups blobs into ranged GETs: sorted by pack and offset, neighbours merged. */
export function planRanges(blobs: Iterable<BlobRef>): Range[] {
  const sorted = [...blobs].sort((a, b) => (a.packId < b.packId ? -1 : a.packId > b.packId ? 1 : a.offset - b.offset));
  const ranges: Range[] = [];
  for (const blob of sorted) {
    const last = ranges.at(-1);
    const end = blob.offset + blob.length;
    if (last && last.packId === blob.packId && blob.offset - last.end <= RANGE_GAP_MAX && end - last.start <= RANGE_MAX) {
      last.end = Math.max(last.end, end);
      last.blobs.push(blob);
    } else {
      ranges.push({ packId: blob.packId, start: blob.offset, end, blobs: [blob] });
    }
  }
  return ranges;
}

/** Downloads one range; a missing or short pack is an INTEGRITY error. */
export async function fetchRange(repo: Repository, range: Range): Promise<Buffer> {
  if (!isValidPackId(range.packId)) throw new PgarkError('INTEGRITY', `invalid pack id "${range.packId}" in a manifest`, { hint: 'the repository has been tampered with or is damaged' });
  let body;
  try {
    body = await repo.storage.get(packKey(range.packId), { start: range.start, end: range.end - 1 });
  } catch (error) {
    // A missing pack is damage to the repository, not a "not found" the caller could fix.
    if (error instanceof PgarkError && error.code === 'NOT_FOUND') {
      throw new PgarkError('INTEGRITY', `pack ${range.packId}, which the backup's manifest references, is missing from the repository`, { hint: 'the repository has been damaged (or the pack deleted by hand); restore another backup that does not reference it (--set)', cause: error });
    }
    throw error;
  }
  // Into one buffer of the expected size: no list of chunks and second copy of the range.
  const data = Buffer.allocUnsafeSlow(range.end - range.start);
  let filled = 0;
  for await (const chunk of body) {
    const piece = chunk as Buffer;
    if (filled + piece.length > data.length) throw new PgarkError('INTEGRITY', `pack ${range.packId} returned more bytes than asked for (bytes ${range.start}-${range.end - 1})`);
    piece.copy(data, filled);
    filled += piece.length;
    // The chunk is ours once the stream has handed it over, and copied now.
    freeNow(piece);
  }
  if (filled !== data.length) {
    throw new PgarkError('INTEGRITY', `pack ${range.packId} is shorter than its manifest says (wanted bytes ${range.start}-${range.end - 1})`, { hint: 'the pack was truncated or replaced' });
  }
  return data;
}

/** Restores a batch of files; resolves when all are written (not yet fsynced: see syncFilesystems). */
export async function restoreFiles(repo: Repository, files: readonly FileToRestore[], options: RestoreOptions): Promise<{ written: number }> {
  const uses = new Map<string, BlobUse[]>();
  const blobs = new Map<string, BlobRef>();
  files.forEach((file, index) => {
    for (const extent of file.entry.x) {
      const key = `${extent[2]}@${extent[3]}`;
      if (!blobs.has(key)) blobs.set(key, { packId: extent[2], offset: extent[3], length: extent[4], ...(extent[6] ? { checksum: extent[6] } : {}) });
      let list = uses.get(key);
      if (!list) uses.set(key, (list = []));
      list.push({ file: index, extent });
    }
  });

  // O_NOFOLLOW: never write through a symlink planted at the file's own name.
  const flags = options.delta ? constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW : constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
  const fds: number[] = [];
  // O_DIRECT descriptors, opened at a file's first piece that qualifies.
  const directFds: (number | undefined)[] = [];
  const direct = options.delta ? undefined : options.direct;
  const writePiece = async (file: number, part: Buffer, position: number): Promise<number> => {
    if (direct?.enabled && isAlignedForDirectIo(position, part.length)) {
      directFds[file] ??= direct.open(files[file]!.absolute);
      const fd = directFds[file];
      if (fd !== undefined) {
        const done = await direct.write(fd, part, position);
        return done + (done < part.length ? await writeAt(fds[file]!, part, done, part.length - done, position + done) : 0);
      }
    }
    return writeAt(fds[file]!, part, 0, part.length, position);
  };
  let written = 0;
  try {
    for (const file of files) fds.push(openSync(file.absolute, flags, file.entry.m & 0o777));
    await Promise.all(planRanges(blobs.values()).map(async (range) => {
      const release = await options.fetchers.acquire();
      try {
        const data = await fetchRange(repo, range);
        const key = packKey(range.packId);
        const decoder = rangeDecoder(key, options.identities);
        try {
          for (const blob of range.blobs) {
            const stored = data.subarray(blob.offset - range.start, blob.offset - range.start + blob.length);
            const content = await decoder.decode(stored, blob);
            for (const { file, extent } of uses.get(`${range.packId}@${blob.offset}`)!) {
              const [first, count, , , , skip] = extent;
              const entry = files[file]!.entry;
              const start = skip * options.blockSize;
              const part = content.subarray(start, start + count * options.blockSize);
              // Every block but a file's last is whole; a blob shorter than its extents is damage.
              if (part.length !== Math.min(count * options.blockSize, entry.s - first * options.blockSize)) {
                throw new PgarkError('INTEGRITY', `a blob in pack ${range.packId} (offset ${blob.offset}) is shorter than ${entry.p} needs`, { hint: 'the repository has been tampered with or is damaged' });
              }
              const position = first * options.blockSize;
              // (await first, then add: `written += await …` would read `written` before awaiting.)
              const bytes = options.delta ? await writeChangedBlocks(fds[file]!, part, position, options.blockSize) : await writePiece(file, part, position);
              written += bytes;
              options.onBytes?.(part.length);
            }
            freeNow(content);
          }
          await decoder.finish().catch((error: unknown) => {
            throw new PgarkError('INTEGRITY', `the last blob fetched from pack ${range.packId} is damaged: ${(error as Error).message}`, { cause: error });
          });
        } finally {
          decoder.close();
          freeNow(data);
        }
      } finally {
        release();
      }
    }));
    files.forEach((file, i) => {
      // A new file (O_TRUNC) is exactly as long as the blocks written into it; an existing one
      // (delta) may be longer.
      if (options.delta) ftruncateSync(fds[i]!, file.entry.s);
      const mtime = new Date(file.entry.mt);
      futimesSync(fds[i]!, mtime, mtime);
    });
  } finally {
    for (const fd of [...fds, ...directFds]) if (fd !== undefined) closeSync(fd);
  }
  return { written };
}

/**
 * Writes up to this size are made from the main thread. Restores of many small files, and of
 * incrementals whose extents are a few blocks each, are mostly such writes; for them a round
 * trip through libuv's thread pool and a promise cost several times the pwrite into the page
 * cache. Larger writes go through the pool and overlap with decoding.
 */
const SYNC_WRITE_MAX = 256 * 1024;
const writeAsync = promisify(write);
const readAsync = promisify(read);

async function writeAt(fd: number, data: Buffer, offset: number, length: number, position: number): Promise<number> {
  let done = 0;
  while (done < length) {
    // pwrite may write less than asked (a signal, a full disk about to fail): go on from there.
    const n = length - done <= SYNC_WRITE_MAX
      ? writeSync(fd, data, offset + done, length - done, position + done)
      : (await writeAsync(fd, data, offset + done, length - done, position + done)).bytesWritten;
    done += n;
  }
  return done;
}

async function writeChangedBlocks(fd: number, data: Buffer, position: number, blockSize: number): Promise<number> {
  const existing = Buffer.alloc(data.length);
  const { bytesRead } = await readAsync(fd, existing, 0, data.length, position);
  let written = 0;
  for (let offset = 0; offset < data.length; offset += blockSize) {
    const end = Math.min(offset + blockSize, data.length);
    if (end <= bytesRead && existing.subarray(offset, end).equals(data.subarray(offset, end))) continue;
    written += await writeAt(fd, data, offset, end - offset, position + offset);
  }
  return written;
}

/**
 * Makes everything written durable with one syncfs per filesystem (`sync -f`, GNU coreutils)
 * instead of an fsync per file, which cost ~10 ms a file here: minutes for a cluster with many
 * relations. Falls back to a global sync.
 */
export async function syncFilesystems(paths: readonly string[]): Promise<void> {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const run = promisify(execFile);
  try {
    await run('sync', ['-f', ...paths]);
  } catch {
    await run('sync', []);
  }
}
