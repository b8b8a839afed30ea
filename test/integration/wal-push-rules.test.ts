// The archive's safety rules with real WAL files of real clusters, on a file:// and an S3
// repository:
//   - the same segment pushed twice: exit 0 both times, one object;
//   - different content under an archived name (a real segment with one byte changed after the
//     header): refused with a clear error, the stored object unchanged (same key, same bytes);
//   - a segment of another cluster (other system identifier): refused (REPO_MISMATCH), nothing
//     stored; a segment renamed to another segment's name: refused;
//   - timeline history, .partial and .backup files (a real backup history file from
//     pg_backup_stop) push and fetch byte-identical;
//   - two objects for one name (a split brain, written behind pgark's back): wal-verify and
//     wal-fetch report it and refuse to choose.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { zstdCompressSync } from 'node:zlib';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { skipServers } from '../support/objstores.ts';
import { createCluster, type Cluster } from '../support/postgres.ts';
import {
  Cleanup, chownTestUser, createWalRepo, parseJsonOutput, insertRows, mkdirTestUser, parseWalKey, scratchDir, sha256, switchWal, waitArchived, walObjects, type RepoKind,
  type WalRepo,
} from '../support/wal.ts';

interface Sources {
  a: Cluster;
  sysidA: string;
  sysidB: string;
  /** real segments of cluster A, oldest first */
  segments: { name: string; content: Buffer }[];
  backupFile: { name: string; content: Buffer };
  foreign: { name: string; content: Buffer };
}

let sources: Sources | undefined;
let sourcesCleanup: (() => Promise<void>) | undefined;

async function getSources(): Promise<Sources> {
  if (sources) return sources;
  const originals = scratchDir('rules-orig');
  const a = await createCluster({
    walSegmentSizeMB: 1,
    settings: { archive_mode: 'on', archive_command: `test ! -f '${originals}/%f' && cp %p '${originals}/%f'`, autovacuum: 'off' },
  });
  const b = await createCluster({ walSegmentSizeMB: 1 });
  sourcesCleanup = async () => {
    await a.destroy().catch((e: unknown) => console.error(`cleanup of cluster A: ${String(e)}`));
    await b.destroy().catch((e: unknown) => console.error(`cleanup of cluster B: ${String(e)}`));
    fs.rmSync(originals, { recursive: true, force: true });
  };
  for (let i = 0; i < 6; i++) {
    await insertRows(a, i * 10_000 + 1, 3000);
    await switchWal(a);
  }
  // a real backup history file: pg_backup_start/stop (PostgreSQL 15 names) in one session
  const client = await a.connect();
  try {
    await client.query(a.major >= 15 ? "SELECT pg_backup_start('rules', true)" : "SELECT pg_start_backup('rules', true, false)");
    await insertRows(a, 100_000, 100);
    await client.query(a.major >= 15 ? 'SELECT * FROM pg_backup_stop(true)' : 'SELECT * FROM pg_stop_backup(false, true)');
  } finally {
    await client.end();
  }
  await waitArchived(a, await switchWal(a));
  const names = fs.readdirSync(originals).sort();
  const segments = names.filter((n) => /^[0-9A-F]{24}$/.test(n)).map((name) => ({ name, content: fs.readFileSync(path.join(originals, name)) }));
  const backupName = names.find((n) => n.endsWith('.backup'));
  assert.ok(backupName, `pg_backup_stop archived a backup history file (${names.join(' ')})`);

  // a complete segment of another cluster, with the same segment size
  await insertRows(b, 1, 3000);
  const foreignName = await switchWal(b);
  const sysidB = await b.sql('SELECT system_identifier FROM pg_control_system()');
  sources = {
    a,
    sysidA: await a.sql('SELECT system_identifier FROM pg_control_system()'),
    sysidB,
    segments,
    backupFile: { name: backupName, content: fs.readFileSync(path.join(originals, backupName)) },
    foreign: { name: foreignName, content: fs.readFileSync(path.join(b.dataDir, 'pg_wal', foreignName)) },
  };
  assert.notEqual(sources.sysidA, sysidB);
  return sources;
}

/** Writes `content` as `dir/name` (owned by the cluster user) and runs wal-push on it; no archive_status: no push-ahead. */
async function push(repo: WalRepo, dir: string, name: string, content: Buffer) {
  mkdirTestUser(dir);
  const file = path.join(dir, name);
  fs.writeFileSync(file, content);
  chownTestUser(file);
  return repo.pgark(['wal-push', file]);
}

async function fetch(repo: WalRepo, name: string): Promise<{ code: number | null; stderr: string; content?: Buffer }> {
  const target = path.join(repo.dir, 'fetched', `${name}-restored`);
  mkdirTestUser(path.dirname(target));
  fs.rmSync(target, { force: true });
  const r = await repo.pgark(['wal-fetch', name, target]);
  return { code: r.code, stderr: r.stderr, content: fs.existsSync(target) ? fs.readFileSync(target) : undefined };
}

const errorLine = (stderr: string): string => stderr.split('\n').find((l) => /^pgark wal-push: error: /.test(l)) ?? `(no error line in: ${stderr})`;

test.after(async () => { await sourcesCleanup?.(); });

for (const kind of ['file', 's3'] as RepoKind[]) {
  test(`${kind} repository: duplicates, conflicts, foreign and renamed segments, history/.partial/.backup files`, { skip: kind === 's3' && skipServers(), timeout: 600_000 }, async (t) => {
    const src = await getSources();
    const cleanup = new Cleanup(t);
    const repo = await createWalRepo({ kind, name: `rules-${kind}` });
    cleanup.add('repository', () => repo.cleanup());
    await repo.init(src.a);
    const dir = path.join(repo.dir, 'push');
    const seg = src.segments[1]!;

    // ---- the same segment twice: exit 0, one object ----
    let r = await push(repo, dir, seg.name, seg.content);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`"msg":"archived ${seg.name}"`));
    r = await push(repo, dir, seg.name, seg.content);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`${seg.name} was already archived with the same content`));
    let objects = await walObjects(repo);
    assert.equal(objects.get(seg.name)?.length, 1, 'one object');
    const stored = objects.get(seg.name)![0]!;
    assert.equal(stored.sha256, sha256(seg.content));
    const storedBytes = await repo.readObject(stored.key);

    // ---- other content under that name: refused, nothing overwritten ----
    const changed = Buffer.from(seg.content);
    changed.writeUInt8(changed.readUInt8(8192 + 123) ^ 0xff, 8192 + 123); // second page: the header (and so the header checks) are intact
    r = await push(repo, path.join(repo.dir, 'push-changed'), seg.name, changed);
    assert.equal(r.code, 2, `conflict: exit 2\n${r.stderr}`);
    assert.match(errorLine(r.stderr), new RegExp(`^pgark wal-push: error: ${seg.name} is already archived with different content; refusing to overwrite it$`));
    assert.match(r.stderr, /pgark wal-push: hint: .*split brain/);
    objects = await walObjects(repo);
    assert.deepEqual(objects.get(seg.name)?.map((o) => o.key), [stored.key], 'the same single object');
    assert.ok((await repo.readObject(stored.key)).equals(storedBytes), 'with the same bytes');
    // and the original content is still accepted as a duplicate
    r = await push(repo, dir, seg.name, seg.content);
    assert.equal(r.code, 0, r.stderr);

    // ---- another cluster's segment: REPO_MISMATCH ----
    r = await push(repo, path.join(repo.dir, 'push-foreign'), src.foreign.name, src.foreign.content);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(errorLine(r.stderr), `pgark wal-push: error: ${src.foreign.name} belongs to database system ${src.sysidB}, but the repository belongs to ${src.sysidA}`);
    objects = await walObjects(repo);
    assert.equal([...objects.values()].flat().some((o) => o.sha256 === sha256(src.foreign.content)), false, 'nothing stored for the foreign segment');

    // ---- a segment under another segment's name: refused ----
    const other = src.segments[2]!;
    const renamed = src.segments[3]!.name;
    r = await push(repo, path.join(repo.dir, 'push-renamed'), renamed, other.content);
    assert.equal(r.code, 2, r.stderr);
    assert.match(errorLine(r.stderr), new RegExp(`error: ${renamed} starts at LSN [0-9A-F]+/[0-9A-F]+, not at [0-9A-F]+/[0-9A-F]+ as its name says`));
    assert.equal((await walObjects(repo)).has(renamed), false);
    // not a WAL file name at all
    r = await push(repo, path.join(repo.dir, 'push-junk'), 'postgresql.conf', Buffer.from('x'));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /"postgresql\.conf" is not a WAL file name/);

    // ---- history, .partial and .backup files ----
    const history = { name: '00000002.history', content: Buffer.from(`1\t${'0/'}${(0x3000000).toString(16).toUpperCase()}\tno recovery target specified\n`) };
    const partial = { name: `${src.segments[4]!.name}.partial`, content: src.segments[4]!.content };
    for (const file of [history, partial, src.backupFile]) {
      r = await push(repo, dir, file.name, file.content);
      assert.equal(r.code, 0, `${file.name}: ${r.stderr}`);
      r = await push(repo, dir, file.name, file.content);
      assert.equal(r.code, 0, `${file.name} again: ${r.stderr}`);
      assert.match(r.stderr, /already archived with the same content/);
      const f = await fetch(repo, file.name);
      assert.equal(f.code, 0, `fetch ${file.name}: ${f.stderr}`);
      assert.ok(f.content?.equals(file.content), `${file.name} fetched byte-identical`);
    }
    objects = await walObjects(repo);
    assert.ok(objects.get(history.name)![0]!.key.startsWith('wal/history/00000002.history-'), 'history files live in wal/history/');
    assert.ok(objects.get(partial.name)![0]!.key.startsWith(`wal/${partial.name.slice(0, 16)}/${partial.name}-`));
    r = await push(repo, path.join(repo.dir, 'push-changed'), history.name, Buffer.from('1\t0/4000000\tother\n'));
    assert.equal(r.code, 2, 'a different history under an archived name is a conflict too');
    assert.match(errorLine(r.stderr), /00000002\.history is already archived with different content/);
    let f = await fetch(repo, seg.name);
    assert.equal(f.code, 0, f.stderr);
    assert.ok(f.content?.equals(seg.content), 'the segment fetched byte-identical');

    let v = await repo.pgark(['wal-verify', '--json']);
    let verify = parseJsonOutput<{ conflicts: string[]; unreadable: unknown[]; files: number; timelines: { timeline: number; partials: string[]; history: boolean }[] }>(v, 'wal-verify --json');
    assert.deepEqual(verify.conflicts, [], 'refused pushes left no conflicting object');
    assert.deepEqual(verify.unreadable, []);
    assert.equal(verify.files, 4);
    assert.deepEqual(verify.timelines.find((tl) => tl.timeline === 1)?.partials, [partial.name]);
    assert.equal(verify.timelines.find((tl) => tl.timeline === 2)?.history, true);

    // ---- a split brain behind pgark's back: two objects for one name ----
    const rogueKey = `wal/${seg.name.slice(0, 16)}/${seg.name}-${sha256(changed)}.zst`;
    const rogue = zstdCompressSync(changed);
    if (repo.repoDir) {
      fs.writeFileSync(path.join(repo.repoDir, rogueKey), rogue);
    } else {
      await repo.bucket!.client.send(new PutObjectCommand({ Bucket: repo.bucket!.name, Key: repo.prefix + rogueKey, Body: rogue }));
    }
    v = await repo.pgark(['wal-verify', '--json']);
    assert.equal(v.code, 2);
    verify = parseJsonOutput(v, 'wal-verify --json after the split brain');
    assert.deepEqual(verify.conflicts, [seg.name]);
    const human = await repo.pgark(['wal-verify']);
    assert.match(human.stdout, new RegExp(`^CONFLICT ${seg.name} is archived with different contents$`, 'm'));
    f = await fetch(repo, seg.name);
    assert.equal(f.code, 2, 'wal-fetch refuses to choose');
    assert.match(f.stderr, new RegExp(`pgark wal-fetch: error: ${seg.name} is archived 2 times with different content`));
    assert.equal(f.content, undefined, 'and writes nothing');
    assert.ok(parseWalKey(rogueKey));
  });
}
