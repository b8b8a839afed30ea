/**
 * How a stored object's bytes relate to its content: compressed with a codec, then optionally
 * encrypted to age recipients. The key's suffix records both (".zst", ".zst.age", ".lz4", ...),
 * so every object can be read back — even by hand with `age -d` and `zstd -d`.
 */
import { Readable, type Transform } from 'node:stream';
import { runPipeline } from './run.ts';
import { CODEC_EXTENSION, codecOfKey, compressStage, decompressStage, type Codec } from './codec.ts';

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

/** Encodes a small in-memory object (manifests, WAL segments) in one go. */
export async function encodeBuffer(content: Buffer, format: WriteFormat): Promise<Buffer> {
  return collect(Readable.from([content]), await encodeStages(format));
}

export async function decodeBuffer(stored: Readable | Buffer, key: string, identities: readonly string[]): Promise<Buffer> {
  const source = Buffer.isBuffer(stored) ? Readable.from([stored]) : stored;
  return collect(source, await decodeStages(key, identities));
}

async function collect(source: Readable, stages: Transform[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await runPipeline([source, ...stages, async (output: AsyncIterable<Buffer>) => {
    for await (const chunk of output) chunks.push(chunk);
  }]);
  return Buffer.concat(chunks);
}
