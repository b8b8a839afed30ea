// pgark expire against running backups and continuous WAL archiving, and the lock's behaviour
// with crashed and stalled holders (real PostgreSQL; RGW and the file repository).
// - RGW, age-encrypted: while a load keeps PostgreSQL writing and switching WAL (wal-push archiving
//   continuously), each trial starts a backup and, after a random delay, `expire --retain 2`;
//   both must succeed (one waits for the other's lease). After each trial: every object every
//   listed backup references (packs, WAL start..stop) exists, no pack is unreferenced, no lease
//   is left, the archive has no gap after the oldest backup; at the end the latest state restores.
// - file: a crashed exclusive holder (its lease object left behind) blocks a backup with one line
//   naming it, then expires and stops blocking; a SIGKILLed backup's lease blocks expire likewise;
//   a backup stopped (SIGSTOP) past its lease while an expire runs does not record itself;
//   expire-after-backup leaves the newest backup, and is skipped (backup still exit 0) while locked.
// PGARK_TEST_FULL=1: more trials.
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { test } from 'node:test';
import { createPrimary, fingerprint, info, oneErrorLine, restoreAndStart, switchAndArchive, takeBackup } from '../support/backup.ts';
import { checkRepository, putRaw } from '../support/expire.ts';
import { findProcesses, FULL, parseJsonOutput, PGARK, sleep, waitFor } from '../support/wal.ts';

const TRIALS = FULL ? 8 : 3;
test('expire racing backups and continuous wal-push (RGW): no retained backup loses an object, no unreferenced pack survives', { timeout: 1_200_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { kind: 's3', encrypted: true, name: 'exrace', repoSettings: { 'lock-lease': '8s', 'lock-wait': '300s' } });
  await p.sql('CREATE TABLE load (id bigserial PRIMARY KEY, v text)');
  await p.sql("CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 30000) g");
  let loading = true;
  let switches = 0;
  const load = (async () => {
    while (loading) {
      await p.sql("INSERT INTO load (v) SELECT repeat(md5(random()::text), 20) FROM generate_series(1, 200)");
      await p.sql('UPDATE bulk SET v = md5(v) WHERE id % 97 = (random() * 96)::int');
      if (++switches % 3 === 0) await p.sql('SELECT pg_switch_wal()');
      await sleep(150);
    }
  })();
  try {
    await takeBackup(repo);
    for (let trial = 1; trial <= TRIALS; trial++) {
      const delay = Math.floor(Math.random() * 4000);
      const backup = takeBackup(repo);
      await sleep(delay);
      const expire = await repo.pgark(['expire', '--json', '--retain', '2'], { timeoutMs: 600_000 });
      const b = await backup;
      assert.equal(expire.code, 0, `trial ${trial}: expire failed:\n${expire.stderr}`);
      const report = parseJsonOutput<{ expired: unknown[]; deleted: { packs: { count: number }; wal: { count: number } } }>(expire, 'expire');
      const { backups } = await checkRepository(repo, `trial ${trial}`);
      assert.ok(backups >= 2 && backups <= 3, `trial ${trial}: ${backups} backups (retain 2, plus one taken after expire)`);
      t.diagnostic(`trial ${trial}: expire ${delay} ms after backup ${b.id} started (backup ${(b.ms / 1000).toFixed(1)} s); expired ${report.expired.length}, deleted ${report.deleted.packs.count} pack(s), ${report.deleted.wal.count} WAL; ${backups} backups remain; ${switches} load rounds`);
    }
  } finally {
    loading = false;
    await load;
  }
  await switchAndArchive(p);
  const expected = await fingerprint(p, ['load', 'bulk']);
  const restored = await restoreAndStart(t, repo, []);
  assert.equal(await fingerprint(restored.cluster, ['load', 'bulk']), expected, 'the latest state restores after the racing expiries');
  await restored.cluster.destroy();
});

test('lock: crashed holders stop blocking once their lease expires; a backup whose lease lapsed does not record itself', { timeout: 600_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { name: 'exlock', repoSettings: { 'lock-lease': '6s' } });
  await p.sql("CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g");
  const first = await takeBackup(repo);

  // ---- a crashed expire's lease (as a killed process leaves it) ----
  await putRaw(repo, 'locks/00000000deadbeef.exclusive.6.00000001.json', JSON.stringify({ host: 'elsewhere', pid: 4242, command: 'pgark expire', since: '2026-11-21T10:00:00.000Z' }));
  const blocked = await repo.pgark(['backup']);
  assert.equal(blocked.code, 2, blocked.stderr);
  assert.match(oneErrorLine(blocked), /the repository is locked by pgark expire on elsewhere \(pid 4242, since 2026-11-21T10:00:00.000Z\)/);
  await sleep(7000);
  const after = await takeBackup(repo);
  assert.equal(after.type, 'incremental');
  assert.deepEqual((await repo.keys()).filter((k) => k.startsWith('locks/')), [], 'the expired lease was cleaned up');

  // ---- a SIGKILLed backup ----
  const lockKeys = async () => (await repo.keys()).filter((k) => k.startsWith('locks/'));
  const killed = repo.pgark(['backup']);
  await waitFor('the backup to take its lease', async () => (await lockKeys()).length > 0, 60_000);
  const [pid] = findProcesses(PGARK, 'backup', repo.configPath);
  assert.ok(pid, 'the backup process');
  process.kill(pid, 'SIGKILL');
  await killed;
  const refused = await repo.pgark(['expire', '--retain', '1']);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(oneErrorLine(refused), new RegExp(`locked by pgark backup on ${hostname()} \\(pid ${pid}, since `));
  const waited = await repo.pgark(['expire', '--retain', '1', '--lock-wait', '60s', '--json']);
  assert.equal(waited.code, 0, waited.stderr);
  assert.deepEqual(parseJsonOutput<{ retained: { id: string }[] }>(waited, 'expire').retained.map((b) => b.id), [after.id]);
  assert.deepEqual(await lockKeys(), []);

  // ---- a backup stalled past its lease while expire takes the lock ----
  const stalled = repo.pgark(['backup', '--json'], { timeoutMs: 300_000 });
  await waitFor('the backup to take its lease', async () => (await lockKeys()).length > 0, 60_000);
  const [stalledPid] = findProcesses(PGARK, 'backup', repo.configPath);
  assert.ok(stalledPid);
  process.kill(stalledPid, 'SIGSTOP');
  let expired;
  try {
    expired = await repo.pgark(['expire', '--retain', '1', '--lock-wait', '60s']);
  } finally {
    process.kill(stalledPid, 'SIGCONT');
  }
  assert.equal(expired.code, 0, expired.stderr);
  const r = await stalled;
  assert.equal(r.code, 2, `the stalled backup must fail:\n${r.stderr}`);
  assert.match(oneErrorLine(r), /repository lock lapsed .*not recording backup/);
  const { backups } = await info(repo);
  assert.deepEqual(backups.map((b) => b.id), [after.id], 'the stalled backup was not recorded');
  t.diagnostic(`first ${first.id}, kept ${after.id}; the stalled backup said: ${oneErrorLine(r)}`);

  // ---- expire-after-backup: each backup leaves the newest one; skipped (not failed) while locked ----
  repo.updateSettings({ 'expire-after-backup': true, retain: 1 });
  const next = await takeBackup(repo);
  assert.deepEqual((await info(repo)).backups.map((b) => b.id), [next.id], 'expire ran after the backup');
  await putRaw(repo, 'locks/00000000cafef00d.shared.30.00000001.json', JSON.stringify({ host: 'elsewhere', pid: 7, command: 'pgark backup', since: '2026-11-21T10:00:00.000Z' }));
  const overlapped = await repo.pgark(['backup']);
  assert.equal(overlapped.code, 0, `a backup whose expire finds the lock taken still succeeds:\n${overlapped.stderr}`);
  assert.match(overlapped.stderr, /expire after backup \S+ skipped: the repository is locked by pgark backup on elsewhere/);
  assert.equal((await info(repo)).backups.length, 2, 'nothing expired while locked');
});
