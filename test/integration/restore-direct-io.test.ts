// Restore writes large aligned pieces of data files with O_DIRECT (src/util/direct-io.ts):
//   - into an ordinary filesystem (ext4/xfs of the test machine) most bytes go direct, and the
//     restored cluster starts and equals the primary;
//   - with restore-direct-io=false nothing goes direct, same result;
//   - into a filesystem that refuses O_DIRECT (ramfs, mounted when the tests run as root)
//     restore says once that it falls back, writes everything through the page cache, and the
//     cluster again equals the primary.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { test } from 'node:test';
import { createPrimary, fingerprint, restoreNew, startPromoted, switchAndArchive, takeBackup } from '../support/backup.ts';
import { createCluster } from '../support/postgres.ts';
import { chownTestUser } from '../support/wal.ts';

interface RestoreJson { written: number; writtenDirect: number }

function restoreJson(stdout: string): RestoreJson {
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as RestoreJson;
}

test('restore writes data files past the page cache, and falls back where the filesystem refuses', { timeout: 600_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { kind: 'file', name: 'directio' });
  await p.sql('CREATE TABLE t (id bigint PRIMARY KEY, v text)');
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 200000) g');
  await takeBackup(repo);
  await p.sql("INSERT INTO t VALUES (-1, 'after the backup')");
  const expected = await fingerprint(p, ['t']);
  await switchAndArchive(p);

  // An ordinary filesystem: the relation files (tens of MiB) go direct.
  const direct = await restoreNew(t, repo, ['--json']);
  const directJson = restoreJson(direct.result.stdout);
  assert.ok(directJson.writtenDirect > directJson.written / 2, `only ${directJson.writtenDirect} of ${directJson.written} bytes went direct`);
  assert.doesNotMatch(direct.result.stderr, /through the page cache/);
  await startPromoted(direct.cluster);
  assert.equal(await fingerprint(direct.cluster, ['t']), expected);
  await direct.cluster.stop();

  // Turned off.
  const buffered = await restoreNew(t, repo, ['--json', '--no-restore-direct-io']);
  assert.equal(restoreJson(buffered.result.stdout).writtenDirect, 0);
  await startPromoted(buffered.cluster);
  assert.equal(await fingerprint(buffered.cluster, ['t']), expected);
  await buffered.cluster.stop();

  // A filesystem that refuses O_DIRECT.
  if (process.getuid?.() !== 0) {
    t.diagnostic('not root: the ramfs fallback case is skipped');
    return;
  }
  const refusing = await createCluster({ initdb: false, start: false });
  fs.mkdirSync(refusing.dataDir, { mode: 0o700 });
  const mount = spawnSync('mount', ['-t', 'ramfs', '-o', 'mode=0700', 'ramfs', refusing.dataDir], { encoding: 'utf8' });
  t.after(async () => {
    await refusing.stop('immediate').catch(() => {});
    spawnSync('umount', [refusing.dataDir]);
    await refusing.destroy();
  });
  assert.equal(mount.status, 0, `mount -t ramfs: ${mount.stderr}`);
  chownTestUser(refusing.dataDir);
  const r = await repo.pgark(['restore', '--json', '--target-dir', refusing.dataDir], { timeoutMs: 300_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(restoreJson(r.stdout).writtenDirect, 0);
  assert.equal(r.stderr.match(/writing restored files through the page cache/g)?.length, 1, `one fallback notice:\n${r.stderr}`);
  assert.match(r.stderr, /refuses O_DIRECT/);
  refusing.setSettings({ archive_mode: 'off' });
  await startPromoted(refusing);
  assert.equal(await fingerprint(refusing, ['t']), expected);
});
