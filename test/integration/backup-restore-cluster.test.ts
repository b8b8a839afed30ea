// Restores that are more than "a copy of PGDATA", on an S3 repository (Ceph RGW; a file
// repository when the object stores are skipped):
//   - tablespaces: a table in a tablespace (directory owned by the cluster user) is backed up,
//     full then incremental; a restore where the original location is in use is refused with a
//     hint; --tablespace-map OID=/new/dir restores it elsewhere: the link points there, the data
//     is there, PostgreSQL reports the new location;
//   - delta: that restored cluster, after running on its own timeline, stopped, with a relation
//     file deleted, a block of another (in the tablespace) overwritten, stray files added (also in
//     the tablespace) and pg_wal removed, gets `pgark restore --delta` into the same directory:
//     it writes only what differs, removes the strays (not another major's directory at the top
//     of the tablespace location), and the cluster replays to the primary's data; --delta is
//     refused while the server runs;
//   - standby: --standby --primary-conninfo gives a hot standby that streams from the primary
//     and shows rows written after the backup;
//   - backup from that standby (pg_backup_start/stop on a server in recovery): without a WAL
//     switch on the primary it fails after archive-timeout with a hint saying so (the standby
//     cannot switch itself; pgark waits for the stop segment in the archive); with the primary
//     switching meanwhile it completes, is marked fromStandby, is incremental on the primary's
//     backups, and restores to the primary's data.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  checkIndexes, createPrimary, fingerprint, oneErrorLine, restoreAndStart, restoreNew, secs, startPromoted, switchAndArchive, takeBackup, type BackupJson,
} from '../support/backup.ts';
import { skipServers } from '../support/objstores.ts';
import { mkdirTestUser, sleep, waitFor } from '../support/wal.ts';

const TABLES = ['t', 'tt'];

test('tablespaces, delta restore, a streaming standby and a backup taken from it', { timeout: 900_000 }, async (t) => {
  const kind = skipServers() ? 'file' : 's3';
  const { repo, primary: p } = await createPrimary(t, { kind, name: 'bkcluster' });
  t.diagnostic(`repository: ${repo.url}`);
  const tsDir = mkdirTestUser(path.join(repo.dir, 'ts-original'));
  await p.sql(`CREATE TABLESPACE ts1 LOCATION '${tsDir}'`);
  const tsOid = await p.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'");
  await p.sql('CREATE TABLE t (id bigint PRIMARY KEY, v text)');
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 30000) g');
  await p.sql('CREATE TABLE tt (id bigint PRIMARY KEY USING INDEX TABLESPACE ts1, v text) TABLESPACE ts1');
  await p.sql('INSERT INTO tt SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 20000) g');

  const b1 = await takeBackup(repo);
  await p.sql("UPDATE tt SET v = 'changed' WHERE id BETWEEN 100 AND 400");
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(30001, 31000) g');
  const b2 = await takeBackup(repo);
  assert.equal(b2.type, 'incremental');
  assert.ok(b2.blocksReferenced > 0 && b2.storedBytes < b1.storedBytes / 4, `incremental stored ${b2.storedBytes}, full ${b1.storedBytes}`);
  for (const b of [b1, b2]) assert.deepEqual(b.tablespaces, [{ oid: tsOid, location: tsDir }]);
  t.diagnostic(`full ${b1.id} ${secs(b1.ms)} (${(b1.storedBytes / 2 ** 20).toFixed(1)} MiB stored), incremental ${b2.id} ${secs(b2.ms)} (${(b2.storedBytes / 2 ** 10).toFixed(0)} KiB)`);

  await p.sql("INSERT INTO tt VALUES (-1, 'after the backups')");
  let expected = await fingerprint(p, TABLES);
  await switchAndArchive(p);

  // ---- the original location is in use: refused ----
  {
    const dir = path.join(repo.dir, 'refused');
    const r = await repo.pgark(['restore', '--target-dir', dir]);
    assert.equal(r.code, 2);
    assert.match(oneErrorLine(r), new RegExp(`tablespace ${tsOid} location ${tsDir} is not empty`));
    assert.match(r.stderr, new RegExp(`hint: map it elsewhere: --tablespace-map ${tsOid}=`));
  }

  // ---- restore with --tablespace-map ----
  const newTs = path.join(repo.dir, 'ts-restored');
  const r1 = await restoreAndStart(t, repo, ['--tablespace-map', `${tsOid}=${newTs}`]);
  const c1 = r1.cluster;
  assert.equal(fs.readlinkSync(path.join(c1.dataDir, 'pg_tblspc', tsOid)), newTs, 'the link points at the new location');
  assert.equal(await c1.sql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"), newTs);
  assert.equal(await c1.sql("SELECT count(*) FROM tt WHERE v = 'changed'"), '301');
  assert.equal(await fingerprint(c1, TABLES), expected, 'the restore equals the primary');
  assert.ok(fs.readdirSync(newTs).some((n) => n.startsWith('PG_')), 'the tablespace files are in the new location');
  assert.equal(await checkIndexes(c1), 2);
  t.diagnostic(`restore with --tablespace-map: ${secs(r1.restoreMs)}, replay+promote ${secs(r1.startMs)}`);

  // ---- delta restore into that directory ----
  {
    await c1.sql("INSERT INTO t VALUES (-5, 'only on the restored copy'); UPDATE tt SET v = 'diverged' WHERE id < 50; CHECKPOINT");
    const deltaRunning = await repo.pgark(['restore', '--delta', '--target-dir', c1.dataDir]);
    assert.equal(deltaRunning.code, 2);
    assert.match(oneErrorLine(deltaRunning), /has a postmaster\.pid: stop PostgreSQL before a delta restore/);
    const tFile = await c1.sql("SELECT pg_relation_filepath('t')");
    const ttFile = await c1.sql("SELECT pg_relation_filepath('tt')");
    await c1.stop('fast');
    fs.rmSync(path.join(c1.dataDir, tFile));
    const ttPath = path.join(c1.dataDir, ttFile);
    const fd = fs.openSync(ttPath, 'r+');
    fs.writeSync(fd, Buffer.alloc(8192, 0x5a), 0, 8192, 8192 * 3);
    fs.closeSync(fd);
    const stray = path.join(c1.dataDir, path.dirname(tFile), '999999');
    fs.writeFileSync(stray, Buffer.alloc(8192));
    // a stray relation file inside the tablespace too (e.g. a table created after the backup on
    // the diverged copy: replay of the same relfilenode would find its stale blocks); and another
    // major's directory beside ours at the top of the location, which is not ours to remove
    const tsStray = path.join(c1.dataDir, path.dirname(ttFile), '888888');
    fs.writeFileSync(tsStray, Buffer.alloc(8192, 1));
    const otherMajor = path.join(newTs, 'PG_99_209912311');
    fs.mkdirSync(otherMajor);
    fs.writeFileSync(path.join(otherMajor, 'keep'), 'not this cluster\'s');
    fs.rmSync(path.join(c1.dataDir, 'pg_wal'), { recursive: true }); // even pg_wal gone: recreated from the manifest

    const t0 = Date.now();
    const d = await repo.pgark(['restore', '--delta', '--json', '--target-dir', c1.dataDir, '--tablespace-map', `${tsOid}=${newTs}`]);
    const deltaMs = Date.now() - t0;
    assert.equal(d.code, 0, d.stderr);
    const result = JSON.parse(d.stdout) as { backup: string; size: number; written: number };
    assert.equal(result.backup, b2.id);
    assert.ok(result.written < result.size / 3, `delta wrote ${result.written} of ${result.size} bytes`);
    assert.equal(fs.existsSync(stray), false, 'the stray file is removed');
    assert.equal(fs.existsSync(tsStray), false, 'the stray file in the tablespace is removed');
    assert.ok(fs.existsSync(path.join(otherMajor, 'keep')), 'another major\'s directory in the tablespace location is kept');
    assert.ok(fs.existsSync(path.join(c1.dataDir, tFile)), 'the deleted file is back');
    c1.setSettings({ archive_mode: 'off' }); // postgresql.conf came back from the backup
    await p.sql("INSERT INTO tt VALUES (-2, 'before the delta restore replays')");
    expected = await fingerprint(p, TABLES);
    await switchAndArchive(p);
    const startMs = await startPromoted(c1);
    assert.equal(await fingerprint(c1, TABLES), expected, 'after the delta restore: the primary\'s data');
    await checkIndexes(c1);
    t.diagnostic(`delta restore: ${secs(deltaMs)}, wrote ${(result.written / 2 ** 10).toFixed(0)} KiB of ${(result.size / 2 ** 20).toFixed(1)} MiB; replay+promote ${secs(startMs)}`);
    await c1.destroy();
  }

  // ---- a streaming standby ----
  const standbyTs = path.join(repo.dir, 'ts-standby');
  const s = (await restoreNew(t, repo, ['--standby', '--primary-conninfo', `host=127.0.0.1 port=${p.port} user=postgres application_name=pgark_standby`, '--tablespace-map', `${tsOid}=${standbyTs}`],
    { settings: { hot_standby: 'on' } })).cluster;
  assert.ok(fs.existsSync(path.join(s.dataDir, 'standby.signal')));
  await s.start();
  await waitFor('the standby to accept connections', async () => (await s.sql('SELECT pg_is_in_recovery()').catch(() => '')) === 't', 120_000, () => s.logTail(20));
  await p.sql("INSERT INTO tt SELECT -g, 'streamed' FROM generate_series(10, 19) g");
  await waitFor('the standby to replay rows written after the backup', async () => (await s.sql("SELECT count(*) FROM tt WHERE v = 'streamed'").catch(() => '')) === '10', 120_000, () => s.logTail(20));
  await waitFor('the standby to stream', async () => (await p.sql("SELECT state FROM pg_stat_replication WHERE application_name = 'pgark_standby'")) === 'streaming', 60_000, () => s.logTail(20));
  assert.equal(await s.sql('SELECT status FROM pg_stat_wal_receiver'), 'streaming');

  // ---- a backup taken from the standby ----
  // A standby's backup starts at its last restartpoint, which may still be the checkpoint b2
  // started from (then b1 is the newest backup that started earlier, and the base): a
  // checkpoint on the primary, replayed, then one on the standby moves it past b2's start.
  await p.sql('CHECKPOINT');
  const primaryLsn = await p.sql('SELECT pg_current_wal_lsn()');
  await waitFor('the standby to replay the checkpoint', async () => (await s.sql(`SELECT pg_last_wal_replay_lsn() >= '${primaryLsn}'::pg_lsn`)) === 't', 60_000);
  await s.sql('CHECKPOINT');
  // On a standby pg_backup_stop cannot switch WAL, and pgark waits until the stop segment is
  // archived, i.e. until the primary finishes that segment. Without a switch: a clear error
  // after archive-timeout, and no backup recorded.
  const stuck = await repo.pgark(['backup', '--pg-host', s.socketDir, '--pg-port', String(s.port), '--archive-timeout', '5s'], { timeoutMs: 300_000 });
  assert.equal(stuck.code, 2, stuck.stderr);
  assert.match(oneErrorLine(stuck), /error: the WAL this backup needs is not archived: [0-9A-F]{24} missing after 5s/);
  assert.match(stuck.stderr, /hint: backing up a standby: the last segment is archived only when the primary switches WAL; run SELECT pg_switch_wal\(\) on the primary/);
  // With the primary switching WAL while it waits, it completes.
  let switching = true;
  let switches = 0;
  const switcher = (async () => {
    while (switching) {
      await sleep(2000);
      if (!switching) break;
      await p.sql("INSERT INTO tt VALUES (-1000 - $1::int, 'switch')", [switches]);
      await p.sql('SELECT pg_switch_wal()');
      switches++;
    }
  })();
  let sb: BackupJson & { ms: number };
  try {
    sb = await takeBackup(repo, ['--pg-host', s.socketDir, '--pg-port', String(s.port)]);
  } finally {
    switching = false;
    await switcher;
  }
  t.diagnostic(`backup ${sb.id} from the standby: ${secs(sb.ms)}, ${switches} WAL switches on the primary meanwhile; start ${sb.startLsn} (b2 started at ${b2.startLsn}), base ${sb.base}; ${sb.blocksReferenced} blocks referenced, ${(sb.storedBytes / 2 ** 10).toFixed(0)} KiB stored`);
  assert.equal(sb.fromStandby, true);
  assert.equal(sb.type, 'incremental', 'incremental on the primary\'s backups (same system, same timeline)');
  assert.equal(sb.base, b2.id);
  await p.sql("INSERT INTO tt VALUES (-3, 'after the standby backup')");
  expected = await fingerprint(p, TABLES);
  await switchAndArchive(p);
  const r3 = await restoreAndStart(t, repo, ['--set', sb.id, '--tablespace-map', `${tsOid}=${path.join(repo.dir, 'ts-from-standby')}`]);
  assert.equal(await fingerprint(r3.cluster, TABLES), expected, 'the standby\'s backup restores to the primary\'s data');
  t.diagnostic(`restore of the standby's backup: ${secs(r3.restoreMs)}, replay+promote ${secs(r3.startMs)}`);
});
