/**
 * The WAL archive: storing and fetching WAL files (segments, partial segments, backup labels,
 * timeline histories) by name. Objects are immutable and content-addressed by their name and
 * SHA-256 (layout.ts), which gives the archive its safety rules:
 * - pushing a file already stored with the same content is a no-op (recognised by LIST);
 * - pushing different content under an archived name is refused, loudly, and nothing is
 *   overwritten;
 * - a fetch checks the SHA-256 of what it decoded against the key.
 */
import { createHash } from 'node:crypto';
import { PgarkError } from '../errors.ts';
import { decodeBuffer, decodeBufferInto, encodeBuffer, isEncryptedKey, suffixOf, type ReusedDecoding } from '../pipeline/object-format.ts';
import { ZstdFrameSequence } from '../pipeline/zstd-frames.ts';
import { storeWalSummary } from './wal-block-map.ts';
import { checkSegmentHeader, parseWalFileName, requireWalFileName } from '../postgres/wal.ts';
import type { ObjectInfo } from '../storage/types.ts';
import { parseWalObjectKey, WAL_PREFIX, walObjectKey, walObjectPrefix } from './layout.ts';
import type { Repository } from './repository.ts';
import { freeNow, ReusableBuffers } from '../util/memory.ts';

export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export type PushOutcome = 'stored' | 'already-archived';

export interface StoredWalObject {
  key: string;
  name: string;
  sha256: string;
  size: number;
  lastModified: Date;
}

async function findStored(repo: Repository, name: string): Promise<StoredWalObject[]> {
  const found: StoredWalObject[] = [];
  for await (const object of repo.storage.list(walObjectPrefix(name))) {
    const parsed = parseWalObjectKey(object.key);
    if (parsed && parsed.name === name) found.push({ key: object.key, ...parsed, size: object.size, lastModified: object.lastModified });
  }
  return found;
}

/**
 * Archives one WAL file. Resolves only once the store has confirmed the object; throws
 * CONFLICT when the name is archived with other content, REPO_MISMATCH for another cluster's
 * segment.
 */
export async function pushWalFile(repo: Repository, name: string, content: Buffer, signal?: AbortSignal): Promise<PushOutcome> {
  const file = requireWalFileName(name);
  const identity = repo.identity;
  if (!identity) throw new PgarkError('INTERNAL', 'pushWalFile needs an initialised repository');
  checkSegmentHeader(file, content, identity.postgres);
  // The listing (a round trip) and the compression (on the thread pool) start first and run
  // while this thread hashes the content; a duplicate only wastes that compression.
  const listing = findStored(repo, name);
  listing.catch(() => {}); // awaited below
  const format = await repo.writeFormat();
  const encoding = encodeBuffer(content, format);
  encoding.catch(() => {}); // awaited below (or not needed)
  const sha256 = sha256Hex(content);

  const existing = await listing.catch(async (error: unknown) => {
    await encoding.catch(() => {});
    throw error;
  });
  if (existing.length > 0) {
    await encoding.catch(() => {}); // nothing may still read `content` once this returns (the caller reuses it)
    if (existing.some((object) => object.sha256 === sha256)) return 'already-archived';
    throw conflictError(name, existing);
  }

  const key = walObjectKey(name, sha256, suffixOf(format));
  // The block map is decoded (while the compression runs) and stored alongside; it is only
  // used once the segment is stored.
  const blockMap = file.kind === 'segment' && repo.walBlockMap ? storeWalSummary(repo, name, sha256, content, signal) : undefined;
  blockMap?.catch(() => {}); // awaited below
  const encoded = await encoding;
  await repo.storage.put(key, encoded, { kind: 'wal', signal });
  // Stored: its memory goes back now. Left to the GC, the compressed segments made the pusher run
  // 6 full collections in 50 segments instead of 1 (V8 counts the memory of buffers).
  if (encoded !== content) freeNow(encoded);
  await blockMap;

  // Two writers racing on one name (a split brain: two primaries archiving into one
  // repository) can both store: nothing is overwritten, and wal-fetch and wal-verify refuse
  // and report the ambiguity rather than guessing.
  return 'stored';
}

function conflictError(name: string, stored: StoredWalObject[]): PgarkError {
  return new PgarkError('CONFLICT', `${name} is already archived with different content; refusing to overwrite it`, {
    hint: 'two servers may be archiving into the same repository (a split brain?), or this server was restored without changing the repository; check `pgark wal-verify` and give each cluster its own repository',
    cause: stored.map((s) => s.key),
  });
}

/**
 * The stored object of WAL file `name`, from a listing made now; undefined when the archive
 * does not have it. Throws CONFLICT when it is stored with two different contents.
 */
export async function findStoredWal(repo: Repository, name: string): Promise<StoredWalObject | undefined> {
  requireWalFileName(name);
  const stored = await findStored(repo, name);
  if (stored.length === 0) return undefined;
  const distinct = new Set(stored.map((s) => s.sha256));
  if (distinct.size > 1) {
    throw new PgarkError('CONFLICT', `${name} is archived ${distinct.size} times with different content`, {
      hint: 'the archive holds WAL from two diverged servers; restore from a backup of the right one, or remove the wrong copy after checking `pgark wal-verify`',
    });
  }
  return stored[0]!;
}

/** Fetches, decodes and verifies one WAL file; undefined when it is not in the archive. */
export async function fetchWalFile(repo: Repository, name: string): Promise<Buffer | undefined> {
  const stored = await findStoredWal(repo, name);
  return stored && readStoredWal(repo, stored);
}

/** Where readStoredWal decodes into, when the caller reuses buffers (WalReadBuffers). */
interface DecodeTarget {
  output: Buffer;
  reused: ReusedDecoding;
}

/**
 * Downloads and verifies one stored WAL object. With `into`, the content is decoded into
 * `into.output` (a view of it is returned when it fits).
 */
export async function readStoredWal(repo: Repository, object: { key: string; name: string; sha256: string }, into?: DecodeTarget): Promise<Buffer> {
  const identities = isEncryptedKey(object.key) ? await repo.identities(`WAL file ${object.name}`) : [];
  let content: Buffer;
  try {
    const stored = await repo.storage.get(object.key);
    if (into) {
      content = await decodeBufferInto(stored, object.key, identities, into.output, into.reused);
    } else {
      const kind = parseWalFileName(object.name)?.kind;
      const expectedSize = kind === 'segment' || kind === 'partial' ? repo.identity?.postgres.walSegmentSize : undefined;
      content = await decodeBuffer(stored, object.key, identities, expectedSize);
    }
  } catch (error) {
    if (error instanceof PgarkError) throw error;
    throw new PgarkError('INTEGRITY', `${object.name} in the archive is damaged: ${(error as Error).message}`, { cause: error });
  }
  if (sha256Hex(content) !== object.sha256) {
    throw new PgarkError('INTEGRITY', `${object.name} in the archive failed its SHA-256 check`, { hint: 'the stored object was changed or damaged' });
  }
  return content;
}

/** zlib's own output buffer of a pooled decompressor: it only ever writes into ours. */
const IDLE_DECODER_CHUNK = 64 * 1024;
/** The first buffer for an object's compressed bytes; grown to the largest object seen. */
const FIRST_COMPRESSED_BUFFER = 1 << 20;

/**
 * Reads of WAL objects into buffers reused from one object to the next, with reused zstd
 * contexts (the background prefetcher, which reads segment after segment): a fresh
 * segment-sized buffer per segment cost about as much CPU in page faults and garbage
 * collection as the decompression itself. The push side does the same (push-ahead.ts).
 */
export class WalReadBuffers {
  /** One byte over a segment: zlib then sees the end of the frame within the buffer. */
  private readonly buffers: ReusableBuffers;
  private readonly idle: ReusedDecoding[] = [];

  constructor(walSegmentSize: number) {
    this.buffers = new ReusableBuffers(walSegmentSize + 1);
  }

  /**
   * Downloads, decodes and verifies `object` (as readStoredWal) and hands the verified content
   * to `use`; the buffer is reused once `use` has settled, so `use` must not keep it.
   */
  async withContent<T>(repo: Repository, object: { key: string; name: string; sha256: string }, use: (content: Buffer) => Promise<T>): Promise<T> {
    const output = this.buffers.take();
    let reused: ReusedDecoding | undefined = this.idle.pop() ?? { frames: new ZstdFrameSequence(IDLE_DECODER_CHUNK), compressed: Buffer.allocUnsafeSlow(FIRST_COMPRESSED_BUFFER) };
    let content: Buffer | undefined;
    try {
      try {
        content = await readStoredWal(repo, object, { output, reused });
      } catch (error) {
        reused.frames.close(); // may be unusable after damaged input
        freeNow(reused.compressed);
        reused = undefined;
        throw error;
      }
      return await use(content);
    } finally {
      if (reused) this.idle.push(reused);
      // Content too large for the buffer came in one of its own.
      if (content !== undefined && content.buffer !== output.buffer) freeNow(content);
      this.buffers.give(output);
    }
  }

  close(): void {
    for (const reused of this.idle.splice(0)) reused.frames.close();
  }
}

/** Every WAL object in the archive (or under one directory prefix), parsed. */
export async function listWalObjects(repo: Repository, prefix: string = WAL_PREFIX): Promise<StoredWalObject[]> {
  const objects: StoredWalObject[] = [];
  for await (const object of repo.storage.list(prefix) as AsyncIterable<ObjectInfo>) {
    const parsed = parseWalObjectKey(object.key);
    if (parsed) objects.push({ key: object.key, ...parsed, size: object.size, lastModified: object.lastModified });
  }
  return objects;
}
