/**
 * Writing the files of a backup into a target directory, one batch of files at a time, in file
 * order: every file is cut into windows of WINDOW_BLOCKS blocks, each window is assembled from
 * the pieces of the blobs its extents point into, in a page-aligned buffer, and written with
 * one write (O_DIRECT where possible, util/direct-io.ts). An incremental's windows are made of
 * many short pieces from blobs of several backups; written piece by piece they were dozens of
 * small page-cache writes per MiB, written by window they cost what a full backup's do.
 *
 * Blobs are fetched ahead of the windows that need them, in the order of their first use:
 * neighbours in a pack needed around the same time share one ranged GET of up to RANGE_MAX
 * bytes, so a full backup of many small files costs a handful of requests; blobs are decoded a
 * bounded amount ahead by pooled zstd contexts (BlobSupply). A decoded blob is kept until its
 * last window is assembled (a window that is one whole blob is written straight from the buffer
 * the blob was decoded into). Because a blob belongs to one file and covers its blocks in file
 * order, the blobs alive at any time are about two per backup of the chain that the file's
 * extents come from, plus the lookahead.
 */
import { closeSync, constants, futimesSync, ftruncateSync, openSync, read, write, writeSync } from 'node:fs';
import { finished } from 'node:stream/promises';
import { promisify } from 'node:util';
import { PgarkError } from '../errors.ts';
import { freeNow, type BufferSource } from '../util/memory.ts';
import { Semaphore } from '../util/concurrency.ts';
import { isAlignedBuffer, isAlignedForDirectIo, type AlignedBufferPool, type DirectIo } from '../util/direct-io.ts';
import type { ManifestEntry } from './backup-manifest.ts';
import { rangeDecoder, type RangeDecoder } from './blob-check.ts';
import { isValidPackId, packKey } from './layout.ts';
import type { Repository } from './repository.ts';

type FileEntry = Extract<ManifestEntry, { t: 'f' }>;

/**
 * Largest ranged GET, and the largest hole between two blobs still fetched in one range. Each
 * GET costs ~1 ms of CPU in the client (the SDK's middleware, signing, a response to parse)
 * and more in a local object store (RGW: ~1.5 ms): at 2 MiB, three 530 KiB blobs filled a
 * range and a restore made one GET per 1.2 MB; at 4 MiB, one per 1.7 MB (a third fewer).
 */
export const RANGE_MAX = 4 * 1024 * 1024;
const RANGE_GAP_MAX = 256 * 1024;
/**
 * Stored bytes fetched ahead per process (process-max): the read-ahead budget, and the stretch
 * of blobs (in the order of their use) that ranges are planned over. Not RANGE_MAX: larger
 * ranges need not hold more memory.
 */
export const FETCH_AHEAD_BYTES = 2 * 1024 * 1024;
/** Blocks per window: one blob's worth, so a full backup's window is one whole blob. */
export const WINDOW_BLOCKS = 128;

export interface RestoreOptions {
  blockSize: number;
  /** Bounds ranged GETs in flight across all batches. */
  fetchers: Semaphore;
  /** Times FETCH_AHEAD_BYTES: the stored bytes per stretch of blobs planned into ranges together. */
  processMax: number;
  /** Shared by all batches of the restore; finished by the caller. */
  decoders: DecoderPool;
  /** Shared by all batches of the restore: bounds what is fetched and decoded ahead. */
  readAhead: ReadAhead;
  /**
   * Buffers of one window (plus a byte) that large blobs are decoded into, shared by all batches;
   * page-aligned (ReusableAlignedBuffers), a window that is one whole blob is written from there.
   */
  blobBuffers: BufferSource;
  /** Buffers of WINDOW_BLOCKS blocks that windows are assembled in; bounds writes in flight. */
  windows: AlignedBufferPool;
  delta: boolean;
  /** Writes large aligned windows past the page cache (util/direct-io.ts); not with delta. */
  direct?: DirectIo;
  onBytes?: (bytes: number) => void;
}

export interface FileToRestore {
  /** restoreFiles drops its extent list (`x`) once the windows are planned. */
  entry: FileEntry;
  absolute: string;
}

export interface BlobRef {
  packId: string;
  offset: number;
  length: number;
  /** CRC-32 recorded in the manifest (blob-check.ts), when the encoding has no check. */
  checksum?: string;
}

export interface Range<B extends BlobRef = BlobRef> {
  packId: string;
  start: number;
  end: number; // exclusive
  blobs: B[];
}

/** Groups blobs into ranged GETs: sorted by pack and offset, neighbours merged. */
export function planRanges<B extends BlobRef>(blobs: Iterable<B>): Range<B>[] {
  const sorted = [...blobs].sort((a, b) => (a.packId < b.packId ? -1 : a.packId > b.packId ? 1 : a.offset - b.offset));
  const ranges: Range<B>[] = [];
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
  // 'data' events rather than an async iterator: no promise per chunk (~6,000 per GB).
  body.on('data', (chunk: Buffer) => {
    if (filled + chunk.length > data.length) {
      body.destroy(new PgarkError('INTEGRITY', `pack ${range.packId} returned more bytes than asked for (bytes ${range.start}-${range.end - 1})`));
      return;
    }
    chunk.copy(data, filled);
    filled += chunk.length;
    // The chunk is ours once the stream has handed it over, and copied now.
    freeNow(chunk);
  });
  await finished(body);
  if (filled !== data.length) {
    throw new PgarkError('INTEGRITY', `pack ${range.packId} is shorter than its manifest says (wanted bytes ${range.start}-${range.end - 1})`, { hint: 'the pack was truncated or replaced' });
  }
  return data;
}

/** A piece of a window: `length` bytes of a blob's content from `from`, at `at` in the window. */
interface Piece {
  blob: number;
  from: number;
  length: number;
  at: number;
}

/** Where a window is written from: `aligned` if it may go direct (util/direct-io.ts). */
interface WindowBuffer {
  buffer: Buffer;
  aligned: boolean;
  release: () => void;
}

/** One write: bytes [position, position + length) of a file. */
interface Window {
  file: number;
  position: number;
  length: number;
  pieces: Piece[];
}

interface PlannedBlob extends BlobRef {
  /** Index of the last window that needs it: its content is freed after that one. */
  lastWindow: number;
  /** Upper bound of its decoded size (the furthest byte any piece reads). */
  contentBytes: number;
}

/**
 * Cuts the files into windows and lists the blobs in the order of their first use. A manifest
 * whose extents do not cover a file exactly (a gap, an overlap, a block past its end) is
 * refused before anything is written.
 */
export function planWindows(files: readonly FileToRestore[], blockSize: number): { windows: Window[]; blobs: PlannedBlob[] } {
  const windows: Window[] = [];
  const blobs: PlannedBlob[] = [];
  // Pack id -> blob offset -> index in `blobs` (no "pack@offset" string per extent: a
  // fragmented segment's 70,000 of them were ~4 MiB of garbage while its windows were planned).
  const blobIndex = new Map<string, Map<number, number>>();
  const windowBytes = WINDOW_BLOCKS * blockSize;
  files.forEach((file, fileIndex) => {
    const { s: size, p: path } = file.entry;
    const broken = (detail: string) => new PgarkError('INTEGRITY', `the manifest entry of ${path} is inconsistent: ${detail}`, { hint: 'the repository has been tampered with or is damaged' });
    const extents = [...file.entry.x].sort((a, b) => a[0] - b[0]);
    let covered = 0; // bytes of the file covered by the extents so far
    let window: Window | undefined;
    for (const [first, count, packId, offset, length, skip, checksum] of extents) {
      const start = first * blockSize;
      if (start !== covered) throw broken(start > covered ? `no extent covers bytes ${covered}-${start - 1}` : `extents overlap at byte ${start}`);
      const end = Math.min(start + count * blockSize, size);
      if (end <= start) throw broken(`an extent starts at block ${first}, at or past the end of the ${size}-byte file`);
      let inPack = blobIndex.get(packId);
      if (inPack === undefined) blobIndex.set(packId, (inPack = new Map()));
      let blob = inPack.get(offset);
      if (blob === undefined) {
        blob = blobs.length;
        inPack.set(offset, blob);
        blobs.push({ packId, offset, length, ...(checksum ? { checksum } : {}), lastWindow: 0, contentBytes: 0 });
      }
      const planned = blobs[blob]!;
      planned.contentBytes = Math.max(planned.contentBytes, skip * blockSize + (end - start));
      for (let position = start; position < end;) {
        const windowStart = position - (position % windowBytes);
        if (!window || window.position !== windowStart) {
          window = { file: fileIndex, position: windowStart, length: 0, pieces: [] };
          windows.push(window);
        }
        const pieceEnd = Math.min(end, windowStart + windowBytes);
        window.pieces.push({ blob, from: skip * blockSize + (position - start), length: pieceEnd - position, at: position - windowStart });
        window.length = pieceEnd - windowStart;
        planned.lastWindow = windows.length - 1;
        position = pieceEnd;
      }
      covered = end;
    }
    if (covered !== size) throw broken(`the extents cover ${covered} of its ${size} bytes`);
  });
  return { windows, blobs };
}

interface RangeState {
  range: Range<PlannedBlob & { index: number }>;
  /** Started when first needed or fetched ahead; dropped (and freed) once all its blobs are decoded. */
  data?: Promise<Buffer>;
  started?: boolean;
  undecoded: number;
}

/**
 * The budget of what the batches of a restore fetch and decode ahead of the windows being
 * assembled, shared by all of them: two batches run at once (the next one starts while the
 * last windows of the previous are written), and with a budget each they held twice the
 * memory. The older batch fills its lookahead first; a younger one gets what is left, so
 * the budget passes from one batch to the next as the older drains.
 */
export class ReadAhead {
  /** Stored bytes of ranges started and not yet fully decoded. */
  fetched = 0;
  /** Content bytes of blobs scheduled for decoding and not yet released (blobs still in use included). */
  decoded = 0;
  readonly fetchLimit: number;
  readonly decodeLimit: number;
  private readonly supplies: BlobSupply[] = []; // in the order the batches started

  constructor(limits: { fetchBytes: number; decodeBytes: number }) {
    this.fetchLimit = limits.fetchBytes;
    this.decodeLimit = limits.decodeBytes;
  }

  join(supply: BlobSupply): void {
    this.supplies.push(supply);
  }

  leave(supply: BlobSupply): void {
    const at = this.supplies.indexOf(supply);
    if (at >= 0) this.supplies.splice(at, 1);
    this.fill();
  }

  /** Starts what the budget allows, oldest batch first. */
  fill(): void {
    for (const supply of this.supplies) {
      if (this.decoded >= this.decodeLimit && this.fetched >= this.fetchLimit) return;
      supply.fillAhead();
    }
  }
}

/**
 * Decoded blobs for the windows, in the order of their first use. Ranges (neighbouring blobs of
 * a pack, up to RANGE_MAX stored bytes) are fetched ahead and blobs are decoded ahead within the
 * restore's ReadAhead budget, each blob on its own by one of the pooled decoders (DecoderPool),
 * so a range of eighty highly compressible blobs still decodes on every core. get() always
 * starts what the blob asked for needs, whatever the budget: no deadlock.
 */
class BlobSupply {
  private readonly contents: (Promise<Buffer[]> | undefined)[] = [];
  /** The buffer each blob is decoded into, from when its decode starts until it is released. */
  private readonly outputs: (Buffer | undefined)[] = [];
  private readonly order: number[] = [];
  private readonly position: number[] = []; // blob -> its index in order
  private readonly ranges: RangeState[] = []; // in the order of their first blob's use
  private readonly rangeOf: number[] = []; // blob -> index in ranges
  private nextFetch = 0; // ranges before it have been started
  private nextDecode = 0; // blobs of `order` before it have been scheduled
  private readonly repo: Repository;
  private readonly blobs: readonly PlannedBlob[];
  private readonly options: RestoreOptions;
  private readonly budget: ReadAhead;

  constructor(repo: Repository, blobs: readonly PlannedBlob[], windows: readonly Window[], options: RestoreOptions) {
    this.repo = repo;
    this.blobs = blobs;
    this.options = options;
    this.budget = options.readAhead;
    const seen = new Uint8Array(blobs.length);
    for (const window of windows) {
      for (const piece of window.pieces) {
        if (seen[piece.blob]) continue;
        seen[piece.blob] = 1;
        this.position[piece.blob] = this.order.length;
        this.order.push(piece.blob);
      }
    }
    // Ranges are planned over consecutive stretches of `order` (so that neighbours in a pack
    // needed around the same time share one), fetched in the order of their first use.
    const stretchBytes = options.processMax * FETCH_AHEAD_BYTES;
    for (let i = 0; i < this.order.length;) {
      const stretch: (PlannedBlob & { index: number })[] = [];
      let stored = 0;
      for (; i < this.order.length && (stretch.length === 0 || stored < stretchBytes); i++) {
        const index = this.order[i]!;
        stretch.push({ ...blobs[index]!, index });
        stored += blobs[index]!.length;
      }
      const planned = planRanges(stretch).map((range) => ({ range, undecoded: range.blobs.length, first: Math.min(...range.blobs.map((blob) => this.position[blob.index]!)) }));
      planned.sort((x, y) => x.first - y.first);
      for (const { range, undecoded } of planned) {
        for (const blob of range.blobs) this.rangeOf[blob.index] = this.ranges.length;
        this.ranges.push({ range, undecoded });
      }
    }
    this.budget.join(this);
  }

  get(blob: number): Promise<Buffer[]> {
    while (this.nextDecode <= this.position[blob]!) this.scheduleDecode(this.order[this.nextDecode++]!);
    this.budget.fill();
    return this.contents[blob]!;
  }

  /** Decodes and fetches ahead as far as the shared budget allows. */
  fillAhead(): void {
    while (this.nextDecode < this.order.length && this.budget.decoded < this.budget.decodeLimit) {
      // Decoding ahead does not start fetches past the fetch budget either: an incremental's
      // blobs come from ranges of several backups, each up to RANGE_MAX.
      if (!this.ranges[this.rangeOf[this.order[this.nextDecode]!]!]!.started && this.budget.fetched >= this.budget.fetchLimit) break;
      this.scheduleDecode(this.order[this.nextDecode++]!);
    }
    while (this.nextFetch < this.ranges.length && this.budget.fetched < this.budget.fetchLimit) this.fetch(this.ranges[this.nextFetch++]!);
  }

  release(blob: number): void {
    const content = this.contents[blob];
    if (!content) return;
    this.contents[blob] = undefined;
    this.budget.decoded -= this.outputSize(blob);
    // Once the decode has ended (zlib no longer writes into the buffer).
    void content.then((parts) => parts, () => []).then((parts) => {
      const output = this.outputs[blob];
      this.outputs[blob] = undefined;
      for (const part of parts) if (part.buffer !== output?.buffer) freeNow(part);
      if (output) this.options.blobBuffers.give(output);
    });
  }

  /**
   * The size of the buffer a blob is decoded into, which is what it costs in the budget: a
   * reused window-sized one for large blobs, one of its own size for small ones (a small file's
   * blob in a window-sized buffer would hold a MiB for a few KiB). One byte more than the
   * content: zlib asks for another buffer when the content fills one exactly.
   */
  private outputSize(blob: number): number {
    const content = this.blobs[blob]!.contentBytes;
    return content >= this.options.blobBuffers.size / 2 ? this.options.blobBuffers.size : content + 1;
  }

  /** Releases every blob still held and gives the budget back (the batch is done or failed). */
  finish(): void {
    for (let blob = 0; blob < this.blobs.length; blob++) this.release(blob);
    this.budget.leave(this);
  }

  private fetch(state: RangeState): void {
    if (state.started) return;
    state.started = true;
    const stored = state.range.end - state.range.start;
    this.budget.fetched += stored;
    state.data = (async () => {
      const release = await this.options.fetchers.acquire();
      try {
        return await fetchRange(this.repo, state.range);
      } finally {
        release();
      }
    })();
    state.data.catch(() => {}); // reported to the blobs' readers
  }

  private scheduleDecode(blob: number): void {
    const planned = this.blobs[blob]!;
    const outputSize = this.outputSize(blob);
    this.budget.decoded += outputSize;
    const state = this.ranges[this.rangeOf[blob]!]!;
    this.fetch(state);
    const content = (async (): Promise<Buffer[]> => {
      let data: Buffer | undefined;
      try {
        data = await state.data!;
        const stored = data.subarray(planned.offset - state.range.start, planned.offset - state.range.start + planned.length);
        const output = outputSize === this.options.blobBuffers.size ? this.options.blobBuffers.take() : Buffer.allocUnsafeSlow(outputSize);
        this.outputs[blob] = output;
        const parts = await this.options.decoders.decode(state.range.packId, stored, planned, output);
        // Content past the furthest byte any window reads (blocks a later backup replaced)
        // is not kept.
        let kept = 0;
        let start = 0;
        while (kept < parts.length && start < planned.contentBytes) start += parts[kept++]!.length;
        for (const unneeded of parts.splice(kept)) if (unneeded.buffer !== output.buffer) freeNow(unneeded);
        return parts;
      } finally {
        if (--state.undecoded === 0) {
          this.budget.fetched -= state.range.end - state.range.start;
          state.data = undefined;
          if (data) freeNow(data);
          this.budget.fill();
        }
      }
    })();
    content.catch(() => {}); // reported to the window that awaits it
    this.contents[blob] = content;
  }
}

/**
 * Copies `length` bytes from offset `from` of the content made of `parts` to `target` at `at`;
 * false if the content is shorter.
 */
export function copyFromParts(parts: readonly Buffer[], from: number, length: number, target: Buffer, at: number): boolean {
  let partStart = 0;
  for (const part of parts) {
    const partEnd = partStart + part.length;
    if (from < partEnd && length > 0) {
      const n = Math.min(length, partEnd - from);
      part.copy(target, at, from - partStart, from - partStart + n);
      from += n;
      at += n;
      length -= n;
    }
    partStart = partEnd;
  }
  return length === 0;
}

/**
 * Decompression contexts shared by all batches of a restore (a context costs a zlib stream and
 * its buffers: made per batch, they were a third of the CPU of restoring 100,000 small files),
 * pooled by codec and encryption (the pack id's suffix). Every blob is decoded into a buffer
 * the caller gives (BlobSupply), so any context serves any blob. At most `parallel` decode at
 * once.
 */
export class DecoderPool {
  private readonly idle = new Map<string, RangeDecoder[]>();
  private readonly slots: Semaphore;
  private readonly identities: readonly string[];

  constructor(identities: readonly string[], parallel: number) {
    this.identities = identities;
    this.slots = new Semaphore(parallel);
  }

  async decode(packId: string, stored: Buffer, blob: BlobRef, output: Buffer): Promise<Buffer[]> {
    const dot = packId.indexOf('.');
    const kind = dot < 0 ? '' : packId.slice(dot);
    const release = await this.slots.acquire();
    const decoder = this.idle.get(kind)?.pop() ?? rangeDecoder(packKey(packId), this.identities);
    try {
      const parts = await decoder.decode(stored, blob, output);
      const pool = this.idle.get(kind) ?? [];
      this.idle.set(kind, pool);
      pool.push(decoder);
      return parts;
    } catch (error) {
      decoder.close(); // unusable after a failure
      throw error;
    } finally {
      release();
    }
  }

  /** Ends the pooled decoders; fails if one holds an incomplete frame. */
  async finish(): Promise<void> {
    const decoders = [...this.idle.values()].flat();
    this.idle.clear();
    try {
      for (const decoder of decoders) {
        await decoder.finish().catch((error: unknown) => {
          throw new PgarkError('INTEGRITY', `a blob fetched from the repository is damaged: ${(error as Error).message}`, { cause: error });
        });
      }
    } finally {
      for (const decoder of decoders) decoder.close();
    }
  }
}

/** Restores a batch of files; resolves when all are written (not yet fsynced: see syncFilesystems). */
export async function restoreFiles(repo: Repository, files: readonly FileToRestore[], options: RestoreOptions): Promise<{ written: number }> {
  const { windows, blobs } = planWindows(files, options.blockSize);
  // The plan has what the extents said: a fragmented segment's list (70,000 extents, ~9 MiB as
  // parsed objects) would otherwise stay in memory until the whole batch is written.
  for (const file of files) file.entry = { ...file.entry, x: [] };
  const supply = new BlobSupply(repo, blobs, windows, options);

  // O_NOFOLLOW: never write through a symlink planted at the file's own name.
  const flags = options.delta ? constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW : constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
  const fds: number[] = [];
  // O_DIRECT descriptors, opened at a file's first window that qualifies.
  const directFds: (number | undefined)[] = [];
  const direct = options.delta ? undefined : options.direct;
  const writeWindow = async (window: Window, { buffer, aligned }: WindowBuffer): Promise<number> => {
    const fd = fds[window.file]!;
    if (options.delta) return writeChangedBlocks(fd, buffer.subarray(0, window.length), window.position, options.blockSize);
    let done = 0;
    if (aligned && direct?.enabled && isAlignedForDirectIo(window.position, window.length)) {
      directFds[window.file] ??= direct.open(files[window.file]!.absolute);
      const directFd = directFds[window.file];
      if (directFd !== undefined) done = await direct.write(directFd, buffer, window.length, window.position);
    }
    return done + (done < window.length ? await writeAt(fd, buffer, done, window.length - done, window.position + done) : 0);
  };

  /**
   * A window that is the content of one blob from its start, and the blob's last use (every
   * window of a full backup): written straight from the buffer the blob was decoded into, which
   * is released after the write, instead of copied into a window buffer first (a second of
   * memcpy per 5 GB). Not when that buffer is not page-aligned (a small blob's own) and the
   * window could otherwise be written direct.
   */
  const decodedWindow = async (window: Window, w: number): Promise<WindowBuffer | undefined> => {
    const [piece, ...others] = window.pieces;
    if (!piece || others.length > 0 || piece.from !== 0 || piece.at !== 0 || piece.length !== window.length || blobs[piece.blob]!.lastWindow !== w) return undefined;
    const [content] = await supply.get(piece.blob);
    // Shorter content is reported by the assembling below.
    if (!content || content.length < piece.length) return undefined;
    const aligned = isAlignedBuffer(content);
    if (!aligned && direct?.enabled && !options.delta && isAlignedForDirectIo(window.position, window.length)) return undefined;
    return { buffer: content, aligned, release: () => supply.release(piece.blob) };
  };

  /** A window assembled from its pieces in a buffer of the window pool. */
  const assembledWindow = async (window: Window, w: number): Promise<WindowBuffer> => {
    const { buffer, release } = await options.windows.acquire();
    try {
      for (const piece of window.pieces) {
        const parts = await supply.get(piece.blob);
        if (!copyFromParts(parts, piece.from, piece.length, buffer, piece.at)) {
          const blob = blobs[piece.blob]!;
          throw new PgarkError('INTEGRITY', `a blob in pack ${blob.packId} (offset ${blob.offset}) is shorter than ${files[window.file]!.entry.p} needs`, { hint: 'the repository has been tampered with or is damaged' });
        }
      }
      // (After the whole window: one blob may supply several of its pieces.)
      for (const piece of window.pieces) if (blobs[piece.blob]!.lastWindow === w) supply.release(piece.blob);
    } catch (error) {
      release();
      throw error;
    }
    return { buffer, aligned: true, release };
  };

  let written = 0;
  const writing = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  try {
    for (const file of files) fds.push(openSync(file.absolute, flags, file.entry.m & 0o777));
    for (let w = 0; w < windows.length && !failure; w++) {
      const window = windows[w]!;
      const source = (await decodedWindow(window, w)) ?? (await assembledWindow(window, w));
      // Written while the next windows are assembled; the window pool (and the read-ahead
      // budget, for blobs written from where they were decoded) bounds how many at once.
      const job: Promise<void> = writeWindow(window, source)
        .then((bytes) => {
          written += bytes;
          options.onBytes?.(window.length);
        })
        .catch((error: unknown) => { failure ??= { error }; })
        .finally(() => {
          source.release();
          writing.delete(job);
        });
      writing.add(job);
    }
    await Promise.all(writing);
    if (failure) throw failure.error;
    files.forEach((file, i) => {
      // A new file (O_TRUNC) is exactly as long as the windows written into it; an existing one
      // (delta) may be longer.
      if (options.delta) ftruncateSync(fds[i]!, file.entry.s);
      const mtime = new Date(file.entry.mt);
      futimesSync(fds[i]!, mtime, mtime);
    });
  } finally {
    // After a failure, writes still in flight must end before their descriptors close.
    await Promise.allSettled(writing);
    supply.finish();
    for (const fd of [...fds, ...directFds]) if (fd !== undefined) closeSync(fd);
  }
  return { written };
}

/**
 * Writes up to this size are made from the main thread. Restores of many small files are mostly
 * such writes (one window per file); for them a round trip through libuv's thread pool and a
 * promise cost several times the pwrite into the page cache. Larger writes (windows not written
 * direct) go through the pool and overlap with decoding.
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
