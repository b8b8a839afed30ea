/**
 * How a stored object's bytes relate to its content: compressed with a codec, then optionally
 * encrypted to age recipients. The key's suffix records both (".zst", ".zst.age", ".lz4", ...),
 * so every object can be read back — even by hand with `age -d` and `zstd -d`.
 */
import { Readable, type Transform } from 'node:stream';
import { promisify } from 'node:util';
import { gunzip, gzip, zstdDecompress } from 'node:zlib';
import { runPipeline } from './run.ts';
import { freeNow } from '../util/memory.ts';
import { zstdFrame, type ZstdFrameSequence } from './zstd-frames.ts';
import { CODEC_EXTENSION, codecOfKey, compressStage, decompressStage, DEFAULT_LEVEL, type Codec } from './codec.ts';

export const ENCRYPTED_EXTENSION = '.age';

export interface WriteFormat {
  codec: Codec;
  level?: number;
  /** age recipients; empty = not encrypted. */
  recipients: readonly string[];
}

export function suffixOf(format: WriteFormat): string {
  return CODEC_EXTENSION[format.codec] + (format.recipients.length > 0 ? ENCRYPTED_EXTENSION : '');
}

export function isEncryptedKey(key: string): boolean {
  return key.endsWith(ENCRYPTED_EXTENSION);
}

/** The stages that turn content into stored bytes: compress, then encrypt. */
export async function encodeStages(format: WriteFormat): Promise<Transform[]> {
  const stages = [await compressStage(format.codec, format.level)];
  if (format.recipients.length > 0) {
    const { createAgeEncryptStream } = await import('./age.ts');
    stages.push(createAgeEncryptStream([...format.recipients]));
  }
  return stages;
}

/** The stages that turn the stored bytes of `key` back into content: decrypt, then decompress. */
export async function decodeStages(key: string, identities: readonly string[]): Promise<Transform[]> {
  const stages: Transform[] = [];
  if (isEncryptedKey(key)) {
    const { createAgeDecryptStream } = await import('./age.ts');
    stages.push(createAgeDecryptStream([...identities]));
  }
  stages.push(await decompressStage(codecOfKey(key)));
  return stages;
}

/**
 * Encodes an in-memory object (WAL segments, backup blobs) in one go. zstd and gzip use
 * zlib's one-shot functions, which run on libuv's thread pool: many blobs compress in parallel
 * on all cores, with less overhead than a stream per blob.
 */
export async function encodeBuffer(content: Buffer, format: WriteFormat): Promise<Buffer> {
  const oneShot = await compressOneShot(content, format.codec, format.level);
  if (oneShot === undefined) return collect(Readable.from([content]), await encodeStages(format));
  if (format.recipients.length === 0) return oneShot;
  const { createAgeEncryptStream } = await import('./age.ts');
  return collect(Readable.from([oneShot]), [createAgeEncryptStream([...format.recipients])]);
}

/** The age decryption of an in-memory object (its compressed content). */
export async function decryptBuffer(stored: Readable | Buffer, identities: readonly string[]): Promise<Buffer> {
  const { createAgeDecryptStream } = await import('./age.ts');
  return collect(Buffer.isBuffer(stored) ? Readable.from([stored]) : stored, [createAgeDecryptStream([...identities])]);
}

/**
 * Decodes an in-memory object. `expectedSize`: the decoded size when known (a WAL segment):
 * the decompressor then writes one buffer of that size instead of 1 MiB pieces joined by a
 * copy — less CPU and half the memory churn for every segment fetched.
 */
export async function decodeBuffer(stored: Readable | Buffer, key: string, identities: readonly string[], expectedSize?: number): Promise<Buffer> {
  const codec = codecOfKey(key);
  if (codec === 'zstd' || codec === 'gzip' || codec === 'none') {
    let compressed: Buffer;
    if (isEncryptedKey(key)) {
      compressed = await decryptBuffer(stored, identities);
    } else {
      compressed = Buffer.isBuffer(stored) ? stored : await collect(stored, []);
    }
    return decompressOneShot(compressed, codec, expectedSize);
  }
  const source = Buffer.isBuffer(stored) ? Readable.from([stored]) : stored;
  // The decoded pieces are ours once joined: freed now, not at a distant full GC (lz4-napi's
  // block outputs held ~130 MiB of a restore of an lz4 backup that way).
  return collect(source, await decodeStages(key, identities), { freeChunksBut: Buffer.isBuffer(stored) ? stored : undefined });
}

/**
 * What decodeBufferInto reuses from one object to the next: a zstd context (unusable after an
 * error: make a new one then) and a buffer for the compressed bytes (replaced by a larger one
 * when an object does not fit).
 */
export interface ReusedDecoding {
  frames: ZstdFrameSequence;
  compressed: Buffer;
}

/**
 * Decodes a stored object into `output`, a buffer the caller reuses (the WAL prefetcher: a
 * fresh 16 MiB buffer per segment cost ~4,000 page faults and garbage collections). zstd
 * decompresses straight into it, from the compressed bytes gathered in `reused.compressed`;
 * other codecs and encrypted objects decode as decodeBuffer does and are copied in. Returns a
 * view of `output` from its start when the content fits, else a buffer of its own.
 */
export async function decodeBufferInto(stored: Readable, key: string, identities: readonly string[], output: Buffer, reused: ReusedDecoding): Promise<Buffer> {
  if (codecOfKey(key) !== 'zstd') {
    const content = await decodeBuffer(stored, key, identities, output.length - 1);
    if (content.length > output.length) return content;
    const length = content.copy(output);
    freeNow(content); // (its length reads 0 from now on)
    return output.subarray(0, length);
  }
  const encrypted = isEncryptedKey(key);
  const compressed = encrypted ? await decryptBuffer(stored, identities) : await gatherInto(stored, reused);
  try {
    const parts = await reused.frames.decodeParts(compressed, output);
    if (parts.length === 0) return output.subarray(0, 0);
    if (parts.length === 1 && parts[0]!.buffer === output.buffer) return parts[0]!;
    const joined = Buffer.concat(parts);
    for (const part of parts) if (part.buffer !== output.buffer) freeNow(part);
    return joined;
  } finally {
    if (encrypted) freeNow(compressed);
  }
}

/**
 * A stream's bytes in `reused.compressed` (a view of it), grown when they do not fit. The
 * stream's chunks (a store's download: no one else holds them) are freed once copied, not at
 * a later full garbage collection (util/memory.ts; a chunk that is a slice is left to the GC).
 */
async function gatherInto(source: Readable, reused: ReusedDecoding): Promise<Buffer> {
  let length = 0;
  for await (const chunk of source as AsyncIterable<Buffer>) {
    if (length + chunk.length > reused.compressed.length) {
      const larger = Buffer.allocUnsafeSlow(Math.max(2 * reused.compressed.length, length + chunk.length));
      reused.compressed.copy(larger, 0, 0, length);
      freeNow(reused.compressed);
      reused.compressed = larger;
    }
    length += chunk.copy(reused.compressed, length);
    freeNow(chunk);
  }
  return reused.compressed.subarray(0, length);
}

/** Output chunk of the one-shot functions: zlib's 16 KiB default costs a callback per 16 KiB. */
const ONE_SHOT_CHUNK = 1 << 20;
/** The largest single output buffer asked for (WAL segments are at most 1 GiB). */
const MAX_ONE_SHOT_CHUNK = (1 << 30) + 1;
const zstdDecompressAsync = promisify(zstdDecompress);
const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

async function compressOneShot(content: Buffer, codec: Codec, level: number | undefined): Promise<Buffer | undefined> {
  switch (codec) {
    case 'zstd':
      return zstdFrame(content, level ?? DEFAULT_LEVEL.zstd!);
    case 'gzip':
      return gzipAsync(content, { level: level ?? DEFAULT_LEVEL.gzip, chunkSize: ONE_SHOT_CHUNK });
    case 'none':
      return content;
    default:
      return undefined;
  }
}

async function decompressOneShot(content: Buffer, codec: 'zstd' | 'gzip' | 'none', expectedSize: number | undefined): Promise<Buffer> {
  // One byte more than expected: zlib then sees the end of the stream within the one buffer
  // (an exactly full buffer makes it allocate a second one to find out). A wrong size only
  // costs the join again.
  const chunkSize = expectedSize !== undefined && expectedSize > 0 && expectedSize < MAX_ONE_SHOT_CHUNK ? expectedSize + 1 : ONE_SHOT_CHUNK;
  switch (codec) {
    case 'zstd':
      return zstdDecompressAsync(content, { chunkSize });
    case 'gzip':
      return gunzipAsync(content, { chunkSize });
    case 'none':
      return content;
  }
}

/**
 * The output of `stages` in one buffer. With `freeChunksBut`, the stages' output chunks are freed
 * once copied (util/memory.ts), except views of that buffer (the input, which the caller holds).
 */
async function collect(source: Readable, stages: Transform[], options: { freeChunksBut?: Buffer } = {}): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await runPipeline([source, ...stages, async (output: AsyncIterable<Buffer>) => {
    for await (const chunk of output) chunks.push(chunk);
  }]);
  const joined = Buffer.concat(chunks);
  if ('freeChunksBut' in options) for (const chunk of chunks) if (chunk.buffer !== options.freeChunksBut?.buffer) freeNow(chunk);
  return joined;
}
