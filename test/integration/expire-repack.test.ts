// pgark expire repacks packs that are mostly dead (file repository, and RGW encrypted), with real
// PostgreSQL: a full backup, an incremental after every row of the big table changed, a small
// incremental; `expire --retain 2` expires the full, whose pack is then mostly blobs of the
// old table version while the incrementals still reference its catalog pages.
// - a dry run reports what repacking would save and changes nothing;
// - an expire SIGKILLed while it repacks (throttled, killed once its first new object is stored)
//   leaves a repository that verify passes and from which a retained backup restores;
// - the next expire finishes: the two retained backups get a new manifest generation, the old
//   packs stay (grace period: a reader may still use the old generation) and are deleted by an
//   expire 25 h later (PGARK_TEST_NOW): pack storage shrinks by exactly the repacked packs, a
//   second repack does not happen, verify passes, both backups restore with their data, and so
//   does an incremental taken after the repack (its base manifest is a repacked one).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPrimary, fingerprint, info, restoreAndStart, switchAndArchive, takeBackup } from '../support/backup.ts';
import { NODE_BIN } from '../support/cli.ts';
import { checkRepository, packBytes, runExpire } from '../support/expire.ts';
import { skipServers } from '../support/objstores.ts';
import { spawnAsTestUser } from '../support/postgres.ts';
import { PGARK, pgarkEnv, waitFor, type RepoKind, type WalRepo } from '../support/wal.ts';

const PACK = /^packs\/[0-9a-f]{2}\/[0-9a-f]{24}(?:\.zst|\.lz4|\.gz)?(?:\.age)?$/;
const NEW_GENERATION = /^backups\/\d{8}T\d{6}[FI]\/(?:manifest|backup)\.g\d+\./;

/**
 * Starts a throttled `expire --retain 2` and SIGKILLs it once it stored a new pack or manifest
 * generation: as soon as it logs that the live blobs are copied (the new packs are stored, the
 * manifests not yet: the few ms until then are too short to catch by listing the repository), or
 * when a listing shows a new object. Says what it had written.
 */
async function killDuringRepack(repo: WalRepo): Promise<string> {
  const before = new Set(await repo.keys());
  const child = spawnAsTestUser(NODE_BIN, [PGARK, 'expire', '--config', repo.configPath, '--retain', '2', '--bandwidth-limit', '2MiB'], { env: pgarkEnv({ HOME: repo.dir }), cwd: repo.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => {
    stderr += b.toString();
    if (stderr.includes('repack: copied the live blobs')) child.kill('SIGKILL');
  });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const newObjects = async () => (await repo.keys()).filter((k) => !before.has(k) && (PACK.test(k) || NEW_GENERATION.test(k)));
  try {
    await waitFor('a new pack or manifest generation', async () => {
      if (child.signalCode === 'SIGKILL') return true;
      if (child.exitCode !== null) throw new Error(`expire ended (exit ${child.exitCode}) before it was killed:\n${stderr}`);
      return (await newObjects()).length > 0;
    }, 120_000);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  const written = await newObjects();
  assert.ok(written.length > 0, `the killed expire had stored a new pack or manifest:\n${stderr}`);
  return written.join(', ');
}

async function verifyPasses(repo: WalRepo, what: string): Promise<void> {
  const r = await repo.pgark(['verify', '--full']);
  assert.equal(r.code, 0, `${what}: verify failed:\n${r.stderr}\n${r.stdout}`);
}

for (const [kind, encrypted] of [['file', false], ['s3', true]] as [RepoKind, boolean][]) {
  test(`expire repacks mostly dead packs; a killed repack is finished by the next run (${kind}${encrypted ? ', encrypted' : ''})`, { timeout: 600_000, skip: kind === 's3' && skipServers() }, async (t) => {
    const { repo, primary: p } = await createPrimary(t, { kind, encrypted, name: `exrepack-${kind}`, repoSettings: { 'lock-lease': '6s', 'lock-wait': '60s' } });
    await p.sql("CREATE TABLE bulk AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 150000) g");
    const full = await takeBackup(repo, ['--full']);
    await p.sql('UPDATE bulk SET v = md5(v)'); // every page of the full's copy of bulk is now dead
    await switchAndArchive(p);
    const i1 = await takeBackup(repo);
    const print1 = await fingerprint(p, ['bulk']);
    await p.sql('UPDATE bulk SET v = md5(v) WHERE id <= 1000');
    await switchAndArchive(p);
    const i2 = await takeBackup(repo);
    const print2 = await fingerprint(p, ['bulk']);
    assert.deepEqual([full.type, i1.type, i2.type], ['full', 'incremental', 'incremental']);

    // ---- dry run: what repacking would save; nothing changes ----
    const keys = await repo.keys();
    const { report: dry } = await runExpire(repo, ['--dry-run', '--retain', '2']);
    assert.deepEqual(dry.expired.map((b) => b.id), [full.id]);
    assert.ok(dry.repack.packs >= 1, `a pack of the full is mostly dead: ${JSON.stringify(dry.repack)}`);
    assert.equal(dry.repack.backups, 2, 'both incrementals reference it');
    assert.ok(dry.repack.savedBytes >= dry.repack.bytes / 2 && dry.repack.liveBytes > 0, JSON.stringify(dry.repack));
    const text = await repo.pgark(['expire', '--dry-run', '--retain', '2']);
    assert.match(text.stdout, /repack: would copy .* of live blobs out of \d+ pack\(s\)/);
    assert.deepEqual(await repo.keys(), keys, 'a dry run changes nothing');

    // ---- killed while repacking ----
    const written = await killDuringRepack(repo);
    t.diagnostic(`expire killed after it wrote: ${written}`);
    await verifyPasses(repo, 'after the killed expire');
    const afterKill = await info(repo);
    assert.deepEqual(afterKill.backups.map((b) => b.id), [i1.id, i2.id]);
    // On a fast machine the kill can land after the last new summary: then the killed run did
    // all the work and the next one has nothing to repack (the crash path is not exercised).
    const finishedBeforeKill = afterKill.backups.every((b) => /manifest\.g\d+\.jsonl/.test(b.manifestKey));
    if (finishedBeforeKill) t.diagnostic('the killed expire had already written every new generation: the next run has nothing left to repack');
    if (kind === 'file') { // (verify above read every blob of both backups; one restore is enough)
      const r1 = await restoreAndStart(t, repo, ['--target-immediate', '--target-action', 'promote', '--set', i1.id]);
      assert.equal(await fingerprint(r1.cluster, ['bulk']), print1, 'after the kill, the first incremental restores with its data');
      await r1.cluster.destroy();
    }

    // ---- the next expire finishes the job; the old packs outlive the grace period ----
    const { report: done } = await runExpire(repo, ['--retain', '2']);
    assert.deepEqual(done.retained.map((b) => b.id), [i1.id, i2.id]);
    if (finishedBeforeKill) assert.equal(done.repack.packs, 0, JSON.stringify(done.repack));
    else assert.ok(done.repack.packs >= 1 && done.repack.backups >= 1 && done.repack.newPacks >= 1, JSON.stringify(done.repack));
    const repacked = await info(repo);
    for (const b of repacked.backups) assert.match(b.manifestKey, /manifest\.g\d+\.jsonl/, `${b.id} reads a new generation`);
    await checkRepository(repo, 'after the repack');
    const bytesBeforeGrace = await packBytes(repo);
    const { report: within } = await runExpire(repo, ['--retain', '2']);
    assert.equal(within.repack.packs, 0, 'nothing left to repack');
    assert.equal(within.deleted.packs.count, 0, 'within the grace period the old packs stay');

    const later = new Date(Date.now() + 25 * 3600 * 1000).toISOString();
    const { report: after } = await runExpire(repo, ['--retain', '2'], { PGARK_TEST_NOW: later });
    assert.equal(after.repack.packs, 0);
    assert.equal(after.deleted.packs.bytes, dry.repack.bytes, 'after the grace period exactly the repacked packs go');
    assert.ok(after.deleted.backupObjects.count >= 2, 'and the superseded manifests and summaries');
    const bytesAfter = await packBytes(repo);
    assert.equal(bytesBeforeGrace - bytesAfter, dry.repack.bytes);
    t.diagnostic(`repacked ${dry.repack.packs} pack(s) of ${dry.repack.bytes} bytes: ${dry.repack.liveBytes} live bytes copied, pack storage ${bytesBeforeGrace} -> ${bytesAfter} bytes`);
    await checkRepository(repo, 'after the grace period');
    assert.ok((await repo.keys()).every((k) => !/^backups\/[^/]+\/(?:backup\.json|manifest\.jsonl)/.test(k)), 'generation 1 is gone');
    await verifyPasses(repo, 'after the grace period');

    // the next incremental's base is a repacked manifest
    await p.sql('UPDATE bulk SET v = md5(v) WHERE id > 149000');
    await switchAndArchive(p);
    const i3 = await takeBackup(repo);
    const print3 = await fingerprint(p, ['bulk']);
    assert.equal(i3.base, i2.id);
    const restores: [typeof i1, string][] = kind === 'file' ? [[i1, print1], [i2, print2], [i3, print3]] : [[i1, print1], [i3, print3]];
    for (const [b, print] of restores) {
      const r = await restoreAndStart(t, repo, ['--target-immediate', '--target-action', 'promote', '--set', b.id]);
      assert.equal(await fingerprint(r.cluster, ['bulk']), print, `${b.id} restores with its data after the repack`);
      await r.cluster.destroy();
    }
  });
}
