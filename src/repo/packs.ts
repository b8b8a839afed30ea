/**
 * Packs: many small encoded blobs appended into objects of tens of MiB, so a backup of many
 * small changes costs few requests, and a restore fetches neighbouring blobs with one ranged GET. Packs
 * are uploaded in the background while the backup goes on; `finish` resolves once every pack
 * is stored — only then may a manifest reference them.
 */
import { randomBytes } from 'node:crypto';
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
 * A pack is assembled in one buffer of the target size and uploaded from it: no list of blob
 * buffers (a blob is often a slice of a larger buffer, which it would keep alive), no second
 * copy of the pack when an object store wants it in one piece. Buffers are reused.
 */
interface OpenPack {
  id: string;
  buffer: Buffer;
  size: number;
}

export class PackWriter {
  private readonly repo: Repository;
  private readonly suffix: string;
  private readonly targetSize: number;
  private readonly maxUploads: number;
  private readonly signal: AbortSignal | undefined;
  private current: OpenPack | undefined;
  /** Buffers of uploaded packs, for the next ones (at most one per upload slot, plus one). */
  private readonly idleBuffers: Buffer[] = [];
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

  /** Appends (copies) an encoded blob; waits when too many packs are uploading (bounded memory). */
  async add(blob: Buffer): Promise<BlobLocation> {
    this.throwIfFailed();
    // A pack stays within the target size (a blob larger than it gets a pack of its own). Checked
    // again after each seal: while one waits for an upload slot, other blobs open and fill the
    // next pack, which this blob may no longer fit either (appended anyway, it was cut at the
    // end of the buffer: a pack shorter than its manifest said, under slow uploads).
    while (this.current && this.current.size > 0 && this.current.size + blob.length > this.targetSize) await this.seal();
    if (!this.current) {
      const buffer = blob.length > this.targetSize ? Buffer.allocUnsafeSlow(blob.length) : (this.idleBuffers.pop() ?? Buffer.allocUnsafeSlow(this.targetSize));
      this.current = { id: randomBytes(12).toString('hex') + this.suffix, buffer, size: 0 };
    }
    const pack = this.current;
    if (pack.size + blob.length > pack.buffer.length) throw new Error(`internal: a ${blob.length}-byte blob does not fit in pack ${pack.id} at ${pack.size}`);
    const location = { packId: pack.id, offset: pack.size, length: blob.length };
    blob.copy(pack.buffer, pack.size);
    pack.size += blob.length;
    if (pack.size >= this.targetSize) await this.seal();
    return location;
  }

  private async seal(): Promise<void> {
    const pack = this.current;
    this.current = undefined;
    if (!pack) return;
    if (pack.size === 0) {
      this.idleBuffers.push(pack.buffer);
      return;
    }
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
          .put(packKey(pack.id), pack.buffer.subarray(0, pack.size), { kind: 'data', signal: this.signal })
          .then(() => {
            this.storedBytes += pack.size;
            // Filling one and uploading maxUploads need no more buffers than that.
            if (pack.buffer.length === this.targetSize && this.idleBuffers.length + this.uploads.size <= this.maxUploads) this.idleBuffers.push(pack.buffer);
          })
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
