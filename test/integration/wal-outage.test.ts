// The object store goes away under a running cluster (a fault proxy in front of Ceph RGW,
// switched down):
//   1. archive_command fails (pg_stat_archiver.failed_count grows, WAL waits in pg_wal) and
//      PostgreSQL retries; once the store is back, everything is archived with no gap.
//   2. with archive-queue-max set small, wal-push gives up on the oldest WAL once more than that
//      waits: exit 0 (PostgreSQL recycles it), an error log line saying DROPPED, a line per file
//      in the spool's dropped.log, and wal-verify reports exactly those files as the gap.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { startFaultProxy } from '../support/fault-proxy.ts';
import { s3Env, skipServers } from '../support/objstores.ts';
import { createCluster } from '../support/postgres.ts';
import { Cleanup, archiverStats, createWalRepo, findProcesses, parseJsonOutput, insertRows, readyFiles, sleep, switchWal, waitArchived, waitFor } from '../support/wal.ts';

interface VerifyJson {
  ok: boolean; files: number;
  timelines: { timeline: number; runs: { first: string; last: string; count: number }[] }[];
  gaps: { timeline: number; first: string; last: string; count: number }[];
  conflicts: string[]; unreadable: unknown[];
}

test('store outage: archive_command fails and PostgreSQL retries until the store is back; archive-queue-max drops WAL loudly', { skip: skipServers(), timeout: 600_000 }, async (t) => {
  const cleanup = new Cleanup(t);
  const proxy = await startFaultProxy({ target: s3Env('rgw').endpoint });
  cleanup.add('fault proxy', () => proxy.close());
  const repo = await createWalRepo({
    kind: 's3', name: 'outage', endpoint: proxy.url,
    // fail fast while the store is down: 2 attempts, short timeouts
    settings: { 'retry-max': 2, 'connect-timeout': '1s', 'request-timeout': '5s' },
  });
  cleanup.add('repository', () => repo.cleanup());
  const c = await createCluster({
    walSegmentSizeMB: 1,
    settings: { archive_mode: 'on', archive_command: '', autovacuum: 'off' },
  });
  cleanup.add('cluster', () => c.destroy());
  await repo.init(c);
  const first = await c.sql('SELECT pg_walfile_name(pg_current_wal_lsn())');
  c.setSettings({ archive_command: repo.command('wal-push %p') });
  await c.reload();

  let next = 1;
  const segment = async (rows = 2000): Promise<string> => {
    await insertRows(c, next, rows);
    next += rows;
    return switchWal(c);
  };
  const verify = async () => {
    const r = await repo.pgark(['wal-verify', '--json']);
    return { code: r.code, json: parseJsonOutput<VerifyJson>(r, 'wal-verify --json'), stderr: r.stderr };
  };

  // ---- archiving works ----
  for (let i = 0; i < 3; i++) await segment();
  let last = await segment();
  await waitArchived(c, last);
  const before = await archiverStats(c);
  assert.equal(before.failed_count, 0);

  // ---- 1. outage: failures, WAL waits, retries ----
  await proxy.setDown(true);
  const t0 = Date.now();
  const during: string[] = [];
  for (let i = 0; i < 4; i++) during.push(await segment());
  const failing = await waitFor('archive_command failures', async () => {
    const s = await archiverStats(c);
    return s.failed_count >= 3 ? s : undefined;
  }, 60_000, () => c.logTail(20));
  assert.equal(failing.last_archived_wal, before.last_archived_wal, 'nothing archived while the store is down');
  assert.equal(failing.last_failed_wal, during[0], 'the oldest waiting segment is retried');
  assert.ok(readyFiles(c).length >= 4, `the WAL waits in pg_wal (${readyFiles(c).join(' ')})`);
  const log = fs.readFileSync(c.logFile, 'utf8');
  assert.match(log, /archive command failed with exit code/);
  assert.match(log, /pgark wal-push: error: cannot reach/, 'the reason is in the server log');
  await sleep(2500);
  const retried = await archiverStats(c);
  t.diagnostic(`store down ${Date.now() - t0} ms: ${retried.failed_count} failed archive_command runs`);

  await proxy.setDown(false);
  const up = Date.now();
  last = await segment(); // also wakes the archiver up
  await waitArchived(c, last);
  t.diagnostic(`store back: ${during.length + 1} waiting segments archived in ${Date.now() - up} ms`);
  const after = await archiverStats(c);
  assert.ok(after.failed_count >= retried.failed_count);
  assert.equal(after.archived_count, before.archived_count + during.length + 1);
  let v = await verify();
  assert.equal(v.code, 0, `wal-verify after the outage\n${JSON.stringify(v.json)}\n${v.stderr}`);
  assert.deepEqual(v.json.gaps, []);
  assert.deepEqual(v.json.timelines[0]!.runs, [{ first, last, count: after.archived_count }]);
  assert.equal(fs.existsSync(path.join(repo.spoolRoot, 'dropped.log')), false, 'nothing dropped without archive-queue-max');

  // ---- 2. archive-queue-max: 3 MiB = three 1 MiB segments ----
  repo.updateSettings({ 'archive-queue-max': '3MiB' });
  await proxy.setDown(true);
  const outage: string[] = [];
  for (let i = 0; i < 6; i++) outage.push(await segment(500));
  const expectedDropped = outage.slice(0, 3); // dropped while more than 3 MiB waits; the last 3 wait for the store
  const droppedLog = path.join(repo.spoolRoot, 'dropped.log');
  const readDropped = () => (fs.existsSync(droppedLog) ? fs.readFileSync(droppedLog, 'utf8').trim().split('\n') : []);
  await waitFor('WAL to be dropped down to less than archive-queue-max', () => readDropped().length >= 3 && readyFiles(c).length <= 3, 90_000,
    () => `dropped.log:\n${readDropped().join('\n')}\nready: ${readyFiles(c).join(' ')}\n${c.logTail(15)}`);
  await sleep(1500);
  const dropped = readDropped();
  assert.deepEqual(dropped.map((line) => line.split(' ')[1]), expectedDropped, 'dropped.log names the oldest segments, once each');
  for (const line of dropped) assert.match(line, /^\d{4}-\d\d-\d\dT\S+ [0-9A-F]{24} cannot reach /, 'with a time and the reason');
  assert.deepEqual(readyFiles(c).sort(), outage.slice(3), 'the newest segments (exactly archive-queue-max) still wait for the store');
  const serverLog = fs.readFileSync(c.logFile, 'utf8');
  const droppedLines = serverLog.split('\n').filter((l) => l.includes('DROPPED'));
  assert.equal(droppedLines.length, 3, `one DROPPED line per dropped file in the server log:\n${droppedLines.join('\n')}`);
  for (const line of droppedLines) {
    const record = JSON.parse(line) as { level: string; msg: string; consequence: string };
    assert.equal(record.level, 'error');
    assert.match(record.msg, /^DROPPED WAL file [0-9A-F]{24} without archiving it: [4-9]\.00 MiB of WAL wait to be archived, more than archive-queue-max \(3\.00 MiB\)$/);
    assert.match(record.consequence, /point-in-time recovery/);
  }
  const droppedStats = await archiverStats(c);
  assert.equal(droppedStats.last_archived_wal, expectedDropped.at(-1), 'PostgreSQL counts a dropped file as archived (exit 0)');

  // A call that began while the store was down may still find more than archive-queue-max
  // waiting (the next segment is on its way) and drop its file, as it should (dropped.log says
  // so). For an exact gap, no drop may happen from here on: drops off, and every call of the
  // outage ended, before the store comes back.
  repo.updateSettings({ 'archive-queue-max': undefined });
  await waitFor('the wal-push calls made during the outage to end', () => findProcesses('wal-push\0', repo.configPath).length === 0, 60_000);
  await proxy.setDown(false);
  last = await segment();
  await waitArchived(c, last);
  assert.deepEqual(readDropped().map((line) => line.split(' ')[1]), expectedDropped, 'nothing dropped once archive-queue-max is off');
  v = await verify();
  assert.equal(v.code, 2, `wal-verify exits 2 on a gap\n${v.stderr}`);
  assert.equal(v.json.ok, false);
  assert.deepEqual(v.json.gaps, [{ timeline: 1, first: expectedDropped[0], last: expectedDropped.at(-1), count: 3 }], 'the gap is exactly the dropped files');
  assert.deepEqual(v.json.unreadable, []);
  const human = await repo.pgark(['wal-verify']);
  assert.equal(human.code, 2);
  assert.match(human.stdout, new RegExp(`GAP ${expectedDropped[0]} \\.\\. ${expectedDropped.at(-1)}  \\(3 missing\\)`));
  const info = await repo.pgark(['info']);
  assert.equal(info.code, 0, info.stderr);
  assert.match(info.stdout, new RegExp(`gap: ${expectedDropped[0]}\\.\\.${expectedDropped.at(-1)} \\(3 missing\\)`));
});
