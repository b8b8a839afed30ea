// The basic cycle on the oldest and newest PostgreSQL majors the tests have (13: the
// pg_start_backup/pg_stop_backup API; 18: data checksums on by default): full backup, changes,
// incremental backup, a point-in-time restore to a moment strictly between two commits, and a
// restore of the latest state compared with the primary. PostgreSQL 15 is covered by the other
// backup-restore tests. Runs with PGARK_TEST_MATRIX=1 (or PGARK_TEST_FULL=1).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkIndexes, createPrimary, fingerprint, restoreAndStart, secs, switchAndArchive, takeBackup } from '../support/backup.ts';
import { availableMajors } from '../support/postgres.ts';
import { FULL, MATRIX, sleep } from '../support/wal.ts';

const MAJORS = [13, 18];

for (const major of MAJORS) {
  const skip = !(MATRIX || FULL) ? 'PGARK_TEST_MATRIX=1 runs the other majors' : !availableMajors().includes(major) ? `PostgreSQL ${major} is not installed` : false;
  test(`PostgreSQL ${major}: full + incremental backup, point-in-time and latest restores`, { skip, timeout: 900_000 }, async (t) => {
    const { repo, primary: p } = await createPrimary(t, { major, encrypted: major === 18, name: `bkpg${major}`, settings: { track_commit_timestamp: 'on' } });
    await p.sql('CREATE TABLE t (id bigint PRIMARY KEY, v text)');
    await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 40000) g');
    await p.sql('CREATE TABLE commits (id int PRIMARY KEY)');
    const full = await takeBackup(repo);
    assert.equal(full.type, 'full');
    await p.sql("UPDATE t SET v = 'changed' WHERE id BETWEEN 1000 AND 1400");
    await p.sql('DELETE FROM t WHERE id > 39000');
    const incr = await takeBackup(repo);
    assert.equal(incr.type, 'incremental');
    assert.ok(incr.blocksReferenced > 0 && incr.storedBytes < full.storedBytes / 4, `incremental stored ${incr.storedBytes}, full ${full.storedBytes}`);
    t.diagnostic(`full ${full.id} ${secs(full.ms)} (${(full.storedBytes / 2 ** 20).toFixed(1)} MiB stored), incremental ${incr.id} ${secs(incr.ms)} (${(incr.storedBytes / 2 ** 10).toFixed(0)} KiB)`);

    for (let id = 1; id <= 8; id++) {
      await p.sql(`INSERT INTO commits VALUES (${id})`);
      await sleep(80);
    }
    await p.sql("UPDATE t SET v = 'late' WHERE id < 10");
    const expected = await fingerprint(p, ['t', 'commits']);
    await switchAndArchive(p);

    // a target strictly between commits 4 and 5
    const [a, b] = (await p.sql(`SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM commits WHERE id IN (4, 5) ORDER BY id`)).split('\n');
    const target = await p.sql(`SELECT to_char($1::timestamp + ($2::timestamp - $1::timestamp) / 2, 'YYYY-MM-DD HH24:MI:SS.US') || '+00'`, [a, b]);
    const pitr = await restoreAndStart(t, repo, ['--target-time', target, '--target-action', 'promote'], { major });
    assert.match(pitr.result.stderr, new RegExp(`restoring backup ${incr.id}`));
    assert.equal(await pitr.cluster.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM commits"), '1,2,3,4', `rows committed before ${target}`);
    assert.equal(await pitr.cluster.sql("SELECT count(*) FROM t WHERE v = 'changed'"), '401');
    t.diagnostic(`--target-time ${target}: restore ${secs(pitr.restoreMs)}, replay+promote ${secs(pitr.startMs)}`);
    await pitr.cluster.destroy();

    const latest = await restoreAndStart(t, repo, [], { major });
    assert.equal(await fingerprint(latest.cluster, ['t', 'commits']), expected);
    assert.equal(await checkIndexes(latest.cluster), 2);
    if (major >= 18) assert.equal(await latest.cluster.sql('SHOW data_checksums'), 'on', 'checksums on (initdb default from 18): the pages restored verify');
    t.diagnostic(`latest: restore ${secs(latest.restoreMs)}, replay+promote ${secs(latest.startMs)}`);
  });
}
