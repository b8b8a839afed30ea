// The `pgark` launcher (src/cli/launcher.sh) answers a wal-push call without starting Node
// when the background pusher has archived the file, and a wal-fetch call when the running
// prefetcher has the segment, and only then. Real segments of a real cluster, a file://
// repository; calls made like PostgreSQL's (cwd = the data directory, %p = pg_wal/NAME for
// archive_command, pg_wal/RECOVERYXLOG for restore_command; archive_status/*.ready for push).
// "Answered by the launcher" is observed by running it with no Node on PATH: such a call can
// only exit 0 if the launcher answered; when it must hand over to Node it fails with the
// launcher's "node is not on PATH" error instead.
//   - the first call (Node) starts the pusher, which archives the window ahead and leaves
//     quick markers; the calls for those files are then answered without Node, and the files
//     are really in the repository;
//   - not trusted (handed to Node): a marker from a call with another config path, a config
//     file or WAL file changed after the marker, another postmaster (postmaster.pid), no marker
//     at all, or a marker with another build's key;
//   - with Node on PATH, each of those calls then succeeds (Node checks and archives).
//   - wal-fetch: after a first call (Node) started the prefetcher, the next segments are put in
//     place by the launcher alone, byte-identical, and the prefetcher follows the position it
//     records; a history file, a segment not prefetched, another config path, a config file
//     changed after the prefetcher started, or a prefetcher that is gone: handed to Node.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { createCluster } from '../support/postgres.ts';
import {
  Cleanup, chownTestUser, createWalRepo, insertRows, mkdirTestUser, scratchDir, sha256, sleep, switchWal, waitArchived, walObjects,
} from '../support/wal.ts';

const NO_NODE = /^pgark: error: node is not on PATH .*; hint: /m;

/** A call run without Node on PATH that the launcher handed over: its "node is not on PATH" error. */
function assertHandedToNode(r: { code: number | null; stderr: string }, why: string): void {
  assert.equal(r.code, 2, `${why}: handed to Node (exit 2), got ${r.code}\n${r.stderr}`);
  assert.match(r.stderr, NO_NODE, why);
}

/** Runs `check` while dataDir/postmaster.pid names another postmaster than the one the markers were written under. */
async function underAnotherPostmaster(dataDir: string, check: () => Promise<void>): Promise<void> {
  fs.writeFileSync(path.join(dataDir, 'postmaster.pid'), `12345\n${dataDir}\n1763800000\n`);
  try {
    await check();
  } finally {
    fs.rmSync(path.join(dataDir, 'postmaster.pid'));
  }
}

/** Makes `file` newer than the markers written so far. */
async function touchLater(file: string): Promise<void> {
  await sleep(50);
  const now = new Date();
  fs.utimesSync(file, now, now);
}

async function archivedSegments(t: { diagnostic: (m: string) => void }, cleanup: Cleanup, count: number) {
  const originals = scratchDir('launcher-orig');
  cleanup.add('originals', () => fs.rmSync(originals, { recursive: true, force: true }));
  const cluster = await createCluster({
    walSegmentSizeMB: 1,
    settings: { archive_mode: 'on', archive_command: `test ! -f '${originals}/%f' && cp %p '${originals}/%f'`, autovacuum: 'off' },
  });
  cleanup.add('cluster', () => cluster.destroy());
  for (let i = 0; i < count; i++) {
    await insertRows(cluster, i * 10_000 + 1, 2000);
    await switchWal(cluster);
  }
  await waitArchived(cluster);
  const names = fs.readdirSync(originals).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort().slice(-count);
  assert.equal(names.length, count);
  t.diagnostic(`${count} segments of PostgreSQL ${cluster.major}`);
  return { cluster, originals, names };
}

test('the launcher answers wal-push calls of files the pusher archived, and hands every doubtful case to Node', { timeout: 600_000 }, async (t) => {
  const cleanup = new Cleanup(t);
  const { cluster, originals, names } = await archivedSegments(t, cleanup, 9);

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
  const handedToNode = async (name: string, why: string, configPath?: string) => assertHandedToNode(await call(name, true, configPath), why);

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
  // Another postmaster than the one the pusher was started under (PostgreSQL restarted).
  await underAnotherPostmaster(dataDir, () => handedToNode(n7, 'another postmaster'));
  // Another build's key.
  const marker8 = markerOf(n8);
  fs.writeFileSync(marker8, fs.readFileSync(marker8, 'utf8').replace(/^(pgark-quick-2 )\S+/, '$1another-build'));
  await handedToNode(n8, 'a marker of another build');
  // Node answers each of them (and archives whatever needs it).
  for (const name of [n5, n6, n7, n8, n9]) {
    r = await call(name, false);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
  }
  const after = await walObjects(repo);
  for (const name of names) assert.equal(after.get(name)?.[0]?.sha256, sha256(fs.readFileSync(path.join(walDir, name))), `${name} is in the repository`);
});

test('the launcher puts prefetched segments in place for wal-fetch, and hands every doubtful case to Node', { timeout: 600_000 }, async (t) => {
  const cleanup = new Cleanup(t);
  const { cluster, originals, names } = await archivedSegments(t, cleanup, 8);
  const repo = await createWalRepo({ kind: 'file', name: 'launcher-fetch', settings: { 'wal-prefetch': 4, 'process-max': 2 } });
  cleanup.add('repository', () => repo.cleanup());
  await repo.init(cluster);
  for (const name of names) {
    const r = await repo.pgark(['wal-push', path.join(originals, name)]);
    assert.equal(r.code, 0, r.stderr);
  }

  const dataDir = mkdirTestUser(path.join(repo.dir, 'standby'));
  const walDir = mkdirTestUser(path.join(dataDir, 'pg_wal'));
  const target = path.join(walDir, 'RECOVERYXLOG');
  const fetch = (name: string, withoutNode: boolean, configPath?: string) =>
    repo.launch(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { cwd: dataDir, withoutNode, configPath });
  const restored = (name: string, r: { code: number | null; stderr: string }, how: string) => {
    assert.equal(r.code, 0, `${name} ${how}\n${r.stderr}`);
    assert.ok(fs.readFileSync(target).equals(fs.readFileSync(path.join(originals, name))), `${name}: the archived bytes`);
    fs.rmSync(target);
  };
  const handedToNode = async (name: string, why: string, configPath?: string) => {
    assertHandedToNode(await fetch(name, true, configPath), why);
    assert.equal(fs.existsSync(target), false, `${why}: nothing written`);
  };
  const pointer = path.join(walDir, '.pgark', 'prefetch');
  const waitPrefetched = async (wanted: string[]) => {
    for (let i = 0; i < 600 && !(fs.existsSync(pointer) && wanted.every((n) => repo.fetchedFiles().includes(n))); i++) await sleep(100);
    assert.ok(fs.existsSync(pointer), 'the prefetcher announced itself');
    assert.deepEqual(wanted.filter((n) => !repo.fetchedFiles().includes(n)), [], 'prefetched');
  };

  const [n1, n2, n3, n4, n5, n6, n7, n8] = names as [string, string, string, string, string, string, string, string];
  await handedToNode(n1, 'no prefetcher yet');
  restored(n1, await fetch(n1, false), 'by Node, which starts the prefetcher');
  await waitPrefetched([n2, n3, n4, n5]);
  restored(n2, await fetch(n2, true), 'by the launcher alone');
  assert.equal(fs.readFileSync(path.join(repo.spoolRoot, 'fetch-position'), 'utf8').trim(), n2, 'the launcher recorded the position');
  await waitPrefetched([n3, n4, n5, n6]); // the prefetcher followed it
  restored(n3, await fetch(n3, true), 'by the launcher alone');

  await handedToNode('00000002.history', 'a history file');
  await handedToNode(n8, 'a segment not prefetched (outside the window)');
  const otherConfig = path.join(repo.dir, 'other.yaml');
  fs.copyFileSync(repo.configPath, otherConfig);
  chownTestUser(otherConfig);
  const longAgo = new Date(Date.now() - 3600_000);
  fs.utimesSync(otherConfig, longAgo, longAgo); // only the key differs
  await handedToNode(n4, 'a prefetcher started for another config path', otherConfig);
  // A name that is not a segment's is never a path into the spool (this one would be the position file).
  assert.ok(fs.existsSync(path.join(repo.spoolRoot, 'fetch-position')));
  await handedToNode('./././..//fetch-position', 'a name with a path in it');
  await touchLater(repo.configPath);
  await handedToNode(n4, 'the config file is newer than the prefetcher');
  await underAnotherPostmaster(dataDir, () => handedToNode(n4, 'another postmaster'));
  fs.utimesSync(repo.configPath, longAgo, longAgo);
  restored(n4, await fetch(n4, true), 'by the launcher alone once the config is older again');
  // A prefetcher that is gone (killed): its announcement is not trusted.
  const [key, spool] = fs.readFileSync(pointer, 'utf8').split('\n');
  fs.writeFileSync(pointer, `${key}\n${spool}\n999999999\n`);
  await handedToNode(n5, 'the prefetcher is not running');
  for (const name of [n5, n6, n7, n8]) restored(name, await fetch(name, false), 'by Node');
  const r = await fetch('00000002.history', false);
  assert.equal(r.code, 1, `a missing history file: exit 1 (not found)\n${r.stderr}`);
});
