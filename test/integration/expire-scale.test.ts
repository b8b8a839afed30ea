// What expire costs on a repository with 30 backups on RGW (the measurement README quotes,
// PGARK_TEST_FULL=1): 30 backups (a full one every 10th, incrementals between, each after some changes and WAL
// switches), then a dry run that keeps everything (the planning cost: LISTs, 30 summaries and
// 30 manifests read) and an expire to the newest third (planning + deleting). Both report their
// duration and S3 request count; the repository is checked whole afterwards.
import assert from 'node:assert/strict';
import { loadavg } from 'node:os';
import { test } from 'node:test';
import { createPrimary, switchAndArchive, takeBackup } from '../support/backup.ts';
import { checkRepository, runExpire } from '../support/expire.ts';
import { FULL } from '../support/wal.ts';

// 30 with PGARK_TEST_FULL=1 (the README's figures); 10 in the everyday suite.
const BACKUPS = FULL ? 30 : 10;
const RETAIN = Math.floor(BACKUPS / 3);

test(`expire on a repository with ${BACKUPS} backups (RGW): duration and requests`, { timeout: 1_800_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { kind: 's3', name: 'exscale' });
  await p.sql("CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g");
  const ids: string[] = [];
  const t0 = Date.now();
  for (let i = 0; i < BACKUPS; i++) {
    await p.sql(`UPDATE bulk SET v = md5(v || '${i}') WHERE id % 10 = ${i % 10}`);
    await switchAndArchive(p);
    ids.push((await takeBackup(repo, i % 10 === 0 ? ['--full'] : [])).id);
  }
  t.diagnostic(`${BACKUPS} backups taken in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  const keys = await repo.keys();
  const objects = { total: keys.length, packs: keys.filter((k) => k.startsWith('packs/')).length, wal: keys.filter((k) => k.startsWith('wal/')).length };

  const plan = await runExpire(repo, ['--dry-run', '--retain', String(BACKUPS)]);
  assert.equal(plan.report.expired.length, 0);
  assert.ok(plan.report.requests !== null && plan.report.requests > 0);
  const real = await runExpire(repo, ['--retain', String(RETAIN)]);
  assert.deepEqual(real.report.retained.map((b) => b.id), ids.slice(-RETAIN));
  assert.equal(real.report.expired.length, BACKUPS - RETAIN);
  const { backups } = await checkRepository(repo, 'after expire');
  assert.equal(backups, RETAIN);
  const load = loadavg().map((l) => l.toFixed(1)).join(' ');
  t.diagnostic(`repository: ${objects.total} objects (${objects.packs} packs, ${objects.wal} WAL files)`);
  t.diagnostic(`dry run, keeping all ${BACKUPS}: ${plan.report.durationMs} ms, ${plan.report.requests} requests`);
  t.diagnostic(`expire --retain ${RETAIN}: ${real.report.durationMs} ms, ${real.report.requests} requests; deleted ${real.report.deleted.backupObjects.count} backup objects, ${real.report.deleted.packs.count} packs, ${real.report.deleted.wal.count} WAL files (${(real.report.deleted.bytes / 1048576).toFixed(1)} MiB)`);
  t.diagnostic(`load average ${load}`);
});
