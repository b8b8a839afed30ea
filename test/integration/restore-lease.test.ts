// pgark restore holds a shared lease on the repository for its whole duration (file repository
// and RGW), with real PostgreSQL: a full backup, an incremental after every row of the big table
// changed (the full's pack is then mostly dead: expire would repack it), a small incremental.
// - While a throttled restore of the first incremental runs (it reads the full's packs), `expire
//   --retain 2` refuses with one line naming the restore, and so does an expire 25 h later
//   (PGARK_TEST_NOW: past the repack grace, when the old packs would be deleted). Without the
//   lease the first would repack and the second delete the packs under the restore.
// - The restore succeeds and its cluster has the data; no lease is left; expire then runs.
// - With read-only credentials (file: the repository's directories not writable by pgark's user;
//   RGW: a bucket policy denying PutObject) restore warns once that it runs without the lock
//   and restores all the same.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import { DeleteBucketPolicyCommand, PutBucketPolicyCommand } from '@aws-sdk/client-s3';
import { createPrimary, fingerprint, oneErrorLine, restoreAndStart, startPromoted, switchAndArchive, takeBackup } from '../support/backup.ts';
import { runExpire } from '../support/expire.ts';
import { skipServers } from '../support/objstores.ts';
import { createCluster } from '../support/postgres.ts';
import { waitFor, type RepoKind, type WalRepo } from '../support/wal.ts';

const IMMEDIATE = ['--target-immediate', '--target-action', 'promote'];

/** Makes the repository read-only for pgark (as read-only credentials would); returns the undo. */
async function readOnly(repo: WalRepo): Promise<() => Promise<void>> {
  if (repo.repoDir) {
    execFileSync('chmod', ['-R', 'a-w', repo.repoDir]);
    return async () => { execFileSync('chmod', ['-R', 'u+w', repo.repoDir!]); };
  }
  const { client, name } = repo.bucket!;
  const policy = { Version: '2012-10-17', Statement: [{ Sid: 'readonly', Effect: 'Deny', Principal: '*', Action: ['s3:PutObject'], Resource: [`arn:aws:s3:::${name}/*`] }] };
  await client.send(new PutBucketPolicyCommand({ Bucket: name, Policy: JSON.stringify(policy) }));
  return async () => { await client.send(new DeleteBucketPolicyCommand({ Bucket: name })); };
}

for (const kind of ['file', 's3'] as RepoKind[]) {
  test(`restore holds a shared lease: expire neither repacks nor deletes under it; read-only credentials still restore (${kind})`, { timeout: 600_000, skip: kind === 's3' && skipServers() }, async (t) => {
    const { repo, primary: p } = await createPrimary(t, { kind, name: `rlease-${kind}`, repoSettings: { 'lock-lease': '6s' } });
    await p.sql("CREATE TABLE bulk AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 150000) g");
    await takeBackup(repo, ['--full']);
    await p.sql('UPDATE bulk SET v = md5(v)');
    await switchAndArchive(p);
    const i1 = await takeBackup(repo);
    const print1 = await fingerprint(p, ['bulk']);
    await p.sql('UPDATE bulk SET v = md5(v) WHERE id <= 1000');
    await switchAndArchive(p);
    await takeBackup(repo);
    const { report: dry } = await runExpire(repo, ['--dry-run', '--retain', '2']);
    assert.ok(dry.repack.packs >= 1, `expire would repack: ${JSON.stringify(dry.repack)}`);

    // ---- a slow restore of i1 (its blobs are in the packs expire would repack) ----
    const target = await createCluster({ initdb: false, start: false });
    t.after(() => target.destroy());
    const leases = async () => (await repo.keys()).filter((k) => k.startsWith('locks/'));
    const restoring = repo.pgark(['restore', '--target-dir', target.dataDir, '--set', i1.id, ...IMMEDIATE, '--bandwidth-limit', '1MiB'], { timeoutMs: 300_000 });
    let finished = false;
    void restoring.then(() => (finished = true));
    // Started writing files: it has chosen the backup and reads its packs.
    await waitFor('the restore to write files', () => (existsSync(target.dataDir) && readdirSync(target.dataDir).length > 0) || finished, 60_000);
    assert.ok(!finished, 'the restore is still running');

    const now = await repo.pgark(['expire', '--retain', '2']);
    assert.equal(now.code, 2, `expire must refuse while the restore runs:\n${now.stderr}`);
    assert.match(oneErrorLine(now), /the repository is locked by pgark restore on .* \(pid \d+, since /);
    const later = await repo.pgark(['expire', '--retain', '2'], { env: { PGARK_TEST_NOW: new Date(Date.now() + 25 * 3600_000).toISOString() } });
    assert.equal(later.code, 2, `expire past the grace period must refuse too:\n${later.stderr}`);
    assert.ok(!finished, 'the restore was still running while both expires were refused (slow it down further if this fails)');

    const restored = await restoring;
    assert.equal(restored.code, 0, `restore failed:\n${restored.stderr}`);
    target.setSettings({ archive_mode: 'off' });
    await startPromoted(target);
    assert.equal(await fingerprint(target, ['bulk']), print1, 'the restored cluster has the data of the first incremental');
    assert.deepEqual(await leases(), [], 'the restore released its lease');
    const { report: done } = await runExpire(repo, ['--retain', '2']);
    assert.ok(done.repack.packs >= 1, 'with the restore gone, expire repacks');

    // ---- read-only credentials ----
    const undo = await readOnly(repo);
    try {
      const r = await restoreAndStart(t, repo, ['--set', i1.id, ...IMMEDIATE]);
      const warnings = r.result.stderr.split('\n').filter((l) => l.includes('going on without the repository lock'));
      assert.equal(warnings.length, 1, `one warning about the missing lease:\n${r.result.stderr}`);
      assert.equal(await fingerprint(r.cluster, ['bulk']), print1, 'a read-only restore has the data');
      await r.cluster.destroy();
    } finally {
      await undo();
    }
    assert.deepEqual(await leases(), [], 'no lease was written');
  });
}
