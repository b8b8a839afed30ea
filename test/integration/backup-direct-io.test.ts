// Backup reads relation data files with O_DIRECT, one piece ahead (src/util/direct-io.ts
// DirectReads, src/repo/backup-files.ts PieceReader), into page-aligned buffers:
//   - on the test machine's filesystem it says nothing about the page cache, and a full backup
//     and an incremental taken with --backup-direct-io (O_DIRECT also for the files it compares
//     page by page, which by default go through the cache) restore to exactly the primary's rows;
//   - a table in a tablespace on ramfs, which refuses O_DIRECT (mounted when the tests run as
//     root): a default incremental (the new table's files read whole, so O_DIRECT is tried; the
//     others compared through the cache) says once that it reads through the page cache, and
//     restores exactly.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createPrimary, fingerprint, restoreAndStart, switchAndArchive, type BackupJson } from '../support/backup.ts';
import type { WalRepo } from '../support/wal.ts';
import { chownTestUser } from '../support/wal.ts';

const FALLBACK = /reading data files through the page cache/g;

async function backup(repo: WalRepo, args: string[] = []): Promise<{ json: BackupJson; stderr: string }> {
  const r = await repo.pgark(['backup', '--json', ...args], { timeoutMs: 300_000 });
  assert.equal(r.code, 0, r.stderr);
  return { json: JSON.parse(r.stdout.trim().split('\n').at(-1)!) as BackupJson, stderr: r.stderr };
}

test('backup reads data files past the page cache, and falls back where the filesystem refuses', { timeout: 600_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { kind: 'file', name: 'bkdirectio' });
  await p.sql('CREATE TABLE t (id bigint PRIMARY KEY, v text)');
  // ~25 MiB of heap: many 1 MiB pieces per file, read ahead
  await p.sql('INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 150000) g');

  const full = await backup(repo);
  assert.equal(full.json.type, 'full');
  assert.doesNotMatch(full.stderr, FALLBACK);
  assert.doesNotMatch(full.stderr, /checksum failure/);
  await p.sql("UPDATE t SET v = 'changed' WHERE id % 97 = 0");
  const incremental = await backup(repo, ['--backup-direct-io']);
  assert.equal(incremental.json.type, 'incremental');
  assert.doesNotMatch(incremental.stderr, FALLBACK);
  let expected = await fingerprint(p, ['t']);
  await switchAndArchive(p);
  {
    const { cluster } = await restoreAndStart(t, repo, []);
    assert.equal(await fingerprint(cluster, ['t']), expected, 'the restore equals the primary');
    await cluster.stop();
  }

  if (process.getuid?.() !== 0) {
    t.diagnostic('not root: the ramfs fallback case is skipped');
    return;
  }
  const tsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgark-ramfs-ts-'));
  const mount = spawnSync('mount', ['-t', 'ramfs', '-o', 'mode=0700', 'ramfs', tsDir], { encoding: 'utf8' });
  assert.equal(mount.status, 0, `mount -t ramfs: ${mount.stderr}`);
  t.after(async () => {
    // the primary has files open in the tablespace until it stops
    await p.stop('immediate').catch(() => {});
    spawnSync('umount', [tsDir]);
    fs.rmSync(tsDir, { recursive: true, force: true });
  });
  chownTestUser(tsDir);
  await p.sql(`CREATE TABLESPACE ramts LOCATION '${tsDir}'`);
  const tsOid = await p.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ramts'");
  await p.sql('CREATE TABLE tt (id bigint PRIMARY KEY, v text) TABLESPACE ramts');
  await p.sql('INSERT INTO tt SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 50000) g');
  await p.sql('CHECKPOINT');

  const refused = await backup(repo);
  assert.equal(refused.stderr.match(FALLBACK)?.length, 1, `one fallback notice:\n${refused.stderr}`);
  assert.match(refused.stderr, /refuses O_DIRECT/);
  expected = await fingerprint(p, ['t', 'tt']);
  await switchAndArchive(p);
  const newTs = path.join(repo.dir, 'ts-restored');
  const { cluster } = await restoreAndStart(t, repo, ['--tablespace-map', `${tsOid}=${newTs}`]);
  assert.equal(await fingerprint(cluster, ['t', 'tt']), expected, 'the restore equals the primary');
  await cluster.stop();
});
