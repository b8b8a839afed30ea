/**
 * Streams: arbitrary byte streams of unknown length (a tar of a snapshot, a pg_dump, any
 * pipe) stored under a name. The data object is written first, the manifest last: a stream
 * exists only once its manifest does, and the manifest records the SHA-256 of the content so
 * a read verifies end to end.
 */
import { randomBytes } from 'node:crypto';
import { Readable, type Writable } from 'node:stream';
import { z } from 'zod';
import { PgarkError } from '../errors.ts';
import { CountStage, DigestStage } from '../pipeline/digest.ts';
import { runPipeline } from '../pipeline/run.ts';
import { decodeStages, encodeStages, isEncryptedKey, suffixOf } from '../pipeline/object-format.ts';
import { log } from '../util/log.ts';
import { isValidStreamName, STREAMS_PREFIX, streamDataKey, streamManifestKey, streamNameOfManifestKey } from './layout.ts';
import type { Repository } from './repository.ts';

const StreamManifestSchema = z.object({
  format: z.literal(1),
  name: z.string(),
  createdAt: z.string(),
  dataKey: z.string(),
  /** Bytes of content (what `get` writes). */
  size: z.number().int().nonnegative(),
  /** Bytes stored (compressed, encrypted). */
  storedSize: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  durationMs: z.number().nonnegative(),
});
export type StreamManifest = z.infer<typeof StreamManifestSchema>;

function checkName(name: string): void {
  if (!isValidStreamName(name)) {
    throw new PgarkError('USAGE', `invalid stream name "${name}"`, {
      hint: 'use up to 200 letters, digits, ".", "_" or "-", starting with a letter or digit',
    });
  }
}

async function readJson(repo: Repository, key: string): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of await repo.storage.get(key)) chunks.push(chunk as Buffer);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new PgarkError('INTEGRITY', `${key} is not valid JSON`);
  }
}

export async function readStreamManifest(repo: Repository, name: string): Promise<StreamManifest> {
  checkName(name);
  let raw: unknown;
  try {
    raw = await readJson(repo, streamManifestKey(name));
  } catch (error) {
    if (error instanceof PgarkError && error.code === 'NOT_FOUND') {
      throw new PgarkError('NOT_FOUND', `no stream named "${name}" in ${repo.description}`, { hint: '`pgark ls` lists the streams' });
    }
    throw error;
  }
  const parsed = StreamManifestSchema.safeParse(raw);
  if (!parsed.success || parsed.data.name !== name || !parsed.data.dataKey.startsWith(`${STREAMS_PREFIX}${name}/`)) {
    throw new PgarkError('INTEGRITY', `the manifest of stream "${name}" is malformed`);
  }
  return parsed.data;
}

export interface PutStreamOptions {
  signal?: AbortSignal;
  onBytes?: (bytes: number) => void;
}

export async function putStream(repo: Repository, name: string, source: Readable, options: PutStreamOptions = {}): Promise<StreamManifest> {
  checkName(name);
  if (await repo.storage.head(streamManifestKey(name))) {
    throw new PgarkError('EXISTS', `stream "${name}" already exists in ${repo.description}`, { hint: 'streams are never overwritten: choose another name' });
  }
  const started = Date.now();
  const format = await repo.writeFormat();
  const tag = `${new Date().toISOString().replace(/[-:.]/g, '').slice(0, 15)}-${randomBytes(4).toString('hex')}`;
  const dataKey = streamDataKey(name, tag, suffixOf(format));
  const content = new DigestStage();
  const stored = new CountStage();
  const progress = new CountStage(options.onBytes);

  const stages = await encodeStages(format);
  // The upload consumes the encoded stream; the pipeline propagates errors both ways.
  let upload: Promise<{ size: number }> | undefined;
  try {
    await runPipeline([source, progress, content, ...stages, stored, async (output: AsyncIterable<Buffer>) => {
      upload = repo.storage.put(dataKey, Readable.from(output), { kind: 'data', signal: options.signal });
      await upload;
    }], options.signal);
  } catch (error) {
    await upload?.catch(() => {});
    await repo.storage.delete([dataKey]).catch(() => log.warn('could not remove a partial stream object', { key: dataKey }));
    throw error;
  }

  const manifest: StreamManifest = {
    format: 1,
    name,
    createdAt: new Date().toISOString(),
    dataKey,
    size: content.bytes,
    storedSize: stored.bytes,
    sha256: content.digest(),
    durationMs: Date.now() - started,
  };
  await repo.storage.put(streamManifestKey(name), Buffer.from(JSON.stringify(manifest, null, 2) + '\n'), { kind: 'meta', signal: options.signal });
  return manifest;
}

/**
 * Writes the content of stream `name` to `destination`, verifying size and SHA-256 at the end.
 * A mismatch is an INTEGRITY error — after the bytes were written, since this streams: a
 * consumer must check the exit status (set -o pipefail).
 */
export async function getStream(repo: Repository, name: string, destination: Writable, options: { signal?: AbortSignal; onBytes?: (bytes: number) => void } = {}): Promise<StreamManifest> {
  const manifest = await readStreamManifest(repo, name);
  const identities = isEncryptedKey(manifest.dataKey) ? await repo.identities(`stream "${name}"`) : [];
  const stages = await decodeStages(manifest.dataKey, identities);
  const content = new DigestStage();
  const progress = new CountStage(options.onBytes);
  const body = await repo.storage.get(manifest.dataKey);
  try {
    await runPipeline([body, ...stages, content, progress, destination], options.signal);
  } catch (error) {
    if (error instanceof PgarkError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE') throw error;
    if (typeof code === 'string' && code.startsWith('ERR_ZSTD') || code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR') {
      throw new PgarkError('INTEGRITY', `stream "${name}" is corrupt: ${(error as Error).message}`, { cause: error });
    }
    throw error;
  }
  if (content.bytes !== manifest.size || content.digest() !== manifest.sha256) {
    throw new PgarkError('INTEGRITY', `stream "${name}" failed verification: got ${content.bytes} bytes with a different SHA-256 than the ${manifest.size} bytes stored`, {
      hint: 'the stored object was changed or damaged; the output is not trustworthy',
    });
  }
  return manifest;
}

export async function listStreams(repo: Repository): Promise<StreamManifest[]> {
  const manifests: StreamManifest[] = [];
  for await (const object of repo.storage.list(STREAMS_PREFIX)) {
    const name = streamNameOfManifestKey(object.key);
    if (name) manifests.push(await readStreamManifest(repo, name));
  }
  return manifests;
}
