// pgark verify against real damage, in a file repository (zstd) and on RGW (compression: none,
// where only the CRC-32 recorded in the manifest can notice a flipped byte):
//   - a healthy repository verifies (exit 0); a second run reads no pack and no WAL file again;
//     after one more backup, it reads exactly the new packs and the new WAL files; --full reads
//     everything again;
//   - a flipped byte in a pack (--full), a truncated pack (already --quick), a deleted pack and a
//     missing WAL segment are each reported (exit 2) with the broken backups and the time range
//     no longer recoverable; with the object put back, verify passes again;
//   - with compression none, restore refuses the damaged blob too.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { createPrimary, oneErrorLine, switchAndArchive, takeBackup, type Primary } from '../support/backup.ts';
import { startFaultProxy } from '../support/fault-proxy.ts';
import { s3Env } from '../support/objstores.ts';
import { parseJsonOutput, type WalRepo } from '../support/wal.ts';

interface Report {
  ok: boolean;
  mode: string;
  backups: { id: string; intact: boolean; restorable: boolean; reachesTime?: string; stoppedAt?: string }[];
  problems: { kind: string; object: string; message: string; backups: string[] }[];
  warnings: string[];
  recoverable: { from: string; to: string }[];
  lost: { from: string; to: string }[];
  read: Record<'manifests' | 'packs' | 'wal', { objects: number; bytes: number; skipped: number }>;
  state: { previous: string | null; written: string | null };
  bytesPerSecond: number;
}

async function verify(repo: WalRepo, args: string[] = []): Promise<{ code: number | null; report: Report; stderr: string }> {
  const r = await repo.pgark(['verify', '--json', ...args], { timeoutMs: 300_000 });
  return { code: r.code, report: parseJsonOutput<Report>(r, `pgark verify ${args.join(' ')}`), stderr: r.stderr };
}

/** Raw access to the repository's objects, for damaging them. */
function objects(repo: WalRepo) {
  return {
    read: (key: string) => repo.readObject(key),
    async write(key: string, data: Buffer) {
      if (repo.repoDir) fs.writeFileSync(path.join(repo.repoDir, key), data);
      else await repo.bucket!.client.send(new PutObjectCommand({ Bucket: repo.bucket!.name, Key: repo.prefix + key, Body: data }));
    },
    async remove(key: string) {
      if (repo.repoDir) fs.rmSync(path.join(repo.repoDir, key));
      else await repo.bucket!.client.send(new DeleteObjectCommand({ Bucket: repo.bucket!.name, Key: repo.prefix + key }));
    },
  };
}

const packKey = (id: string) => `packs/${id.slice(0, 2)}/${id}`;

async function scenario(t: TestContext, kind: 'file' | 's3', compression: 'zstd' | 'none'): Promise<void> {
  const { repo, primary: p }: Primary = await createPrimary(t, { kind, name: `verify-${kind}`, repoSettings: { compression } });
  const store = objects(repo);
  await p.sql('CREATE TABLE t (id bigint PRIMARY KEY, v text)');
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100000) g');
  const b1 = await takeBackup(repo);
  await p.sql('UPDATE t SET v = upper(v) WHERE id % 40 = 0');
  await switchAndArchive(p);
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(100001, 120000) g');
  await switchAndArchive(p);
  const b2 = await takeBackup(repo);
  await p.sql('UPDATE t SET v = lower(v) WHERE id % 30 = 0');
  const gapSegment = await switchAndArchive(p); // archived between b2's stop and b3's start
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(120001, 130000) g');
  await switchAndArchive(p);
  const b3 = await takeBackup(repo);
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(130001, 131000) g');
  await switchAndArchive(p);

  // ---- healthy: exit 0, then incremental runs read only what is new ----
  const first = await verify(repo);
  assert.equal(first.code, 0, JSON.stringify(first.report.problems) + first.stderr);
  assert.equal(first.report.ok, true);
  assert.deepEqual(first.report.backups.map((b) => [b.id, b.intact, b.restorable]), [[b1.id, true, true], [b2.id, true, true], [b3.id, true, true]]);
  assert.deepEqual(first.report.lost, []);
  assert.equal(first.report.recoverable.length, 1);
  assert.equal(first.report.recoverable[0]!.from, b1.stoppedAt);
  const allPacks = new Set([...b1.packs, ...b2.packs, ...b3.packs]);
  assert.equal(first.report.read.packs.objects, allPacks.size, 'every pack read once');
  assert.ok(first.report.read.wal.objects > 5);
  assert.ok(first.report.state.written, 'a verification record written');
  t.diagnostic(`${kind}: first run read ${first.report.read.packs.objects} packs (${first.report.read.packs.bytes} B), ${first.report.read.wal.objects} WAL files (${first.report.read.wal.bytes} B)`);

  const second = await verify(repo);
  assert.equal(second.code, 0);
  assert.equal(second.report.state.previous, first.report.state.written);
  assert.deepEqual([second.report.read.packs.objects, second.report.read.packs.bytes, second.report.read.wal.objects, second.report.read.wal.bytes], [0, 0, 0, 0], 'nothing read again');
  assert.equal(second.report.read.packs.skipped, allPacks.size);
  assert.equal(second.report.read.wal.skipped, first.report.read.wal.objects);
  assert.equal(second.report.state.written, null, 'nothing new: no new record');

  await p.sql('UPDATE t SET v = v || \'x\' WHERE id % 25 = 0');
  const b4 = await takeBackup(repo);
  await switchAndArchive(p);
  const walBefore = first.report.read.wal.objects;
  const third = await verify(repo);
  assert.equal(third.code, 0);
  assert.equal(third.report.read.packs.objects, b4.packs.length, 'only the new backup\'s packs read');
  assert.equal(third.report.read.packs.skipped, allPacks.size);
  const walNow = (await repo.keys()).filter((k) => k.startsWith('wal/')).length;
  assert.equal(third.report.read.wal.objects, walNow - walBefore, 'only the new WAL files read');
  assert.ok(third.report.read.wal.objects > 0);
  t.diagnostic(`${kind}: incremental run after one more backup read ${third.report.read.packs.objects} pack(s) ${third.report.read.packs.bytes} B and ${third.report.read.wal.objects} WAL file(s) ${third.report.read.wal.bytes} B`);

  const full = await verify(repo, ['--full']);
  assert.equal(full.code, 0);
  assert.equal(full.report.read.packs.objects, allPacks.size + b4.packs.length);
  assert.equal(full.report.read.wal.objects, walNow);
  // three runs wrote a record (first, third, full): only the two newest are kept
  const records = (await repo.keys()).filter((k) => k.startsWith('verify/')).sort();
  assert.deepEqual(records, [third.report.state.written, full.report.state.written].filter((k) => k !== null).sort(), 'older verification records deleted');

  /** The one problem of a damaged run: its kind, object, and that it names b1 and a lost range from b1's stop. */
  const expectBroken = (run: { code: number | null; report: Report }, kindOf: string, object: string, what: string) => {
    assert.equal(run.code, 2, `${what}: exit 2`);
    assert.equal(run.report.ok, false);
    const problem = run.report.problems.find((x) => x.kind === kindOf);
    assert.ok(problem, `${what}: a ${kindOf} problem in ${JSON.stringify(run.report.problems)}`);
    assert.equal(problem.object, object);
    assert.ok(problem.backups.includes(b1.id), `${what}: names backup ${b1.id}: ${JSON.stringify(problem)}`);
    assert.equal(run.report.backups.find((b) => b.id === b1.id)!.intact, false);
    assert.ok(run.report.lost.length > 0 && run.report.lost[0]!.from === b1.stoppedAt, `${what}: lost from ${b1.stoppedAt}: ${JSON.stringify(run.report.lost)}`);
    t.diagnostic(`${kind} ${what}: ${problem.message} (backups ${problem.backups.join(', ')}); lost ${run.report.lost.map((r) => `${r.from}..${r.to}`).join(', ')}`);
  };

  // ---- a flipped byte in a pack: --full finds it (the size is unchanged) ----
  const pack = packKey(b1.packs[0]!);
  const original = await store.read(pack);
  {
    const damaged = Buffer.from(original);
    const at = Math.floor(original.length / 3);
    damaged[at] = damaged[at]! ^ 0x01;
    await store.write(pack, damaged);
    const quick = await verify(repo, ['--quick']);
    assert.equal(quick.code, 0, 'a flipped byte does not change sizes: --quick cannot see it');
    const flipped = await verify(repo, ['--full']);
    expectBroken(flipped, 'blob-damaged', pack, 'flipped byte');
    // Blobs of one ranged GET share a decoder: the blobs after the damaged one must still decode.
    assert.doesNotMatch(flipped.report.problems.find((x) => x.kind === 'blob-damaged')!.message, /more damaged blob/, 'one flipped byte damages one blob');
    if (compression === 'none') {
      // the restore path checks the same CRC-32
      const r = await repo.pgark(['restore', '--target-dir', path.join(repo.dir, 'restore-flipped'), '--set', b1.id], { timeoutMs: 300_000 });
      assert.equal(r.code, 2);
      assert.match(oneErrorLine(r), /a blob in pack \S+ \(offset \d+\) is damaged: CRC-32 mismatch/);
    }
  }

  // ---- a truncated pack: seen from the listing alone ----
  await store.write(pack, original.subarray(0, original.length - 100));
  expectBroken(await verify(repo, ['--quick']), 'pack-truncated', pack, 'truncated pack');
  expectBroken(await verify(repo), 'pack-truncated', pack, 'truncated pack (incremental)');

  // ---- a deleted pack ----
  await store.remove(pack);
  expectBroken(await verify(repo, ['--quick']), 'pack-missing', pack, 'deleted pack');
  await store.write(pack, original);
  const repaired = await verify(repo);
  assert.equal(repaired.code, 0, `repaired: ${JSON.stringify(repaired.report.problems)}`);
  assert.equal(repaired.report.read.packs.objects, 1, 'the replaced pack is read again, nothing else');

  // ---- a missing WAL segment between b2 and b3 ----
  const walKey = (await repo.keys()).find((k) => k.startsWith(`wal/${gapSegment.slice(0, 16)}/${gapSegment}-`))!;
  const walBody = await store.read(walKey);
  await store.remove(walKey);
  {
    const run = await verify(repo, ['--quick']);
    assert.equal(run.code, 2);
    const gap = run.report.problems.find((x) => x.kind === 'wal-gap');
    assert.ok(gap, JSON.stringify(run.report.problems));
    assert.equal(gap.object, `${gapSegment}..${gapSegment}`);
    assert.deepEqual(gap.backups, [b1.id, b2.id], 'the backups whose WAL runs through the gap');
    assert.equal(run.report.lost.length, 1);
    assert.ok(run.report.lost[0]!.from >= b2.stoppedAt && run.report.lost[0]!.to === b3.stoppedAt, `lost between b2 and b3: ${JSON.stringify(run.report.lost)}`);
    assert.equal(run.report.backups.find((b) => b.id === b3.id)!.restorable, true);
    t.diagnostic(`${kind} missing WAL: ${gap.message} (backups ${gap.backups.join(', ')}); lost ${run.report.lost[0]!.from}..${run.report.lost[0]!.to}`);
    const text = await repo.pgark(['verify', '--quick']);
    assert.equal(text.code, 2);
    assert.match(text.stdout, new RegExp(`PROBLEM WAL ${gapSegment}\\.\\.${gapSegment} \\(1 segment\\(s\\)\\) is missing`));
    assert.match(text.stdout, /NO LONGER RECOVERABLE: \S+ \.\. \S+/);
  }
  await store.write(walKey, walBody);
  assert.equal((await verify(repo)).code, 0);
}

test('verify: a file repository (zstd)', { timeout: 900_000 }, async (t) => {
  await scenario(t, 'file', 'zstd');
});

test('verify: RGW, compression none (CRC-32 in the manifest)', { timeout: 900_000 }, async (t) => {
  await scenario(t, 's3', 'none');
});

test('verify: an age-encrypted file repository', { timeout: 600_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { kind: 'file', encrypted: true, name: 'verify-age' });
  await p.sql('CREATE TABLE t (id bigint PRIMARY KEY, v text)');
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g');
  const b1 = await takeBackup(repo);
  await switchAndArchive(p);
  const healthy = await verify(repo);
  assert.equal(healthy.code, 0, JSON.stringify(healthy.report.problems) + healthy.stderr);
  assert.equal(healthy.report.read.packs.objects, b1.packs.length);

  // Without the identity: one configuration error, not a report of damage.
  const noKey = await repo.pgark(['verify', '--identity', path.join(repo.dir, 'no-such-identity')]);
  assert.equal(noKey.code, 2);
  assert.doesNotMatch(noKey.stdout, /BROKEN|PROBLEM/);

  // A flipped byte inside an encrypted pack fails its age MAC.
  const store = objects(repo);
  const pack = packKey(b1.packs[0]!);
  const original = await store.read(pack);
  const damaged = Buffer.from(original);
  const at = Math.floor(original.length / 2);
  damaged[at] = damaged[at]! ^ 0x40;
  await store.write(pack, damaged);
  const run = await verify(repo, ['--full']);
  assert.equal(run.code, 2);
  const problem = run.report.problems.find((x) => x.kind === 'blob-damaged');
  assert.ok(problem && problem.object === pack && problem.backups.includes(b1.id), JSON.stringify(run.report.problems));
  assert.deepEqual(run.report.recoverable, []);
  t.diagnostic(`encrypted: ${problem.message}`);
  await store.write(pack, original);
  assert.equal((await verify(repo)).code, 0);
});

test('verify: a store that fails every pack download stops the run with its error, no backup is called broken', { timeout: 600_000 }, async (t) => {
  const proxy = await startFaultProxy({ target: s3Env('rgw').endpoint });
  t.after(() => proxy.close());
  const { repo, primary: p } = await createPrimary(t, { kind: 's3', name: 'verify-outage', repoSettings: { 's3-endpoint': proxy.url, 'retry-max': 2 } });
  await p.sql('CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g');
  await takeBackup(repo);
  await switchAndArchive(p);
  assert.equal((await verify(repo)).code, 0);

  proxy.setFaults({ errorRate: 1, filter: (req) => req.method === 'GET' && req.url.includes('/packs/') });
  const r = await repo.pgark(['verify', '--full']);
  assert.notEqual(r.code, 0);
  assert.doesNotMatch(r.stdout, /BROKEN|PROBLEM/, 'an outage is not damage');
  // (oneErrorLine() would refuse the S3 error text "We encountered an internal error")
  const lines = r.stderr.split('\n').filter((l) => /^pgark verify: error:/.test(l));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /error: download packs\/\S+ in s3:\/\/\S+ at \S+ failed: InternalError \(HTTP 500\)/);
  assert.doesNotMatch(r.stderr, /pgark verify: internal error|\n\s+at /);
  t.diagnostic(`outage: ${lines[0]}`);
  proxy.setFaults({});
  assert.equal((await verify(repo, ['--full'])).code, 0);
});
