/**
 * Packs: many small encoded blobs appended into objects of tens of MiB, so a backup of many
 * small changes costs few requests, and a restore fetches neighbouring blobs with one ranged GET. Packs
 * are uploaded in the background while the backup goes on; `finish` resolves once every pack
 * is stored — only then may a manifest reference them.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { packKey } from './layout.ts';
import type { Repository } from './repository.ts';

/**
 * 8 MiB: one PutObject each (within the default part size, no multipart copies of parts), and
 * a bounded memory of three packs per writer (one filling, two uploading).
 */
export const PACK_TARGET_SIZE = 8 * 1024 * 1024;

export interface BlobLocation {
  packId: string;
  offset: number;
  length: number;
}

/**
 * Blobs below this size are copied into shared segments of SEGMENT_SIZE: a pack of 8 KiB files
 * holds 100,000s of blobs of ~60 bytes, and a Buffer object for each cost more heap than the
 * bytes themselves.
 */
const COPY_BELOW = 64 * 1024;
const SEGMENT_SIZE = 1024 * 1024;

interface OpenPack {
  id: string;
  chunks: Buffer[];
  size: number;
  /** The segment small blobs are being copied into, and how much of it is used. */
  segment?: Buffer;
  segmentUsed: number;
}

function closeSegment(pack: OpenPack): void {
  if (pack.segment && pack.segmentUsed > 0) pack.chunks.push(pack.segment.subarray(0, pack.segmentUsed));
  pack.segment = undefined;
  pack.segmentUsed = 0;
}

export class PackWriter {
  private readonly repo: Repository;
  private readonly suffix: string;
  private readonly targetSize: number;
  private readonly maxUploads: number;
  private readonly signal: AbortSignal | undefined;
  private current: OpenPack | undefined;
  private readonly uploads = new Set<Promise<void>>();
  /** Packs sealed and not yet stored: waiting for an upload slot or uploading. */
  private readonly sealed = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;
  readonly packs: string[] = [];
  storedBytes = 0;

  /** `suffix`: the encoding of the blobs (object-format.ts suffixOf), part of every pack id. */
  constructor(repo: Repository, suffix: string, options: { targetSize: number; maxUploads: number; signal?: AbortSignal }) {
    this.repo = repo;
    this.suffix = suffix;
    this.targetSize = options.targetSize;
    this.maxUploads = options.maxUploads;
    this.signal = options.signal;
  }

  /** Appends an encoded blob; waits when too many packs are uploading (bounded memory). */
  async add(blob: Buffer): Promise<BlobLocation> {
    this.throwIfFailed();
    // A pack stays within the target size (a blob larger than it gets a pack of its own).
    if (this.current && this.current.size > 0 && this.current.size + blob.length > this.targetSize) await this.seal();
    if (!this.current) this.current = { id: randomBytes(12).toString('hex') + this.suffix, chunks: [], size: 0, segmentUsed: 0 };
    const pack = this.current;
    const location = { packId: pack.id, offset: pack.size, length: blob.length };
    if (blob.length >= COPY_BELOW) {
      closeSegment(pack);
      pack.chunks.push(blob);
    } else {
      if (!pack.segment || pack.segmentUsed + blob.length > pack.segment.length) {
        closeSegment(pack);
        pack.segment = Buffer.allocUnsafeSlow(SEGMENT_SIZE);
      }
      blob.copy(pack.segment, pack.segmentUsed);
      pack.segmentUsed += blob.length;
    }
    pack.size += blob.length;
    if (this.current.size >= this.targetSize) await this.seal();
    return location;
  }

  private async seal(): Promise<void> {
    const pack = this.current;
    this.current = undefined;
    if (!pack || pack.size === 0) return;
    closeSegment(pack);
    // Registered before waiting for an upload slot, so that flush() sees this pack too.
    const sealed = this.upload(pack);
    this.sealed.add(sealed);
    void sealed.then(() => this.sealed.delete(sealed));
    await sealed.started;
  }

  private upload(pack: OpenPack): Promise<void> & { started: Promise<void> } {
    let markStarted!: () => void;
    const started = new Promise<void>((resolve) => (markStarted = resolve));
    // Never rejects: a failure is recorded and thrown by the next add(), flush() or finish().
    const done = (async () => {
      try {
        try {
          while (this.uploads.size >= this.maxUploads) await Promise.race(this.uploads);
          this.throwIfFailed();
        } finally {
          markStarted();
        }
        this.packs.push(pack.id);
        const upload = this.repo.storage
          // As a stream of the blobs: no second copy of the whole pack in memory.
          .put(packKey(pack.id), Readable.from(pack.chunks), { kind: 'data', signal: this.signal })
          .then(() => { this.storedBytes += pack.size; })
          .finally(() => this.uploads.delete(upload));
        upload.catch(() => {}); // awaited below; a slot waiter above only needs it to settle
        this.uploads.add(upload);
        await upload;
      } catch (error) {
        this.failure ??= { error };
      }
    })();
    return Object.assign(done, { started });
  }

  /**
   * Seals the current pack and waits until it and every pack sealed before are stored: every
   * blob added before the call is then durable (a backup checkpoint may reference it).
   */
  async flush(): Promise<void> {
    const pending = [...this.sealed];
    await this.seal();
    await Promise.all([...pending, ...this.sealed]);
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }

  /** Uploads the last pack and waits for every upload. */
  async finish(): Promise<void> {
    await this.flush();
  }

  /** Waits for running uploads to settle (after a failure elsewhere), ignoring their errors. */
  async settle(): Promise<void> {
    await Promise.all([...this.sealed]);
  }
}
