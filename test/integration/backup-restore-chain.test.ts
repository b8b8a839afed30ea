// A chain of backups in an encrypted file repository (pgark keygen: the recipient in the
// repository, the identity only needed to restore): a full backup, then rounds of inserts,
// updates, deletes and DDL (VACUUM that truncates a table, TRUNCATE, CREATE/DROP TABLE, TOAST,
// VACUUM FULL, CREATE DATABASE), each followed by an incremental backup and a fingerprint of
// the data. Proves:
//   - every backup is incremental on the previous one and stores far less than the full, with
//     blocks referenced from earlier backups (`pgark info --json`);
//   - the last backup and one from the middle restore (--set ID --target-immediate
//     --target-action promote) into clusters that start and hold exactly the data of their
//     backup (fingerprints, amcheck on the indexes);
//   - meanwhile, a backup taken while another connection inserts and updates restores
//     consistently: the latest restore (replaying the archive to its end) equals the primary
//     after the load stops.
// PGARK_TEST_FULL=1: more data, every backup of the chain restored.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  checkIndexes, createPrimary, fingerprint, inParallel, info, restoreAndStart, secs, switchAndArchive, takeBackup, type BackupJson,
} from '../support/backup.ts';
import { FULL, sleep } from '../support/wal.ts';

const ROUNDS = 10;
const ROWS = FULL ? 300_000 : 40_000;
const TABLES = ['t', 'u', 'w'];

async function state(c: Parameters<typeof fingerprint>[0]): Promise<string> {
  const dbs = await c.sql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database");
  const other = dbs.includes('db2') ? await (async () => {
    const client = await c.connect('db2');
    try { return (await client.query<{ n: string }>('SELECT count(*)::text AS n FROM d')).rows[0]!.n; } finally { await client.end(); }
  })() : '-';
  return `${await fingerprint(c, TABLES)};dbs=${dbs};db2.d=${other}`;
}

test('backup chain in an encrypted file repository: full + incrementals restore exactly, also under concurrent load', { timeout: 900_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { kind: 'file', encrypted: true, name: 'bkchain' });
  await p.sql(`CREATE TABLE t (id bigint PRIMARY KEY, k int NOT NULL, v text NOT NULL)`);
  await p.sql(`INSERT INTO t SELECT g, g % 1000, md5(g::text) || md5((g * 3)::text) FROM generate_series(1, ${ROWS}) g`);
  await p.sql('CREATE INDEX t_k ON t (k)');
  await p.sql('CHECKPOINT');

  const backups: (BackupJson & { ms: number; state: string })[] = [];
  const full = await takeBackup(repo);
  backups.push({ ...full, state: await state(p) });
  assert.equal(full.type, 'full');
  assert.equal(full.blocksReferenced, 0);
  t.diagnostic(`full backup ${full.id}: ${(full.size / 2 ** 20).toFixed(1)} MiB, ${(full.storedBytes / 2 ** 20).toFixed(1)} MiB stored, ${secs(full.ms)}`);

  let nextId = ROWS + 1;
  for (let r = 1; r <= ROUNDS; r++) {
    // changes in a few places (a random 1% of the rows would touch every page of t)
    const hot = Math.floor(Math.random() * ROWS * 0.7);
    await p.sql(`UPDATE t SET v = md5(v), k = k + 1 WHERE id BETWEEN ${hot} AND ${hot + ROWS / 100}`);
    await p.sql(`UPDATE t SET v = 'round ${r}' WHERE id IN (${r * 7}, ${r * 977}, ${r * 3001})`);
    await p.sql(`INSERT INTO t SELECT g, g % 1000, md5(g::text) FROM generate_series(${nextId}, ${nextId + 499}) g`);
    nextId += 500;
    await p.sql(`DELETE FROM t WHERE id BETWEEN ${hot + ROWS / 50} AND ${hot + ROWS / 50 + 100}`);
    switch (r) {
      case 2: await p.sql('VACUUM t'); break; // visibility map and free space map forks change
      case 3: await p.sql(`CREATE TABLE u (id int PRIMARY KEY, s text); INSERT INTO u SELECT g, repeat('u', g % 50) FROM generate_series(1, 5000) g`); break;
      case 4: // the table's file shrinks: the incremental must not keep blocks beyond its end
        await p.sql(`DELETE FROM t WHERE id > ${Math.floor(ROWS * 0.8)}`);
        await p.sql('VACUUM t');
        break;
      case 5: await p.sql(`TRUNCATE u; INSERT INTO u SELECT g, 'after truncate' FROM generate_series(1, 3000) g`); break; // new relfilenode
      case 6: // TOAST: values too large for a page, poorly compressible
        await p.sql(`CREATE TABLE w (id int PRIMARY KEY, doc text); ALTER TABLE w ALTER doc SET STORAGE EXTERNAL`);
        await p.sql(`INSERT INTO w SELECT g, (SELECT string_agg(md5((g * 1000 + i)::text), '') FROM generate_series(1, 100) i) FROM generate_series(1, 300) g`);
        break;
      case 7: await p.sql('DROP TABLE u'); break;
      case 8: await p.sql('UPDATE w SET doc = upper(doc) WHERE id % 3 = 0'); await p.sql('VACUUM FULL w'); break; // rewrite: new files
      case 9: {
        await p.sql('CREATE DATABASE db2');
        const client = await p.connect('db2');
        try { await client.query('CREATE TABLE d AS SELECT g AS id FROM generate_series(1, 777) g'); } finally { await client.end(); }
        break;
      }
      case 10: await p.sql(`UPDATE t SET v = 'last round' WHERE id % 1000 = 0`); break;
    }
    const b = await takeBackup(repo);
    backups.push({ ...b, state: await state(p) });
    assert.equal(b.type, 'incremental', `round ${r}`);
    assert.equal(b.base, backups.at(-2)!.id, `round ${r}: based on the previous backup`);
    assert.ok(b.blocksReferenced > 0, `round ${r}: blocks referenced`);
    // The WAL block map (archived by wal-push, the newest segments from pg_wal) told it which blocks to read.
    assert.equal(b.walBlockMap, true, `round ${r}: incremental from the WAL block map`);
    assert.ok(b.readBytes! < b.size, `round ${r}: read ${b.readBytes} of ${b.size} bytes`);
    t.diagnostic(`round ${r}: incremental ${b.id} stored ${(b.storedBytes / 2 ** 10).toFixed(0)} KiB (${b.blocksStored} blocks stored, ${b.blocksReferenced} referenced), read ${(b.readBytes! / 2 ** 20).toFixed(1)} of ${(b.size / 2 ** 20).toFixed(1)} MiB, ${secs(b.ms)}`);
  }

  // ---- the repository's view: every backup listed, restorable, incrementals small ----
  const listed = await info(repo);
  assert.deepEqual(listed.backups.map((b) => b.id), backups.map((b) => b.id));
  for (const b of listed.backups) assert.equal(b.recoverability?.consistent, true, `${b.id} restorable`);
  for (const [round, b] of backups.entries()) {
    if (round === 0) continue;
    // rounds 2, 4, 6, 8 and 9 change or write much in bulk (VACUUM marking every page all-visible —
    // a flag the page gets without a new LSN when checksums are off, but the WAL names the page —,
    // 20% deleted and vacuumed, a TOAST table, VACUUM FULL, CREATE DATABASE)
    const limit = [2, 4, 6, 8, 9].includes(round) ? 0.5 : 0.1;
    assert.ok(b.storedBytes < full.storedBytes * limit, `round ${round}: ${b.id} stored ${b.storedBytes} bytes, the full ${full.storedBytes}`);
    assert.ok(b.blocksReferenced > b.blocksStored, `${b.id}: more blocks referenced (${b.blocksReferenced}) than stored (${b.blocksStored})`);
  }
  const incrementalTotal = backups.slice(1).reduce((s, b) => s + b.storedBytes, 0);
  t.diagnostic(`${ROUNDS} incrementals stored ${(incrementalTotal / 2 ** 20).toFixed(1)} MiB together, the full ${(full.storedBytes / 2 ** 20).toFixed(1)} MiB`);

  // ---- restores to the end of a backup (immediate): the last, one from the middle ----
  const jobs: (() => Promise<void>)[] = [];
  const toCheck = FULL ? backups.map((_, i) => i) : [backups.length - 1, 5];
  for (const i of toCheck) {
    const b = backups[i]!;
    // --set also for the last: the backup under load (below) may become the newest meanwhile
    const args = ['--target-immediate', '--target-action', 'promote', '--set', b.id];
    jobs.push(async () => {
      const r = await restoreAndStart(t, repo, args);
      assert.match(r.result.stderr, new RegExp(`restoring backup ${b.id}`));
      assert.equal(await state(r.cluster), b.state, `backup ${i} (${b.id}) restored with its data`);
      const indexes = await checkIndexes(r.cluster);
      t.diagnostic(`restore of backup ${i} ${b.id} (${b.type}): pgark restore ${secs(r.restoreMs)}, start to promoted ${secs(r.startMs)}, ${indexes} indexes checked`);
      await r.cluster.destroy();
    });
  }

  // ---- meanwhile, a backup under concurrent inserts and updates, and the latest restore ----
  jobs.unshift(async () => {
    let stop = false;
    let ops = 0;
    const client = await p.connect();
    const load = (async () => {
      let id = 10_000_000;
      while (!stop) {
        await client.query(`INSERT INTO t SELECT g, g % 1000, md5(g::text) FROM generate_series(${id}, ${id + 49}) g`);
        await client.query(`UPDATE t SET v = md5(v || 'load') WHERE id IN (SELECT (random() * ${ROWS * 0.8})::bigint FROM generate_series(1, 20))`);
        await client.query(`UPDATE w SET doc = md5(doc) || substr(doc, 33) WHERE id = ${1 + (ops % 300)}`);
        id += 50;
        ops++;
        await sleep(20); // bounded WAL: the archiver (a process per segment) must keep up
      }
    })();
    try {
      await sleep(300);
      const opsBefore = ops;
      const loaded = await takeBackup(repo);
      const during = ops - opsBefore;
      t.diagnostic(`backup ${loaded.id} under load: ${secs(loaded.ms)}, ${during} load iterations ran during it`);
      assert.ok(during > 0, 'the load ran during the backup');
      assert.equal(loaded.type, 'incremental');
      await sleep(300);
    } finally {
      stop = true;
      await load;
      await client.end();
    }
    const expected = await state(p);
    await switchAndArchive(p);
    const latest = await restoreAndStart(t, repo, []);
    assert.equal(await state(latest.cluster), expected, 'the latest restore equals the primary');
    await checkIndexes(latest.cluster);
    t.diagnostic(`latest restore after the loaded backup: pgark restore ${secs(latest.restoreMs)}, replay to the end and promote ${secs(latest.startMs)}`);
  });
  await inParallel(jobs, FULL ? 2 : 3);
});
