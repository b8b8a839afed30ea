// Replaying the archive with restore_command = pgark wal-fetch: a cold copy of a primary's
// PGDATA (clean shutdown, pg_wal emptied: every WAL record comes from the archive) becomes
//   1. a standby (standby.signal) that replays everything the primary archived after the copy:
//      its table matches the primary's at the end;
//   2. a point-in-time restore to a named restore point that promotes (timeline 2) and archives
//      into the same repository (timeline history file, new segments);
//   3. a second restore with recovery_target_timeline = 'latest' that replays timeline 1, the
//      switch, and timeline 2 to its end, and matches the data written on timeline 2.
// While replaying, the prefetch spool never holds more than wal-prefetch segments.
//
// By default on PostgreSQL 13, from an encrypted S3 repository on RGW with the spool on another
// filesystem than PGDATA (/dev/shm: a prefetched file is copied, not renamed, into pg_wal).
// PGARK_TEST_MATRIX=1 adds PostgreSQL 15 and 18 with a file repository.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { skipServers } from '../support/objstores.ts';
import { createCluster, type Cluster } from '../support/postgres.ts';
import {
  Cleanup, MATRIX, copyDataDir, createWalRepo, parseJsonOutput, emptyPgWal, insertRows, mkdirTestUser, sleep, stopPrefetchers, switchWal, tableChecksum, waitArchived, waitFor,
  type RepoKind, type WalRepo,
} from '../support/wal.ts';

const PREFETCH = 4;

interface Variant { major: number; kind: RepoKind; encrypted: boolean; spoolOnShm: boolean }
const VARIANTS: Variant[] = [
  { major: 13, kind: 's3', encrypted: true, spoolOnShm: true },
  ...(MATRIX ? [
    { major: 15, kind: 'file', encrypted: false, spoolOnShm: false },
    { major: 18, kind: 'file', encrypted: false, spoolOnShm: false },
  ] satisfies Variant[] : []),
];

/** A new cluster from a copy of `baseCopy` with an empty pg_wal, the given signal file and settings. */
async function restoreCluster(cleanup: Cleanup, major: number, baseCopy: string, signal: 'standby' | 'recovery', settings: Record<string, string>): Promise<Cluster> {
  const c = await createCluster({ major, initdb: false });
  cleanup.add('restored cluster', () => c.destroy());
  copyDataDir(baseCopy, c.dataDir);
  emptyPgWal(c.dataDir);
  fs.writeFileSync(path.join(c.dataDir, `${signal}.signal`), '');
  mkdirTestUser(c.dataDir); // (re)owned by the cluster user
  fs.chmodSync(c.dataDir, 0o700);
  fs.chownSync(path.join(c.dataDir, `${signal}.signal`), fs.statSync(c.dataDir).uid, fs.statSync(c.dataDir).gid);
  c.setSettings(settings);
  return c;
}

/** Samples the spool's prefetched files while replay runs; returns the maximum seen. */
function sampleSpool(repo: WalRepo): { stop(): Promise<number> } {
  let max = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      max = Math.max(max, repo.fetchedFiles().length);
      await sleep(20);
    }
  })();
  return { async stop() { running = false; await loop; return max; } };
}

const timelineOf = async (c: Cluster): Promise<number> => parseInt((await c.sql('SELECT pg_walfile_name(pg_current_wal_lsn())')).slice(0, 8), 16);

for (const v of VARIANTS) {
  test(`PostgreSQL ${v.major}: standby and point-in-time restores replay the ${v.encrypted ? 'encrypted ' : ''}${v.kind} archive across a timeline switch`,
    { skip: v.kind === 's3' && skipServers(), timeout: 600_000 }, async (t) => {
      const cleanup = new Cleanup(t);
      let shmSpool: string | undefined;
      if (v.spoolOnShm) {
        shmSpool = fs.mkdtempSync('/dev/shm/pgark-spool-');
        mkdirTestUser(shmSpool);
        cleanup.add('spool on /dev/shm', () => fs.rmSync(shmSpool!, { recursive: true, force: true }));
      }
      const repo = await createWalRepo({
        kind: v.kind, encrypted: v.encrypted, name: `replay${v.major}`,
        settings: { 'wal-prefetch': PREFETCH, ...(shmSpool ? { 'spool-path': shmSpool } : {}) },
      });
      cleanup.add('repository', () => repo.cleanup());
      const fetchCommand = repo.command('wal-fetch %f %p');
      const pushCommand = repo.command('wal-push %p');

      // ---- primary, initialised repository, archiving ----
      const p = await createCluster({
        major: v.major, walSegmentSizeMB: 1,
        settings: { archive_mode: 'on', archive_command: '', wal_level: 'replica', autovacuum: 'off' },
      });
      cleanup.add('primary', () => p.destroy());
      await repo.init(p);
      p.setSettings({ archive_command: pushCommand });
      await p.reload();
      await insertRows(p, 1, 5000);
      await p.sql('CHECKPOINT');
      const t0 = Date.now();

      // ---- the base copy: a clean shutdown, then cp -a of PGDATA ----
      await p.stop('fast');
      const baseCopy = path.join(repo.dir, 'base');
      copyDataDir(p.dataDir, baseCopy);
      await p.start();

      // ---- WAL after the copy: batch A, a restore point, batch B ----
      await insertRows(p, 100_000, 15_000);
      await switchWal(p);
      const checksumA = await tableChecksum(p);
      await p.sql("SELECT pg_create_restore_point('before_b')");
      await insertRows(p, 200_000, 15_000);
      await p.sql('UPDATE t SET payload = upper(payload) WHERE id % 5 = 0');
      await p.sql('DELETE FROM t WHERE id % 7 = 0');
      const checksumB = await tableChecksum(p);
      const lastB = await switchWal(p);
      await waitArchived(p, lastB);
      await p.stop('fast');
      const archivedTl1 = repo.kind === 'file' ? (await repo.keys()).length - 1 : undefined;
      t.diagnostic(`primary: base copy + ${lastB} archived in ${Date.now() - t0} ms${archivedTl1 !== undefined ? ` (${archivedTl1} files)` : ''}`);

      // ---- 1. standby: replays everything ----
      const s = await restoreCluster(cleanup, v.major, baseCopy, 'standby', { restore_command: fetchCommand, archive_mode: 'off', hot_standby: 'on' });
      let spool = sampleSpool(repo);
      let t1 = Date.now();
      await s.start();
      await waitFor('the standby to replay the whole archive', async () => (await tableChecksum(s).catch(() => '')) === checksumB, 400_000,
        () => `standby at ${s.logTail(15)}`);
      assert.equal(await s.sql('SELECT pg_is_in_recovery()'), 't', 'still a standby');
      t.diagnostic(`standby replayed the archive in ${Date.now() - t1} ms (from start)`);
      await s.stop('fast');
      await stopPrefetchers(repo.configPath);
      let maxSpool = await spool.stop();
      assert.ok(maxSpool <= PREFETCH, `standby: at most wal-prefetch (${PREFETCH}) segments in the spool, saw ${maxSpool}`);
      const restoredLog = fs.readFileSync(s.logFile, 'utf8');
      const prefetched = (restoredLog.match(/restored [0-9A-F]{24} \(prefetched\)/g) ?? []).length;
      const direct = (restoredLog.match(/"msg":"restored [0-9A-F]{24}"/g) ?? []).length;
      t.diagnostic(`standby: ${prefetched} segments served from the prefetch spool, ${direct} downloaded by wal-fetch itself`);
      // how many depends on the machine's speed (a segment PostgreSQL asks for before the
      // prefetcher has it is downloaded by wal-fetch itself); wal-fetch.test.ts checks it exactly
      assert.ok(prefetched >= 1, 'segments are served from the prefetch spool');
      assert.doesNotMatch(restoredLog, /pgark wal-fetch: (error|internal error)/);

      // ---- 2. point-in-time restore to the restore point, promoted, archiving (timeline 2) ----
      const r2 = await restoreCluster(cleanup, v.major, baseCopy, 'recovery', {
        restore_command: fetchCommand, recovery_target_name: 'before_b', recovery_target_action: 'promote',
        archive_mode: 'on', archive_command: pushCommand,
      });
      spool = sampleSpool(repo);
      t1 = Date.now();
      await r2.start();
      await waitFor('the point-in-time restore to promote', async () => (await r2.sql('SELECT pg_is_in_recovery()').catch(() => 't')) === 'f', 400_000, () => r2.logTail(15));
      t.diagnostic(`point-in-time restore promoted after ${Date.now() - t1} ms`);
      assert.equal(await tableChecksum(r2), checksumA, 'the data as of the restore point');
      assert.equal(await timelineOf(r2), 2);
      await insertRows(r2, 300_000, 8000);
      await r2.sql('DELETE FROM t WHERE id % 3 = 0');
      const checksumC = await tableChecksum(r2);
      const lastC = await switchWal(r2);
      await waitArchived(r2, lastC);
      await r2.stop('fast');
      await stopPrefetchers(repo.configPath);
      maxSpool = Math.max(maxSpool, await spool.stop());

      const verify = await repo.pgark(['wal-verify', '--json']);
      assert.equal(verify.code, 0, `wal-verify after the timeline switch\n${verify.stdout}${verify.stderr}`);
      const report = parseJsonOutput<{
        ok: boolean; gaps: unknown[]; conflicts: unknown[];
        timelines: { timeline: number; runs: { first: string; last: string }[]; partials: string[]; history: boolean }[];
      }>(verify, 'wal-verify --json');
      assert.deepEqual(report.timelines.map((tl) => tl.timeline), [1, 2]);
      const [tl1, tl2] = report.timelines as [typeof report.timelines[0], typeof report.timelines[0]];
      assert.equal(tl2.history, true, '00000002.history archived');
      assert.ok(tl1.runs.at(-1)!.last >= lastB, 'timeline 1 ends where the primary stopped');
      assert.equal(tl1.runs.length, 1, 'timeline 1 has no gap');
      // (a shutdown with archiving on switches to a new segment and archives the last one)
      assert.ok(tl2.runs.at(-1)!.last >= lastC, `timeline 2 ends where the promoted server stopped (${tl2.runs.at(-1)!.last} >= ${lastC})`);
      assert.equal(tl2.runs.length, 1, 'timeline 2 has no gap');
      // No .partial here: PostgreSQL archives the old timeline's last segment as .partial only when
      // it did not come from the archive (wal-push-rules.test.ts pushes and fetches one).
      assert.ok(tl2.runs[0]!.first.slice(8) <= lastB.slice(8), 'timeline 2 begins inside timeline 1');
      // the history file fetches byte-identical to what the promoted server wrote
      const historyTarget = path.join(repo.dir, 'history-check');
      const h = await repo.pgark(['wal-fetch', '00000002.history', historyTarget]);
      assert.equal(h.code, 0, h.stderr);
      assert.ok(fs.readFileSync(historyTarget).equals(fs.readFileSync(path.join(r2.dataDir, 'pg_wal', '00000002.history'))));
      assert.match(fs.readFileSync(historyTarget, 'utf8'), /^1\t[0-9A-F]+\/[0-9A-F]+\tat restore point "before_b"/);

      // ---- 3. restore again, latest timeline: replays timeline 1, the switch, timeline 2 ----
      const r3 = await restoreCluster(cleanup, v.major, baseCopy, 'recovery', {
        restore_command: fetchCommand, recovery_target_timeline: 'latest', archive_mode: 'off',
      });
      spool = sampleSpool(repo);
      t1 = Date.now();
      await r3.start();
      await waitFor('the second restore to reach the end of timeline 2 and promote', async () => (await r3.sql('SELECT pg_is_in_recovery()').catch(() => 't')) === 'f', 400_000, () => r3.logTail(15));
      t.diagnostic(`restore across the timeline switch promoted after ${Date.now() - t1} ms`);
      assert.equal(await tableChecksum(r3), checksumC, 'the data written on timeline 2');
      assert.equal(await timelineOf(r3), 3);
      assert.match(fs.readFileSync(r3.logFile, 'utf8'), /restored 00000002\.history/);
      await r3.stop('fast');
      await stopPrefetchers(repo.configPath);
      maxSpool = Math.max(maxSpool, await spool.stop());
      assert.ok(maxSpool <= PREFETCH, `at most wal-prefetch (${PREFETCH}) segments in the spool, saw ${maxSpool}`);
      // leftovers of segments prefetched but never asked for are removed by the next prefetch;
      // what may remain is at most one prefetch window
      assert.ok(repo.fetchedFiles(true).length <= PREFETCH, `spool after the restores: ${repo.fetchedFiles(true).join(' ')}`);
    });
}
