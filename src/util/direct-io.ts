/**
 * Writing large, aligned pieces of restored files with O_DIRECT (Linux), past the page cache.
 *
 * Why: a restore writes gigabytes once and PostgreSQL reads them later at its own pace. Through
 * the page cache every byte is copied into kernel pages that must be allocated, dirtied and
 * written back; on the 2-vCPU VM of the benchmarks that cost 2.5–3 s of system CPU per 1.6 GB,
 * more than decompressing it, while O_DIRECT wrote 1 GiB in 0.7 s with 0.1 s of CPU. It also
 * leaves the host's page cache to the database instead of flooding it.
 *
 * O_DIRECT needs the memory address, the file offset and the length aligned to the device's
 * logical block size. Node buffers come from malloc (16-byte aligned), but a WebAssembly.Memory
 * is mapped page-aligned, so its pages serve as the aligned buffers (AlignedBufferPool). Only pieces whose offset and length are multiples of DIRECT_IO_ALIGNMENT
 * and at least DIRECT_IO_MIN_BYTES go this way (smaller ones would each wait for the device);
 * the rest are ordinary writes. Mixing both on one file is coherent in Linux as long as ranges do
 * not overlap, which they never do in a restore. Where the filesystem refuses O_DIRECT (tmpfs
 * before Linux 6.6, some FUSE and network filesystems answer EINVAL), the first refusal turns
 * it off for the rest of the run and everything is written the ordinary way.
 */
import { constants, openSync, write } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { log } from './log.ts';
import { Semaphore } from './concurrency.ts';
import { freeNow, type BufferSource } from './memory.ts';

/** 4 KiB covers every common device (512e and 4Kn disks, NVMe, virtio). */
export const DIRECT_IO_ALIGNMENT = 4096;
/** Below this, a write into the page cache is cheaper than waiting for the device. */
export const DIRECT_IO_MIN_BYTES = 128 * 1024;

const WASM_PAGE = 64 * 1024;
// The project's TypeScript lib has no WebAssembly declarations: the little used here.
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
const { WebAssembly: wasm } = globalThis as unknown as {
  WebAssembly: { Memory: new (descriptor: { initial: number; maximum: number }) => WasmMemory };
};
/** The memory behind each alignedBuffers allocation, by its ArrayBuffer. */
const memories = new WeakMap<ArrayBuffer, WasmMemory>();

/** The WebAssembly memory `buffer` is a view of, when it comes from alignedBuffers. */
export function memoryOf(buffer: Buffer): WasmMemory | undefined {
  return memories.get(buffer.buffer as ArrayBuffer);
}
const writeAsync = promisify(write);

/** undefined where the platform has no O_DIRECT (macOS, Windows). */
const O_DIRECT: number | undefined = (constants as { O_DIRECT?: number }).O_DIRECT;

export function isAlignedForDirectIo(position: number, length: number): boolean {
  return position % DIRECT_IO_ALIGNMENT === 0 && length % DIRECT_IO_ALIGNMENT === 0 && length >= DIRECT_IO_MIN_BYTES;
}

/**
 * `count` page-aligned buffers of `size` bytes (rounded up to whole WebAssembly pages), views of
 * one WebAssembly.Memory. initial = maximum: the memory never grows, so its ArrayBuffer is never
 * detached while a read or write in the thread pool still uses it. The buffers share that
 * ArrayBuffer: never free one with util/memory.ts freeNow.
 */
export function alignedBuffers(count: number, size: number): Buffer[] {
  const rounded = Math.ceil(size / WASM_PAGE) * WASM_PAGE;
  const pages = (rounded / WASM_PAGE) * count;
  const memory = new wasm.Memory({ initial: pages, maximum: pages });
  memories.set(memory.buffer, memory);
  return Array.from({ length: count }, (_, i) => Buffer.from(memory.buffer, i * rounded, size));
}

/**
 * A fixed set of page-aligned buffers (restore assembles each window of a file in one, then
 * writes it from there, direct or not).
 */
export class AlignedBufferPool {
  private readonly free: Buffer[] = [];
  private readonly slots: Semaphore;
  readonly size: number;

  /** `count` buffers of `size` bytes (rounded up to whole WebAssembly pages). */
  constructor(count: number, size: number) {
    this.size = Math.ceil(size / WASM_PAGE) * WASM_PAGE;
    this.free.push(...alignedBuffers(count, this.size));
    this.slots = new Semaphore(count);
  }

  async acquire(): Promise<{ buffer: Buffer; release: () => void }> {
    const release = await this.slots.acquire();
    const buffer = this.free.pop()!;
    let released = false;
    return {
      buffer,
      release: () => {
        if (released) return;
        released = true;
        this.free.push(buffer);
        release();
      },
    };
  }
}

/** Whether `buffer` starts on a page of an aligned allocation (alignedBuffers): usable for direct I/O. */
export function isAlignedBuffer(buffer: Buffer): boolean {
  return memoryOf(buffer) !== undefined && buffer.byteOffset % DIRECT_IO_ALIGNMENT === 0;
}

/**
 * Page-aligned buffers of one size, reused like util/memory.ts ReusableBuffers but as many as
 * are asked for: restore decodes blobs into them and writes a window that is one whole blob
 * straight from there, direct or not. They are made `group` at a time, one WebAssembly.Memory
 * per group (each memory reserves guard address space, so not one per buffer); pages are
 * resident only once written.
 */
export class ReusableAlignedBuffers implements BufferSource {
  readonly size: number;
  private readonly group: number;
  private readonly idle: Buffer[] = [];

  /** `size` is rounded up to whole WebAssembly pages (64 KiB). */
  constructor(size: number, group: number) {
    this.size = Math.ceil(size / WASM_PAGE) * WASM_PAGE;
    this.group = Math.max(1, group);
  }

  take(): Buffer {
    if (this.idle.length === 0) this.idle.push(...alignedBuffers(this.group, this.size).reverse());
    return this.idle.pop()!;
  }

  /** Returns a buffer from take(); any other (a small blob's own) is freed at once (memory.ts freeNow). */
  give(buffer: Buffer): void {
    if (buffer.length === this.size && isAlignedBuffer(buffer)) this.idle.push(buffer);
    else freeNow(buffer);
  }
}

/** Direct writes, and the switch that turns them off after the first refusal. One per restore. */
export class DirectIo {
  private disabledBecause: string | undefined = O_DIRECT === undefined ? 'this platform has no O_DIRECT' : undefined;
  /** Bytes written past the page cache so far (reported by restore). */
  bytesWritten = 0;

  get enabled(): boolean {
    return this.disabledBecause === undefined;
  }

  /** Opens an existing file for direct writes; undefined (and direct I/O off) if refused. */
  open(path: string): number | undefined {
    if (!this.enabled) return undefined;
    try {
      return openSync(path, constants.O_WRONLY | constants.O_NOFOLLOW | O_DIRECT!);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
      this.disable(`the filesystem of ${path} refuses O_DIRECT`);
      return undefined;
    }
  }

  /**
   * Writes `length` bytes of `buffer` (from an AlignedBufferPool) at `position` through `fd`
   * (from open()). Returns the bytes written: fewer than `length` only when direct I/O was
   * refused part-way or a short write left an unaligned rest; the caller writes the rest the
   * ordinary way.
   */
  async write(fd: number, buffer: Buffer, length: number, position: number): Promise<number> {
    let written = 0;
    try {
      while (written < length) {
        written += (await writeAsync(fd, buffer, written, length - written, position + written)).bytesWritten;
        if (written % DIRECT_IO_ALIGNMENT !== 0) break;
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
      this.disable(`a direct write was refused (${(error as Error).message})`);
    }
    this.bytesWritten += written;
    return written;
  }

  private disable(reason: string): void {
    if (this.disabledBecause !== undefined) return;
    this.disabledBecause = reason;
    log.info('writing restored files through the page cache', { reason });
  }
}

/**
 * Reading relation files for a backup with O_DIRECT, past the page cache. Through the page cache
 * every byte not cached already is first copied into kernel pages that must be allocated (and
 * evict others), then copied again into our buffer: on the benchmark VM 2 ms of system CPU per
 * MiB read (0.95 s for 460 MiB), against 0.1 ms with O_DIRECT, which reads straight into the
 * buffer. Cached data costs 0.17 ms per MiB read through the cache; a direct read then asks the
 * device again, which costs wall time but hardly CPU, and a backup no longer evicts the
 * database's cached pages with data it reads once. Coherent with PostgreSQL's writes through
 * the page cache: Linux writes dirty cached pages of the range back before a direct read of it,
 * and a page written during the read is torn either way (WAL replay repairs it). Buffers must
 * be page-aligned (alignedBuffers), reads of whole aligned pieces. Where the filesystem refuses
 * O_DIRECT (EINVAL), the first refusal turns it off for the rest of the run.
 *
 * By default only files read whole go past the cache: an incremental's files that are compared
 * page by page with the base backup are mostly unchanged pages, only read to look at their LSN,
 * and often cached, where a cached read is several times faster than a direct one (1.7 GB of a
 * cached pgbench cluster: 1.4-1.9 s through the cache, 2.4-2.7 s direct, the same CPU).
 */
export class DirectReads {
  private disabledBecause: string | undefined;
  private readonly forced: boolean | undefined;

  /** `setting`: backup-direct-io; unset = past the cache for files read whole only. */
  constructor(setting: boolean | undefined) {
    this.forced = setting;
    if (setting === false) this.disabledBecause = 'off';
    else if (O_DIRECT === undefined) this.disabledBecause = 'this platform has no O_DIRECT';
  }

  /**
   * Opens `path` for reading: a relation file past the page cache while that works, if it is read
   * whole (`comparedWithBase` false) or the setting asks for it.
   */
  async open(path: string, file: { relation: boolean; comparedWithBase: boolean }): Promise<DataFileReader> {
    const direct = file.relation && (this.forced ?? !file.comparedWithBase);
    if (direct && this.disabledBecause === undefined) {
      try {
        return new DataFileReader(path, await open(path, constants.O_RDONLY | O_DIRECT!), this);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
        this.disable(`the filesystem of ${path} refuses O_DIRECT`);
      }
    }
    return new DataFileReader(path, await open(path, 'r'), undefined);
  }

  disable(reason: string): void {
    if (this.disabledBecause !== undefined) return;
    this.disabledBecause = reason;
    log.info('reading data files through the page cache', { reason });
  }
}

/** One open data file; reads go past the page cache when `direct` is set. */
export class DataFileReader {
  private readonly path: string;
  private handle: FileHandle;
  private direct: DirectReads | undefined;

  constructor(path: string, handle: FileHandle, direct: DirectReads | undefined) {
    this.path = path;
    this.handle = handle;
    this.direct = direct;
  }

  /** Reads up to `length` bytes at `position` into the start of `buffer` (page-aligned, from alignedBuffers). */
  async read(buffer: Buffer, length: number, position: number): Promise<number> {
    try {
      return (await this.handle.read(buffer, 0, length, position)).bytesRead;
    } catch (error) {
      // Some filesystems accept O_DIRECT at open and refuse the reads.
      if (!this.direct || (error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
      this.direct.disable(`a direct read of ${this.path} was refused (${(error as Error).message})`);
      this.direct = undefined;
      await this.handle.close();
      this.handle = await open(this.path, 'r');
      return (await this.handle.read(buffer, 0, length, position)).bytesRead;
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
