// Point-in-time restore against an oracle: a table `commits` gets one row per transaction, with
// short sleeps in between, and PostgreSQL records each commit's time (track_commit_timestamp,
// the very timestamp of the WAL commit record that recovery_target_time compares). Two backups
// (full, then incremental) split the commits. For random target times strictly between two
// commits (one while only the full backup had ended, so pgark must pick that one), pgark restore
// --target-time T --target-action promote gives a cluster holding exactly the rows committed
// before T. Then --target-lsn (the insert position after a commit), --target-name (a
// pg_create_restore_point) and --target-xid (a transaction's xid, inclusive) once each; and a
// target time before any backup ended is refused with a clear error.
// PGARK_TEST_FULL=1: more target times.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPrimary, inParallel, restoreAndStart, secs, switchAndArchive, takeBackup } from '../support/backup.ts';
import type { Cluster } from '../support/postgres.ts';
import { createWalRepo, FULL, sleep } from '../support/wal.ts';

const TIME_TARGETS = FULL ? 8 : 3;

interface Commit { id: number; xid: string; at: string }

async function commit(p: Cluster, id: number): Promise<string> {
  const xid = await p.sql(`INSERT INTO commits (id) VALUES (${id}) RETURNING xmin::text`);
  await sleep(60 + Math.floor(Math.random() * 60));
  return xid;
}

async function restoredIds(c: Cluster): Promise<string> {
  return c.sql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM commits");
}

const idsUpTo = (commits: readonly Commit[], last: number) => commits.filter((c) => c.id <= last).map((c) => c.id).join(',');

test('point-in-time restore: time, LSN, restore point and xid targets give exactly the rows committed before them', { timeout: 900_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { name: 'bkpitr', settings: { track_commit_timestamp: 'on' } });
  await p.sql('CREATE TABLE commits (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), filler text DEFAULT repeat(\'x\', 200))');
  await p.sql('CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g');
  let id = 0;
  for (let i = 0; i < 4; i++) await commit(p, ++id);
  const b1 = await takeBackup(repo);
  const b1Last = id;
  for (let i = 0; i < 8; i++) await commit(p, ++id);
  await p.sql('UPDATE bulk SET v = upper(v) WHERE id % 10 = 0'); // something for the incremental
  const b2 = await takeBackup(repo);
  assert.equal(b2.type, 'incremental');
  const b2First = id + 1;
  for (let i = 0; i < 8; i++) await commit(p, ++id);
  // the LSN target: right after a commit, before the next one
  const lsnAfter = id;
  const lsn = await p.sql('SELECT pg_current_wal_insert_lsn()::text');
  for (let i = 0; i < 3; i++) await commit(p, ++id);
  const nameAfter = id;
  await p.sql("SELECT pg_create_restore_point('pitr_point')");
  for (let i = 0; i < 3; i++) await commit(p, ++id);
  const xidRow = ++id;
  const xid = await commit(p, xidRow);
  for (let i = 0; i < 3; i++) await commit(p, ++id);
  await switchAndArchive(p);

  const commits = (await p.query<{ id: number; xid: string; at: string }>(
    `SELECT id, xmin::text AS xid, to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS at FROM commits ORDER BY id`));
  assert.equal(commits.length, id);
  for (let i = 1; i < commits.length; i++) assert.ok(commits[i]!.at > commits[i - 1]!.at, 'commit times increase');
  t.diagnostic(`${id} commits from ${commits[0]!.at} to ${commits.at(-1)!.at}; full ${b1.id} (${secs(b1.ms)}) after commit ${b1Last}, incremental ${b2.id} (${secs(b2.ms)}) before commit ${b2First}`);

  // ---- target times: strictly between two commits, after the full backup ended ----
  const b1Stop = new Date(b1.stoppedAt).toISOString().replace('T', ' ').replace('Z', '');
  const b2Stop = new Date(b2.stoppedAt).toISOString().replace('T', ' ').replace('Z', '');
  const gaps: number[] = []; // index i: between commits[i] and commits[i + 1]
  for (let i = 0; i + 1 < commits.length; i++) if (commits[i + 1]!.at > b1Stop) gaps.push(i);
  const beforeB2 = gaps.filter((i) => commits[i + 1]!.at < b2Stop); // wholly before the incremental ended
  assert.ok(beforeB2.length > 0);
  const chosen = [beforeB2[Math.floor(Math.random() * beforeB2.length)]!];
  while (chosen.length < TIME_TARGETS) chosen.push(gaps[Math.floor(Math.random() * gaps.length)]!);
  const jobs: (() => Promise<void>)[] = [];
  let kept: { cluster: Cluster; last: number } | undefined;
  for (const gap of chosen) {
    const a = commits[gap]!.at > b1Stop ? commits[gap]!.at : b1Stop;
    const b = commits[gap + 1]!.at;
    // a point strictly inside (a, b), in microseconds, computed by PostgreSQL
    const target = await p.sql(`SELECT to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US') || '+00' FROM (SELECT ($1::timestamp + ($2::timestamp - $1::timestamp) * (0.1 + 0.8 * random())) AS ts) x`, [a, b]);
    assert.ok(target.slice(0, 26) > a && target.slice(0, 26) < b, `${target} inside (${a}, ${b})`);
    const expectedBackup = target.slice(0, 23) >= b2Stop.slice(0, 23) ? b2.id : b1.id;
    jobs.push(async () => {
      const r = await restoreAndStart(t, repo, ['--target-time', target, '--target-action', 'promote']);
      assert.match(r.result.stderr, new RegExp(`restoring backup ${expectedBackup}`), `the backup that ended last before ${target}`);
      assert.equal(await restoredIds(r.cluster), idsUpTo(commits, commits[gap]!.id), `rows committed before ${target}`);
      assert.equal(await r.cluster.sql('SELECT pg_walfile_name(pg_current_wal_lsn())').then((w) => w.slice(0, 8)), '00000002', 'promoted: timeline 2');
      t.diagnostic(`--target-time ${target} (between commits ${gap + 1} and ${gap + 2}, backup ${expectedBackup}): restore ${secs(r.restoreMs)}, replay+promote ${secs(r.startMs)}`);
      if (!kept) kept = { cluster: r.cluster, last: commits[gap]!.id }; // goes on as a primary below
      else await r.cluster.destroy();
    });
  }

  // ---- LSN, restore point, xid ----
  // A restore point's place in the WAL is unknown to pgark: the oldest backup, which reaches it.
  for (const [args, last, what, expected] of [
    [['--target-lsn', lsn], lsnAfter, `--target-lsn ${lsn}`, b2.id],
    [['--target-name', 'pitr_point'], nameAfter, '--target-name pitr_point', b1.id],
    [['--target-xid', xid], xidRow, `--target-xid ${xid}`, b2.id],
  ] as const) {
    jobs.push(async () => {
      const r = await restoreAndStart(t, repo, [...args, '--target-action', 'promote']);
      assert.match(r.result.stderr, new RegExp(`restoring backup ${expected}`));
      assert.equal(await restoredIds(r.cluster), idsUpTo(commits, last), what);
      t.diagnostic(`${what}: rows 1..${last}; restore ${secs(r.restoreMs)}, replay+promote ${secs(r.startMs)}`);
      await r.cluster.destroy();
    });
  }
  // independent restores, side by side (they share the repository and its prefetch spool)
  await inParallel(jobs, 3);

  // ---- the point-in-time restored cluster goes on as a primary: backed up and restored ----
  // Its postgresql.auto.conf still says recovery_target_time = T (and promote) from the restore;
  // a latest restore of its own backup must replay everything, not stop at that old T again.
  {
    const r = kept!.cluster;
    const repo2 = await createWalRepo({ kind: 'file', name: 'bkpitr2', settings: { 'archive-timeout': '120s' } });
    t.after(() => repo2.cleanup());
    r.setSettings({ archive_mode: 'on', archive_command: '' });
    await r.restart();
    await repo2.init(r);
    repo2.updateSettings({ 'pg-host': r.socketDir, 'pg-port': r.port, 'pg-user': 'postgres' });
    r.setSettings({ archive_command: repo2.command('wal-push %p') });
    await r.reload();
    await r.sql('INSERT INTO commits (id) VALUES (1000)');
    const again = await takeBackup(repo2);
    await r.sql('INSERT INTO commits (id) VALUES (1001)');
    await sleep(50);
    await r.sql('INSERT INTO commits (id) VALUES (1002)');
    const expected = await restoredIds(r);
    assert.equal(expected, `${idsUpTo(commits, kept!.last)},1000,1001,1002`);
    await switchAndArchive(r);
    const r2 = await restoreAndStart(t, repo2, []);
    assert.equal(await restoredIds(r2.cluster), expected, 'the latest restore of the restored cluster\'s backup has every row');
    t.diagnostic(`the point-in-time restored cluster as a primary: backup ${again.id} ${secs(again.ms)}, latest restore ${secs(r2.restoreMs)}, replay+promote ${secs(r2.startMs)}`);
    await r2.cluster.destroy();
    await r.destroy();
  }

  // ---- a target before any backup ended: refused, nothing written ----
  const early = await repo.pgark(['restore', '--target-dir', `${repo.dir}/never`, '--target-time', commits[0]!.at + '+00']);
  assert.equal(early.code, 2, early.stderr);
  assert.match(early.stderr, /error: no backup ended before .*; the earliest restorable time is/);
  const { existsSync } = await import('node:fs');
  assert.equal(existsSync(`${repo.dir}/never`), false, 'the target directory was not created');
});
