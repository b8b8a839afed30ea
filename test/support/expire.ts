/**
 * Helpers for the expire tests (test/integration/expire-*.test.ts): raw object writes into a
 * repository (to plant unfinished backups and orphan packs as a killed backup leaves them), the
 * packs each backup's manifest references (decoded independently of pgark), and `pgark expire
 * --json` parsed.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import type { RunResult } from './postgres.ts';
import { info } from './backup.ts';
import { chownTestUser, mkdirTestUser, parseJsonOutput, parseWalKey, type WalRepo } from './wal.ts';

export interface ExpireJson {
  dryRun: boolean;
  now: string;
  windowStart: string | null;
  retained: { id: string; type: string; stoppedAt: string; reasons: string[] }[];
  expired: { id: string }[];
  incomplete: { deleted: string[]; kept: string | null };
  deleted: { backupObjects: { count: number; bytes: number }; packs: { count: number; bytes: number }; wal: { count: number; bytes: number }; walBlockMaps: { count: number; bytes: number }; keepMarkers: number; bytes: number };
  remaining: { packs: { count: number; bytes: number }; wal: { count: number; bytes: number } };
  repack: { packs: number; bytes: number; liveBytes: number; savedBytes: number; backups: number; newPacks: number };
  abortedUploads: number;
  tempFiles: { count: number; bytes: number; keys: string[] };
  durationMs: number;
  requests: number | null;
}

/** Writes an object into the repository as pgark's storage would find it. */
export async function putRaw(repo: WalRepo, key: string, data: Buffer | string): Promise<void> {
  if (repo.repoDir) {
    const file = path.join(repo.repoDir, key);
    let dir = path.dirname(file);
    const missing: string[] = [];
    while (!fs.existsSync(dir)) { missing.unshift(dir); dir = path.dirname(dir); }
    for (const d of missing) mkdirTestUser(d);
    fs.writeFileSync(file, data);
    chownTestUser(file);
    return;
  }
  await repo.bucket!.client.send(new PutObjectCommand({ Bucket: repo.bucket!.name, Key: repo.prefix + key, Body: data }));
}

/** Pack ids referenced by the manifest of backup `id` (zstd or plain JSONL). */
export async function referencedPacks(repo: WalRepo, manifestKey: string): Promise<Set<string>> {
  const text = (/\.(zst|age)$/.test(manifestKey) ? await repo.decodeObject(manifestKey) : await repo.readObject(manifestKey)).toString('utf8');
  const packs = new Set<string>();
  for (const line of text.split('\n')) {
    if (!line) continue;
    const entry = JSON.parse(line) as { t: string; x?: [number, number, string][] };
    for (const extent of entry.x ?? []) packs.add(extent[2]);
  }
  return packs;
}

export const packIdOf = (key: string): string => key.split('/').at(-1)!;

export async function runExpire(repo: WalRepo, args: string[], env: Record<string, string> = {}): Promise<{ report: ExpireJson; result: RunResult }> {
  const result = await repo.pgark(['expire', '--json', ...args], { env, timeoutMs: 300_000 });
  assert.equal(result.code, 0, `pgark expire ${args.join(' ')} failed (exit ${result.code}):\n${result.stderr}`);
  return { report: parseJsonOutput<ExpireJson>(result, 'pgark expire'), result };
}

const SEGMENT = 1024 * 1024;
const segno = (name: string) => parseInt(name.slice(8, 16), 16) * (0x1_0000_0000 / SEGMENT) + parseInt(name.slice(16, 24), 16);

/** Total bytes of the objects under `packs/`, listed independently of pgark. */
export async function packBytes(repo: WalRepo): Promise<number> {
  if (repo.repoDir) {
    let total = 0;
    const dir = path.join(repo.repoDir, 'packs');
    if (!fs.existsSync(dir)) return 0;
    for (const sub of fs.readdirSync(dir)) for (const f of fs.readdirSync(path.join(dir, sub))) total += fs.statSync(path.join(dir, sub, f)).size;
    return total;
  }
  let total = 0;
  let token: string | undefined;
  do {
    const page = await repo.bucket!.client.send(new ListObjectsV2Command({ Bucket: repo.bucket!.name, Prefix: `${repo.prefix}packs/`, ContinuationToken: token }));
    for (const o of page.Contents ?? []) total += o.Size ?? 0;
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return total;
}

/** Every listed backup is whole (manifest, packs, WAL start..stop); no pack is unreferenced (by any manifest generation still stored); no lease is left; no WAL gap after the oldest backup (1 MiB segments). */
export async function checkRepository(repo: WalRepo, what: string): Promise<{ backups: number }> {
  const keys = await repo.keys();
  const present = new Set(keys);
  const packs = new Set(keys.filter((k) => k.startsWith('packs/')).map(packIdOf));
  const wal = new Set(keys.map(parseWalKey).filter((w) => w !== undefined).map((w) => w!.name));
  const { backups } = await info(repo);
  const referenced = new Set<string>();
  for (const b of backups) {
    assert.ok(present.has(b.manifestKey), `${what}: manifest of ${b.id}`);
    for (const pack of await referencedPacks(repo, b.manifestKey)) {
      assert.ok(packs.has(pack), `${what}: pack ${pack} of backup ${b.id} exists`);
      referenced.add(pack);
    }
    // generations a repack superseded: their packs stay until the grace period is over
    for (const key of keys.filter((k) => k.startsWith(`backups/${b.id}/manifest`) && k !== b.manifestKey)) {
      for (const pack of await referencedPacks(repo, key)) referenced.add(pack);
    }
    for (let n = segno(b.startWal); n <= segno(b.stopWal); n++) {
      const name = b.startWal.slice(0, 8) + (Math.floor(n / 4096)).toString(16).toUpperCase().padStart(8, '0') + (n % 4096).toString(16).toUpperCase().padStart(8, '0');
      assert.ok(wal.has(name), `${what}: WAL ${name} of backup ${b.id}`);
    }
  }
  const unreferenced = [...packs].filter((p) => !referenced.has(p));
  assert.deepEqual(unreferenced, [], `${what}: no unreferenced pack survives`);
  assert.deepEqual(keys.filter((k) => k.startsWith('locks/')), [], `${what}: no lease left`);
  // no gap in the archive from the oldest backup's start on
  const oldest = Math.min(...backups.map((b) => segno(b.startWal)));
  const segnos = [...wal].filter((n) => /^[0-9A-F]{24}$/.test(n)).map(segno).filter((n) => n >= oldest).sort((a, b) => a - b);
  for (let i = 1; i < segnos.length; i++) assert.equal(segnos[i], segnos[i - 1]! + 1, `${what}: WAL continuous after the oldest backup`);
  return { backups: backups.length };
}

