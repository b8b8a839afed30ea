/**
 * With data checksums on, `pgark backup` verifies every relation page it reads (PostgreSQL's
 * checksum algorithm, reimplemented in src/postgres/page.ts): a healthy cluster reports no
 * bad page — which also proves the implementation matches PostgreSQL's on every page — and a
 * page corrupted on disk is reported by file and block, in the log and in backup.json.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { NODE_BIN, PGARK_BIN } from '../support/cli.ts';
import { createCluster, testUser } from '../support/postgres.ts';

const work = mkdtempSync('/tmp/pgark-checksums-');
after(() => rmSync(work, { recursive: true, force: true }));

test('backup verifies data checksums and reports a corrupt page by file and block', async () => {
  chmodSync(work, 0o755);
  mkdirSync(join(work, 'repo'));
  const config = join(work, 'pgark.yaml');
  writeFileSync(config, `repo: file://${work}/repo\nspool-path: ${work}/spool\nlog-format: json\n`);
  if (testUser()) execFileSync('chown', ['-R', testUser()!.name, work]);
  const cluster = await createCluster({ dataChecksums: true, settings: { archive_mode: 'on', archive_command: `${NODE_BIN} ${PGARK_BIN} wal-push %p --config ${config}` } });
  after(() => cluster.destroy());
  const pgark = (args: string[]) => cluster.run(NODE_BIN, [PGARK_BIN, ...args, '--config', config]);
  assert.equal((await pgark(['init'])).code, 0);
  await cluster.sql('CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 100000) g');
  await cluster.sql('CHECKPOINT');

  const healthy = await pgark(['backup', '--json']);
  assert.equal(healthy.code, 0, healthy.stderr);
  assert.deepEqual(JSON.parse(healthy.stdout).pageChecksumErrors, [], 'no page of a healthy cluster fails its checksum');

  const relation = (await cluster.sql("SELECT pg_relation_filepath('t')")).trim();
  const fd = openSync(join(cluster.dataDir, relation), 'r+');
  writeSync(fd, Buffer.from('CORRUPTED'), 0, 9, 3 * 8192 + 4000); // inside block 3's tuples
  closeSync(fd);
  const damaged = await pgark(['backup', '--json', '--full']);
  assert.equal(damaged.code, 0, 'the backup completes and stores the page as it is');
  assert.deepEqual(JSON.parse(damaged.stdout).pageChecksumErrors, [{ path: relation, block: 3 }]);
  assert.match(damaged.stderr, new RegExp(`page checksum failure: block 3 of ${relation}`));
  const summary = JSON.parse(readFileSync(join(work, 'repo', 'backups', JSON.parse(damaged.stdout).id, 'backup.json'), 'utf8'));
  assert.deepEqual(summary.pageChecksumErrors, [{ path: relation, block: 3 }]);
});
