/**
 * What `pgark verify` already found intact, so the next run reads only what is new. Packs and
 * WAL objects are immutable, so "verified with this size" stays true until the object changes
 * (a changed size is rechecked) or bit rot strikes (`verify --full` rechecks everything).
 *
 * A pack is recorded as a whole once every blob any backup referenced in it decoded. Later
 * backups reference only blobs an earlier backup referenced (an incremental copies extents
 * from its base's manifest), so a recorded pack has no unverified blob in use.
 *
 * The state lives in the repository (verify/<run>.json.zst, docs/FORMAT.md), so a verify from
 * any host continues where the last one stopped. Each run writes a new object with everything
 * verified so far (objects that no longer exist dropped); none is ever rewritten.
 */
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { zstdCompress, zstdDecompress } from 'node:zlib';
import { z } from 'zod';
import { log } from '../util/log.ts';
import { VERIFY_PREFIX, verifyRunOfKey, verifyStateKey } from './layout.ts';
import type { Repository } from './repository.ts';

const VerifyStateSchema = z.object({
  format: z.literal(1),
  run: z.string(),
  startedAt: z.string(),
  finishedAt: z.string(),
  /** pack id → stored size when verified */
  packs: z.record(z.string(), z.number()),
  /** WAL object key → stored size when verified */
  wal: z.record(z.string(), z.number()),
});
export type VerifyState = z.infer<typeof VerifyStateSchema>;

export function newRunId(now = new Date()): string {
  return `${now.toISOString().replace(/[-:]/g, '').slice(0, 15)}-${randomBytes(4).toString('hex')}`;
}

/** The newest readable state, or undefined (first run, or the newest is damaged: start over). */
export async function readLatestState(repo: Repository): Promise<{ key: string; state: VerifyState } | undefined> {
  const keys: string[] = [];
  for await (const object of repo.storage.list(VERIFY_PREFIX)) if (verifyRunOfKey(object.key)) keys.push(object.key);
  const key = keys.sort().at(-1);
  if (!key) return undefined;
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of await repo.storage.get(key)) chunks.push(chunk as Buffer);
    const parsed = VerifyStateSchema.safeParse(JSON.parse((await promisify(zstdDecompress)(Buffer.concat(chunks))).toString('utf8')));
    if (parsed.success) return { key, state: parsed.data };
  } catch {
    // fall through: unreadable
  }
  log.warn(`the last verification record ${key} is unreadable; verifying everything`);
  return undefined;
}

/**
 * Stores a run's record, then deletes all but the two newest: each record is cumulative, and
 * the one before the newest is kept in case the newest turns out unreadable.
 */
export async function writeState(repo: Repository, state: VerifyState): Promise<string> {
  const key = verifyStateKey(state.run);
  const body = await promisify(zstdCompress)(Buffer.from(JSON.stringify(state)));
  await repo.storage.put(key, body, { kind: 'meta' });
  const keys: string[] = [];
  for await (const object of repo.storage.list(VERIFY_PREFIX)) if (verifyRunOfKey(object.key)) keys.push(object.key);
  const superseded = keys.sort().slice(0, -2).filter((k) => k < key);
  if (superseded.length > 0) await repo.storage.delete(superseded);
  return key;
}
