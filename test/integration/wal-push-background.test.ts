// wal-push's background pusher (wal-push-ahead) and fast path, with real segments of a real
// cluster in a pg_wal-like directory (archive_status/*.ready), calls made the way PostgreSQL's
// archiver makes them (oldest first, .ready → .done after exit 0), file:// repositories:
//   - errors of files the pusher archives ahead reach the call for that file with the message,
//     hint and exit status of a call that archives its file itself: different content under
//     an archived name (exit 2, "refusing to overwrite", nothing overwritten), a segment of
//     another cluster (REPO_MISMATCH); a retry tries again (and fails again);
//   - the files around them are archived, and every call for them exits 0;
//   - the fast path follows the configuration: after the config file points to another
//     repository, a call does not trust the old repository's markers (exit 0 only once the file
//     is in the new one).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { createCluster } from '../support/postgres.ts';
import {
  Cleanup, chownTestUser, createWalRepo, insertRows, mkdirTestUser, scratchDir, sha256, switchWal, waitArchived, walObjects,
} from '../support/wal.ts';

test('the background pusher reports conflicts and foreign segments through the call for the file; the fast path follows config changes', { timeout: 600_000 }, async (t) => {
  const cleanup = new Cleanup(t);
  const originals = scratchDir('bg-orig');
  cleanup.add('originals', () => fs.rmSync(originals, { recursive: true, force: true }));
  const a = await createCluster({
    walSegmentSizeMB: 1,
    settings: { archive_mode: 'on', archive_command: `test ! -f '${originals}/%f' && cp %p '${originals}/%f'`, autovacuum: 'off' },
  });
  cleanup.add('cluster A', () => a.destroy());
  const b = await createCluster({ walSegmentSizeMB: 1 });
  cleanup.add('cluster B', () => b.destroy());
  for (let i = 0; i < 8; i++) {
    await insertRows(a, i * 10_000 + 1, 2000);
    await switchWal(a);
  }
  await waitArchived(a);
  const names = fs.readdirSync(originals).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort().slice(-8);
  const content = new Map(names.map((n) => [n, fs.readFileSync(path.join(originals, n))]));
  await insertRows(b, 1, 2000);
  const foreignName = await switchWal(b);
  const foreign = fs.readFileSync(path.join(b.dataDir, 'pg_wal', foreignName));

  const repo = await createWalRepo({ kind: 'file', name: 'bg', settings: { 'archive-push-ahead': 8, 'process-max': 2 } });
  cleanup.add('repository', () => repo.cleanup());
  await repo.init(a);

  // ---- a pg_wal-like directory: 6 real segments, the third one conflicting, then a foreign one ----
  const [s1, s2, s3, s4, s5, s6] = names as [string, string, string, string, string, string];
  const changed = Buffer.from(content.get(s3)!);
  changed.writeUInt8(changed.readUInt8(8192 + 99) ^ 0xff, 8192 + 99); // header intact
  // s3 is archived first with other content (by hand: no archive_status, archived by the call itself)
  const other = mkdirTestUser(path.join(repo.dir, 'other'));
  fs.writeFileSync(path.join(other, s3), changed);
  chownTestUser(path.join(other, s3));
  let r = await repo.pgark(['wal-push', path.join(other, s3)]);
  assert.equal(r.code, 0, r.stderr);
  const before = (await walObjects(repo)).get(s3)!.map((o) => o.key);

  const dataDir = mkdirTestUser(path.join(repo.dir, 'data'));
  const walDir = mkdirTestUser(path.join(dataDir, 'pg_wal'));
  mkdirTestUser(path.join(walDir, 'archive_status'));
  // the foreign segment under the name that follows s6 (its header names another system)
  const s7 = names[6]!;
  const files = new Map<string, Buffer>([[s1, content.get(s1)!], [s2, content.get(s2)!], [s3, content.get(s3)!], [s4, content.get(s4)!], [s5, content.get(s5)!], [s6, content.get(s6)!]]);
  for (const [name, data] of files) fs.writeFileSync(path.join(walDir, name), data);
  const foreignAs = path.join(walDir, s7);
  fs.writeFileSync(foreignAs, foreign);
  for (const name of [...files.keys(), s7]) fs.writeFileSync(path.join(walDir, 'archive_status', `${name}.ready`), '');
  chownTestUser(walDir, true);

  const call = async (name: string) => {
    const out = await repo.pgark(['wal-push', `pg_wal/${name}`], { cwd: dataDir });
    if (out.code === 0) fs.renameSync(path.join(walDir, 'archive_status', `${name}.ready`), path.join(walDir, 'archive_status', `${name}.done`));
    return out;
  };
  const errorLine = (stderr: string) => stderr.split('\n').find((l) => l.startsWith('pgark wal-push: error: ')) ?? `(no error line in: ${stderr})`;

  for (const name of [s1, s2]) {
    r = await call(name);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
  }
  // the pusher archived ahead; s3 conflicts: reported by the call for s3, twice (PostgreSQL retries)
  for (let attempt = 1; attempt <= 2; attempt++) {
    r = await call(s3);
    assert.equal(r.code, 2, `${s3} attempt ${attempt}: exit 2\n${r.stderr}`);
    assert.equal(errorLine(r.stderr), `pgark wal-push: error: ${s3} is already archived with different content; refusing to overwrite it`);
    assert.match(r.stderr, /pgark wal-push: hint: .*split brain/);
  }
  assert.deepEqual((await walObjects(repo)).get(s3)!.map((o) => o.key), before, 'the stored object is unchanged');
  // PostgreSQL would be stuck on s3; the operator removes the wrong object... here: the file is skipped
  fs.renameSync(path.join(walDir, 'archive_status', `${s3}.ready`), path.join(walDir, 'archive_status', `${s3}.done`));
  for (const name of [s4, s5, s6]) {
    r = await call(name);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
  }
  r = await call(s7);
  assert.equal(r.code, 2, `the foreign segment: exit 2\n${r.stderr}`);
  assert.match(errorLine(r.stderr), new RegExp(`^pgark wal-push: error: ${s7} belongs to database system \\d+, but the repository belongs to \\d+$`));
  const objects = await walObjects(repo);
  for (const name of [s1, s2, s4, s5, s6]) assert.equal(objects.get(name)?.[0]?.sha256, sha256(files.get(name)!), `${name} archived`);
  assert.equal(objects.has(s7), false, 'nothing stored for the foreign segment');
  assert.deepEqual(repo.archivedMarkers(), [], 'no marker left');

  // ---- the configuration changes: the old repository's markers are not trusted ----
  fs.renameSync(path.join(walDir, 'archive_status', `${s7}.ready`), path.join(walDir, 'archive_status', `${s7}.done`));
  const s8 = names[7]!;
  fs.writeFileSync(path.join(walDir, s8), content.get(s8)!);
  chownTestUser(path.join(walDir, s8));
  // a marker for s8 in the current repository's spool, as if the pusher had archived it there
  const info = fs.statSync(path.join(walDir, s8));
  fs.writeFileSync(path.join(repo.spoolRoot, 'archived', s8), JSON.stringify({ size: info.size, mtimeMs: info.mtimeMs }));
  chownTestUser(path.join(repo.spoolRoot, 'archived', s8));
  fs.writeFileSync(path.join(walDir, 'archive_status', `${s8}.ready`), '');
  chownTestUser(path.join(walDir, 'archive_status', `${s8}.ready`));
  const newRepoDir = mkdirTestUser(path.join(repo.dir, 'repo2'));
  const oldUrl = repo.settings.repo as string;
  repo.updateSettings({ repo: `file://${newRepoDir}` });
  r = await repo.pgark(['init', '--pg-host', a.socketDir, '--pg-port', String(a.port), '--pg-user', 'postgres']);
  assert.equal(r.code, 0, r.stderr);
  r = await call(s8);
  assert.equal(r.code, 0, r.stderr);
  // exit 0 means stored in the configured repository: not answered from the old one's marker
  const newWalDir = path.join(newRepoDir, 'wal', s8.slice(0, 16));
  assert.ok(fs.existsSync(newWalDir) && fs.readdirSync(newWalDir).some((k) => k.startsWith(`${s8}-${sha256(content.get(s8)!)}`)),
    `${s8} is in the new repository when wal-push exits 0 (old repository ${oldUrl})\n${r.stderr}`);
  // (The old repository's marker itself may be gone by now: its pusher, still lingering, drops
  // the markers of files PostgreSQL has taken.)
});
