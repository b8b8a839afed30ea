// The `pgark` launcher (src/cli/launcher.sh) answers a wal-push call without starting Node
// when the background pusher has archived the file, and only then. Real segments of a real
// cluster in a pg_wal-like directory (archive_status/*.ready), a file:// repository; calls
// made like PostgreSQL's archiver (cwd = the data directory, %p = pg_wal/NAME).
// "Answered by the launcher" is observed by running it with no Node on PATH: such a call can
// only exit 0 if the launcher answered; when it must hand over to Node it fails with the
// launcher's "node is not on PATH" error instead.
//   - the first call (Node) starts the pusher, which archives the window ahead and leaves
//     quick markers; the calls for those files are then answered without Node, and the files
//     are really in the repository;
//   - not trusted (handed to Node): a marker from a call with another config path, a config
//     file or WAL file changed after the marker, a postmaster started after it (postmaster.pid),
//     no marker at all, or a marker with another build's key;
//   - with Node on PATH, each of those calls then succeeds (Node checks and archives).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { createCluster } from '../support/postgres.ts';
import {
  Cleanup, chownTestUser, createWalRepo, insertRows, mkdirTestUser, scratchDir, sha256, sleep, switchWal, waitArchived, walObjects,
} from '../support/wal.ts';

const NO_NODE = /^pgark: error: node is not on PATH .*; hint: /m;

test('the launcher answers wal-push calls of files the pusher archived, and hands every doubtful case to Node', { timeout: 600_000 }, async (t) => {
  const cleanup = new Cleanup(t);
  const originals = scratchDir('launcher-orig');
  cleanup.add('originals', () => fs.rmSync(originals, { recursive: true, force: true }));
  const cluster = await createCluster({
    walSegmentSizeMB: 1,
    settings: { archive_mode: 'on', archive_command: `test ! -f '${originals}/%f' && cp %p '${originals}/%f'`, autovacuum: 'off' },
  });
  cleanup.add('cluster', () => cluster.destroy());
  for (let i = 0; i < 9; i++) {
    await insertRows(cluster, i * 10_000 + 1, 2000);
    await switchWal(cluster);
  }
  await waitArchived(cluster);
  const names = fs.readdirSync(originals).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort().slice(-9);
  assert.equal(names.length, 9);

  const repo = await createWalRepo({ kind: 'file', name: 'launcher', settings: { 'archive-push-ahead': 16, 'process-max': 2 } });
  cleanup.add('repository', () => repo.cleanup());
  await repo.init(cluster);

  const dataDir = mkdirTestUser(path.join(repo.dir, 'data'));
  const walDir = mkdirTestUser(path.join(dataDir, 'pg_wal'));
  mkdirTestUser(path.join(walDir, 'archive_status'));
  for (const name of names) {
    fs.copyFileSync(path.join(originals, name), path.join(walDir, name));
    fs.writeFileSync(path.join(walDir, 'archive_status', `${name}.ready`), '');
  }
  chownTestUser(walDir, true);
  const markerOf = (name: string) => path.join(walDir, '.pgark', 'archived', name);
  const call = async (name: string, withoutNode: boolean, configPath = repo.configPath) => {
    const r = await repo.launch(['wal-push', `pg_wal/${name}`], { cwd: dataDir, withoutNode, configPath });
    if (r.code === 0) fs.renameSync(path.join(walDir, 'archive_status', `${name}.ready`), path.join(walDir, 'archive_status', `${name}.done`));
    return r;
  };
  const handedToNode = async (name: string, why: string, configPath?: string) => {
    const r = await call(name, true, configPath);
    assert.equal(r.code, 2, `${why}: handed to Node (exit 2), got ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, NO_NODE, why);
  };
  const touchLater = async (file: string) => {
    await sleep(1100); // past the marker's mtime even where test(1) compares whole seconds
    const now = new Date();
    fs.utimesSync(file, now, now);
  };

  const [n1, n2, n3, n4, n5, n6, n7, n8, n9] = names as [string, string, string, string, string, string, string, string, string];
  // No pusher, no marker: only Node can answer.
  await handedToNode(n1, 'the first call, nothing archived yet');
  let r = await call(n1, false);
  assert.equal(r.code, 0, r.stderr);
  // That call started the pusher, which archives the whole window and leaves quick markers.
  for (let i = 0; i < 600 && !names.slice(1).every((n) => fs.existsSync(markerOf(n))); i++) await sleep(100);
  for (const name of names.slice(1)) assert.ok(fs.existsSync(markerOf(name)), `quick marker of ${name}`);

  // Answered by the launcher alone, and really archived.
  for (const name of [n2, n3]) {
    r = await call(name, true);
    assert.equal(r.code, 0, `${name} answered without Node\n${r.stderr}`);
  }
  const objects = await walObjects(repo);
  for (const name of [n1, n2, n3]) assert.equal(objects.get(name)?.[0]?.sha256, sha256(fs.readFileSync(path.join(walDir, name))), `${name} is in the repository`);

  // Another config path (same content): another key, not trusted.
  const otherConfig = path.join(repo.dir, 'other.yaml');
  fs.copyFileSync(repo.configPath, otherConfig);
  chownTestUser(otherConfig);
  await handedToNode(n4, 'a marker written for another config path', otherConfig);
  r = await call(n4, false, otherConfig);
  assert.equal(r.code, 0, r.stderr);
  // The config file changed after the marker.
  await touchLater(repo.configPath);
  await handedToNode(n5, 'the config file is newer than the marker');
  const longAgo = new Date(Date.now() - 3600_000);
  fs.utimesSync(repo.configPath, longAgo, longAgo); // each case below on its own
  // The WAL file changed after the marker.
  await touchLater(path.join(walDir, n6));
  await handedToNode(n6, 'the WAL file is newer than the marker');
  // PostgreSQL restarted after the marker was written.
  fs.writeFileSync(path.join(dataDir, 'postmaster.pid'), '1\n');
  await touchLater(path.join(dataDir, 'postmaster.pid'));
  await handedToNode(n7, 'the postmaster started after the marker');
  fs.rmSync(path.join(dataDir, 'postmaster.pid'));
  // Another build's key.
  const marker8 = markerOf(n8);
  fs.writeFileSync(marker8, fs.readFileSync(marker8, 'utf8').replace(/^(pgark-quick-1 )\S+/, '$1another-build'));
  await handedToNode(n8, 'a marker of another build');
  // Node answers each of them (and archives whatever needs it).
  for (const name of [n5, n6, n7, n8, n9]) {
    r = await call(name, false);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
  }
  const after = await walObjects(repo);
  for (const name of names) assert.equal(after.get(name)?.[0]?.sha256, sha256(fs.readFileSync(path.join(walDir, name))), `${name} is in the repository`);
});
