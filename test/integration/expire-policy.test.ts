// pgark expire keeps exactly what each retention policy says, on a scripted history (file
// repository, real PostgreSQL): five backups (full, incremental, full, incremental,
// incremental) with a marked commit after each, an unfinished backup killed long ago with its
// orphan pack, and a newer unfinished (resumable) backup whose checkpoint manifest references a
// pack. The recovery window is measured against PGARK_TEST_NOW (the simulated clock: the window is
// placed between two real backups, so no test waits days).
// - dry runs of --retain 2, --retain-full 1/2 and --retain-window report the right backups and
//   delete nothing; keep markers (pgark keep / keep --off) are respected;
// - the real expire (window + a kept old backup) deletes exactly: the expired backup, the old
//   unfinished backup and its pack, packs no retained manifest references, WAL older than the
//   window's first backup except the kept backup's own start..stop; a second run deletes nothing;
// - restore to a point inside the window gives exactly the rows committed before it; a point
//   between the kept backup and the window, and one before every backup, fail with one clear line.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPrimary, oneErrorLine, restoreAndStart, switchAndArchive, takeBackup, type BackupJson } from '../support/backup.ts';
import { packIdOf, putRaw, referencedPacks, runExpire } from '../support/expire.ts';
import { parseWalKey } from '../support/wal.ts';

const SEGMENT = 1024 * 1024;
/** An instant as PostgreSQL's recovery_target_time accepts it. */
const pgTime = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '+00');
const segno = (name: string) => parseInt(name.slice(8, 16), 16) * (0x1_0000_0000 / SEGMENT) + parseInt(name.slice(16, 24), 16);

test('expire keeps exactly what retain, retain-full, retain-window and keep markers say; restores inside the window work', { timeout: 900_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { name: 'expol', settings: { track_commit_timestamp: 'on' } });
  await p.sql('CREATE TABLE marks (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())');
  await p.sql("CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g");
  const backups: BackupJson[] = [];
  const marks: string[] = []; // commit time of mark i+1, committed after backup i ended
  for (let i = 0; i < 5; i++) {
    await p.sql(`UPDATE bulk SET v = md5(v) WHERE id % 7 = ${i}`);
    backups.push(await takeBackup(repo, i === 2 ? ['--full'] : []));
    await new Promise((r) => setTimeout(r, 300));
    await p.sql(`INSERT INTO marks (id) VALUES (${i + 1})`);
    // the commit record's time: what recovery_target_time is compared with
    marks.push(await p.sql(`SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM marks WHERE id = ${i + 1}`));
    await new Promise((r) => setTimeout(r, 300));
    await switchAndArchive(p);
  }
  assert.deepEqual(backups.map((b) => b.type), ['full', 'incremental', 'full', 'incremental', 'incremental']);
  const ids = backups.map((b) => b.id);

  // a backup killed long ago (manifest, no summary) and its orphan pack; a resumable one, newer
  const orphanPack = 'aa' + '0'.repeat(21) + '1.zst';
  await putRaw(repo, 'backups/20000101T000000F/manifest.jsonl.zst', 'not even zstd');
  await putRaw(repo, `packs/aa/${orphanPack}`, Buffer.alloc(1000));
  const resumePack = 'bb' + '0'.repeat(21) + '2';
  await putRaw(repo, `packs/bb/${resumePack}`, Buffer.alloc(500));
  await putRaw(repo, 'backups/20991231T235959F/partial-000001.jsonl',
    JSON.stringify({ t: 'f', p: 'base/1/1', m: 384, s: 8192, mt: 0, x: [[0, 1, resumePack, 0, 500, 0]] }) + '\n');

  const now = new Date(Date.parse(backups[4]!.stoppedAt) + 60_000).toISOString();
  // the window starts between backup 2 ending and backup 3 ending: backup 2 starts it
  const windowStart = Date.parse(backups[2]!.stoppedAt) + (Date.parse(backups[3]!.stoppedAt) - Date.parse(backups[2]!.stoppedAt)) / 2;
  const window = `${Date.parse(now) - windowStart}ms`;
  const env = { PGARK_TEST_NOW: now };
  const before = await repo.keys();
  const retainedIds = (r: { retained: { id: string }[] }) => r.retained.map((b) => b.id);

  // ---- dry runs: the right decision, nothing deleted ----
  for (const [args, expected] of [
    [['--retain', '2'], ids.slice(3)],
    [['--retain-full', '1'], ids.slice(2)],
    [['--retain-full', '2'], ids],
    [['--retain-window', window], ids.slice(2)],
    [['--retain', '1', '--retain-full', '1'], ids.slice(2)],
  ] as const) {
    const { report } = await runExpire(repo, ['--dry-run', ...args], env);
    assert.deepEqual(retainedIds(report), expected, `retained by ${args.join(' ')}`);
    assert.deepEqual(report.expired.map((b) => b.id), ids.filter((id) => !expected.includes(id)));
    assert.equal(report.dryRun, true);
    assert.deepEqual(report.incomplete, { deleted: ['20000101T000000F'], kept: '20991231T235959F' });
    assert.ok(report.deleted.packs.count >= 1 && report.deleted.bytes > 0, 'the dry run counts what would go');
  }
  const text = await repo.pgark(['expire', '--dry-run', '--retain', '2'], { env });
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /dry run: nothing deleted; would free \d/);
  assert.match(text.stdout, new RegExp(`expire  ${ids[0]}`));
  assert.deepEqual(await repo.keys(), before, 'dry runs delete nothing');

  // ---- keep markers ----
  let r = await repo.pgark(['keep', ids[0]!]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(retainedIds((await runExpire(repo, ['--dry-run', '--retain', '2'], env)).report), [ids[0], ...ids.slice(3)]);
  r = await repo.pgark(['keep', '--off', ids[0]!]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(retainedIds((await runExpire(repo, ['--dry-run', '--retain', '2'], env)).report), ids.slice(3));
  r = await repo.pgark(['keep', '20010101T000000F']);
  assert.equal(r.code, 1);
  assert.match(oneErrorLine(r), /no backup 20010101T000000F/);
  r = await repo.pgark(['keep', ids[0]!]);
  assert.equal(r.code, 0, r.stderr);
  const noPolicy = await repo.pgark(['expire']);
  assert.equal(noPolicy.code, 2);
  assert.match(oneErrorLine(noPolicy), /no retention policy/);

  // ---- the real expire: window + the kept first backup ----
  const walBefore = before.map(parseWalKey).filter((w) => w !== undefined && /^[0-9A-F]{24}$/.test(w.name)).map((w) => w!.name);
  const { report } = await runExpire(repo, ['--retain-window', window], env);
  t.diagnostic(`expire: ${JSON.stringify(report.deleted)} in ${report.durationMs} ms`);
  assert.deepEqual(retainedIds(report), [ids[0], ...ids.slice(2)]);
  assert.deepEqual(report.retained[0]!.reasons, ['keep']);
  assert.deepEqual(report.expired.map((b) => b.id), [ids[1]]);
  const after = await repo.keys();
  const present = new Set(after);
  for (const id of ids) assert.equal(present.has(`backups/${id}/backup.json`), id !== ids[1], `backup ${id}`);
  assert.ok(!after.some((k) => k.startsWith(`backups/${ids[1]}/`) || k.startsWith('backups/20000101T000000F/')), 'expired and killed backups are gone entirely');
  assert.ok(present.has('backups/20991231T235959F/partial-000001.jsonl') && present.has(`packs/bb/${resumePack}`), 'the resumable backup and its pack stay');
  assert.ok(!present.has(`packs/aa/${orphanPack}`), 'the orphan pack is gone');
  const referenced = new Set<string>([resumePack]);
  for (const b of backups.filter((b) => b.id !== ids[1])) for (const pack of await referencedPacks(repo, b.manifestKey)) referenced.add(pack);
  const packsAfter = new Set(after.filter((k) => k.startsWith('packs/')).map(packIdOf));
  assert.deepEqual([...packsAfter].sort(), [...referenced].sort(), 'exactly the referenced packs remain');
  const packsBefore = before.filter((k) => k.startsWith('packs/')).length;
  assert.equal(report.deleted.packs.count, packsBefore - packsAfter.size);

  const walAfter = new Set(after.map(parseWalKey).filter((w) => w !== undefined).map((w) => w!.name));
  const from = segno(backups[2]!.startWal);
  for (const name of walBefore) {
    const n = segno(name);
    const inKept = n >= segno(backups[0]!.startWal) && n <= segno(backups[0]!.stopWal);
    assert.equal(walAfter.has(name), n >= from || inKept, `WAL ${name} (window from ${backups[2]!.startWal}, kept ${backups[0]!.startWal}..${backups[0]!.stopWal})`);
  }
  assert.ok(report.deleted.wal.count > 0);
  // Block maps (walsum/) go with their segments: exactly those of the remaining WAL remain.
  assert.ok(report.deleted.walBlockMaps.count > 0, 'block maps of deleted WAL deleted');
  const mapsAfter = after.filter((k) => k.startsWith('walsum/')).map((k) => /\/([0-9A-F]{24})-/.exec(k)![1]!);
  assert.ok(mapsAfter.length > 0, 'block maps of the remaining WAL kept');
  for (const name of mapsAfter) assert.ok(walAfter.has(name), `block map of ${name} kept with its segment`);

  const again = await runExpire(repo, ['--retain-window', window], env);
  assert.equal(again.report.deleted.bytes, 0, 'a second expire deletes nothing');
  assert.equal(again.report.deleted.packs.count + again.report.deleted.wal.count + again.report.deleted.backupObjects.count, 0);

  // ---- restores: inside the window, and outside ----
  const inside = pgTime(Date.parse(marks[3]!) + 1); // after mark 4, before mark 5
  const restored = await restoreAndStart(t, repo, ['--target-time', inside, '--target-action', 'promote']);
  assert.equal(await restored.cluster.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM marks"), '1,2,3,4');
  await restored.cluster.destroy();

  const gap = pgTime(Date.parse(marks[1]!) + 1); // between backups 1 and 2: only the kept backup 0 ended before
  const outside = await repo.pgark(['restore', '--target-dir', `${repo.dir}/never`, '--target-time', gap]);
  assert.equal(outside.code, 2, outside.stderr);
  assert.match(oneErrorLine(outside), new RegExp(`cannot recover to .*: backup ${ids[0]}, the newest that ended before it, reaches only .* expired`));
  const early = await repo.pgark(['restore', '--target-dir', `${repo.dir}/never`, '--target-time', pgTime(Date.parse(backups[0]!.startedAt) - 1000)]);
  assert.equal(early.code, 2, early.stderr);
  assert.match(oneErrorLine(early), /no backup ended before/);
});
