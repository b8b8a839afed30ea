// pgark restore-test on real clusters and a file repository:
//   - run as root (PostgreSQL then runs as restore-test-user = pgark-test): a healthy repository
//     passes — every table of two databases counted, amcheck on the B-tree indexes, a SQL file —
//     with download and replay times reported; a target time restores the state at that time;
//   - run as the unprivileged user itself: a failing SQL file fails the test;
//   - a deleted pack and a missing WAL segment fail it with one clear error line;
//   - SIGINT during replay stops it;
// and after every run no process, socket, port or directory is left behind.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { createPrimary, oneErrorLine, switchAndArchive, takeBackup } from '../support/backup.ts';
import { NODE_BIN, pgark as pgarkAsRoot } from '../support/cli.ts';
import { pgInstall, DEFAULT_MAJOR } from '../support/postgres.ts';
import { findProcesses, parseJsonOutput, pgarkEnv, PGARK, scratchDir, sleep, waitFor } from '../support/wal.ts';

interface Report {
  ok: boolean;
  backup: string;
  osUser: string;
  port: number | null;
  scratchDir: string;
  timings: { downloadMs: number; restoreMs: number; walMs: number; replayMs: number; consistentMs: number | null; checksMs: number; totalMs: number };
  wal: { files: number; bytes: number };
  checks: { connected: boolean; databases: number; tables: number; rows: number; amcheck: { available: boolean; indexes: number }; sql: { file: string; ok: boolean } | null };
  error: string | null;
}

/** Nothing left: no scratch directory, no process running in it, the port free again. */
async function assertNothingLeft(parent: string, report: Pick<Report, 'scratchDir' | 'port'> | undefined, what: string): Promise<void> {
  assert.deepEqual(fs.readdirSync(parent), [], `${what}: the scratch parent is empty`);
  assert.deepEqual(findProcesses('pgark-restore-test-'), [], `${what}: no process of the test is left`);
  if (report?.port) {
    await new Promise<void>((resolve, reject) => {
      const server = net.createServer();
      server.on('error', reject);
      server.listen(report.port!, '127.0.0.1', () => server.close(() => resolve()));
    });
  }
}

test('restore-test: passes on a healthy repository, fails on a broken one, leaves nothing behind', { timeout: 900_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { name: 'rtest' });
  const parent = scratchDir('rtest-parent');
  t.after(() => fs.rmSync(parent, { recursive: true, force: true }));
  repo.updateSettings({ 'pg-bin-dir': pgInstall(DEFAULT_MAJOR).binDir, 'restore-test-path': parent, 'restore-test-user': 'pgark-test' });

  await p.sql('CREATE TABLE t (id bigint PRIMARY KEY, v text)');
  await p.sql('CREATE INDEX t_v ON t (v)');
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g');
  await p.sql('CREATE DATABASE app');
  const app = await p.connect('app');
  try {
    await app.query('CREATE TABLE orders (id int PRIMARY KEY, total numeric)');
    await app.query('INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 1234) g');
  } finally {
    await app.end();
  }
  const backup = await takeBackup(repo);
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(50001, 50100) g');
  await switchAndArchive(p);
  const midpoint = new Date().toISOString(); // ends in Z, which restore turns into +00:00 for PostgreSQL
  await sleep(1100);
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(50101, 50200) g');
  await switchAndArchive(p);

  const sqlFile = path.join(repo.dir, 'check.sql');
  fs.writeFileSync(sqlFile, `DO $$ BEGIN IF (SELECT count(*) FROM t) <> 50200 THEN RAISE EXCEPTION 't has % rows', (SELECT count(*) FROM t); END IF; END $$;\nSELECT 1;\n`);
  const asRoot = (args: string[]) => pgarkAsRoot(['restore-test', '--config', repo.configPath, ...args], { env: pgarkEnv({ HOME: repo.dir }), timeoutMs: 300_000 });

  // ---- healthy, as root: PostgreSQL runs as pgark-test ----
  {
    const r = await asRoot(['--json', '--sql', sqlFile]);
    const report = parseJsonOutput<Report>({ ...r, stdout: r.stdout.toString() }, 'restore-test');
    assert.equal(r.code, 0, `${report.error}\n${r.stderr.slice(-3000)}`);
    assert.equal(report.ok, true);
    assert.equal(report.backup, backup.id);
    assert.equal(report.osUser, 'pgark-test');
    assert.equal(report.checks.connected, true);
    assert.ok(report.checks.databases >= 3, 'postgres, template1, app');
    assert.ok(report.checks.rows >= 50200 + 1234, `rows counted: ${report.checks.rows}`);
    assert.equal(report.checks.amcheck.available, true);
    assert.ok(report.checks.amcheck.indexes >= 3, 't_pkey, t_v, orders_pkey (and the catalogs)');
    assert.deepEqual(report.checks.sql, { file: sqlFile, ok: true });
    assert.ok(report.wal.files >= 3 && report.timings.downloadMs > 0 && report.timings.replayMs > 0);
    t.diagnostic(`healthy: download ${report.timings.downloadMs} ms (files ${report.timings.restoreMs}, WAL ${report.timings.walMs}: ${report.wal.files} files), replay ${report.timings.replayMs} ms, checks ${report.timings.checksMs} ms: ${report.checks.tables} tables, ${report.checks.rows} rows, ${report.checks.amcheck.indexes} indexes`);
    await assertNothingLeft(parent, report, 'healthy');
  }

  // ---- a target time: the SQL file expects the later rows, so it must fail there ----
  {
    fs.writeFileSync(path.join(repo.dir, 'mid.sql'), `DO $$ BEGIN IF (SELECT count(*) FROM t) <> 50100 THEN RAISE EXCEPTION 't has % rows', (SELECT count(*) FROM t); END IF; END $$;`);
    const r = await asRoot(['--target-time', midpoint, '--sql', path.join(repo.dir, 'mid.sql')]);
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stdout.toString(), /^ok \(/m);
    await assertNothingLeft(parent, undefined, 'target time');
  }

  // ---- as the unprivileged user itself: a failing SQL file ----
  {
    const bad = path.join(repo.dir, 'bad.sql');
    fs.writeFileSync(bad, 'SELECT 1;\nSELECT * FROM no_such_table;\n');
    fs.chmodSync(bad, 0o644);
    const r = await repo.pgark(['restore-test', '--sql', bad], { timeoutMs: 300_000 });
    assert.equal(r.code, 2, r.stderr.slice(-3000));
    assert.match(oneErrorLine(r), /error: the SQL file \S+bad\.sql failed in database postgres: relation "no_such_table" does not exist/);
    assert.match(r.stdout, /FAILED: /);
    await assertNothingLeft(parent, undefined, 'failing SQL');
  }

  // ---- a deleted pack ----
  const repoDir = repo.repoDir!;
  {
    const pack = path.join(repoDir, 'packs', backup.packs[0]!.slice(0, 2), backup.packs[0]!);
    fs.renameSync(pack, `${pack}.away`);
    try {
      const r = await asRoot([]);
      assert.equal(r.code, 2);
      assert.match(oneErrorLine({ ...r, code: r.code, signal: null, stdout: r.stdout.toString() }), /error: pack \S+, which the backup's manifest references, is missing from the repository/);
      await assertNothingLeft(parent, undefined, 'deleted pack');
    } finally {
      fs.renameSync(`${pack}.away`, pack);
    }
  }

  // ---- the backup's first WAL segment missing: the server cannot start ----
  {
    const dir = path.join(repoDir, 'wal', backup.startWal.slice(0, 16));
    const file = fs.readdirSync(dir).find((f) => f.startsWith(`${backup.startWal}-`))!;
    fs.renameSync(path.join(dir, file), path.join(repo.dir, file));
    try {
      const r = await asRoot(['--json']);
      assert.equal(r.code, 2);
      const line = oneErrorLine({ ...r, code: r.code, signal: null, stdout: r.stdout.toString() });
      assert.match(line, /error: PostgreSQL stopped during recovery \(exit \d+\)/);
      const report = JSON.parse(r.stdout.toString()) as Report;
      assert.equal(report.ok, false);
      t.diagnostic(`missing WAL: ${line}`);
      await assertNothingLeft(parent, report, 'missing WAL');
    } finally {
      fs.renameSync(path.join(repo.dir, file), path.join(dir, file));
    }
  }

  // ---- SIGINT while PostgreSQL replays ----
  await p.sql('CREATE TABLE big AS SELECT g, repeat(md5(g::text), 4) AS v FROM generate_series(1, 200000) g'); // ~40 MiB of WAL to replay
  await switchAndArchive(p);
  {
    const child = spawn(NODE_BIN, [PGARK, 'restore-test', '--config', repo.configPath], { env: pgarkEnv({ HOME: repo.dir }), stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const postgres = await waitFor('the scratch server to start', () => (findProcesses('pgark-restore-test-', 'postgres').length > 0 || child.exitCode !== null ? true : undefined), 120_000);
    assert.ok(postgres);
    assert.equal(child.exitCode, null, `restore-test still running when interrupted:\n${stderr}`);
    child.kill('SIGINT');
    const code = await exited;
    assert.equal(code, 130, stderr.slice(-2000));
    assert.match(stderr, /interrupted by SIGINT/);
    await assertNothingLeft(parent, undefined, 'SIGINT');
  }
});


test('restore-test: a SIGKILLed run\'s scratch server and directory are cleaned up by the next run; servers it did not start are left alone', { timeout: 600_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { name: 'rtkill' });
  const parent = scratchDir('rtkill-parent');
  t.after(() => {
    // Should the test fail, no scratch server of it may outlive it.
    for (const pid of findProcesses(parent, 'postgres')) { try { process.kill(pid, 'SIGQUIT'); } catch { /* gone */ } }
    fs.rmSync(parent, { recursive: true, force: true });
  });
  repo.updateSettings({ 'pg-bin-dir': pgInstall(DEFAULT_MAJOR).binDir, 'restore-test-path': parent, 'restore-test-user': 'pgark-test' });
  await p.sql('CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 10000) g');
  await takeBackup(repo);
  await switchAndArchive(p);

  // ---- a run killed while its server runs the checks (a SQL file that sleeps) ----
  const sleepSql = path.join(repo.dir, 'sleep.sql');
  fs.writeFileSync(sleepSql, 'SELECT pg_sleep(600);\n');
  const child = spawn(NODE_BIN, [PGARK, 'restore-test', '--config', repo.configPath, '--sql', sleepSql], { env: pgarkEnv({ HOME: repo.dir }), stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  await waitFor('the scratch server to be promoted', () => stderr.includes('recovery finished') || child.exitCode !== null, 180_000);
  assert.equal(child.exitCode, null, `restore-test ended before it was killed:\n${stderr.slice(-3000)}`);
  child.kill('SIGKILL');
  await exited;
  const [abandoned] = fs.readdirSync(parent).map((name) => path.join(parent, name));
  assert.ok(abandoned, 'the killed run left its scratch directory');
  const servers = findProcesses('pgark-restore-test-', 'postgres');
  assert.ok(servers.length > 0, 'the killed run left its server running');

  // ---- decoys: a look-alike directory without a marker, pointing at a server we did not start ----
  const decoy = path.join(parent, 'pgark-restore-test-decoy');
  fs.mkdirSync(path.join(decoy, 'data'), { recursive: true });
  const primaryPid = fs.readFileSync(path.join(p.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]!;
  fs.writeFileSync(path.join(decoy, 'data', 'postmaster.pid'), `${primaryPid}\n${path.join(decoy, 'data')}\n`);

  // ---- the next run cleans up ----
  const r = await pgarkAsRoot(['restore-test', '--config', repo.configPath, '--json'], { env: pgarkEnv({ HOME: repo.dir }), timeoutMs: 300_000 });
  const report = parseJsonOutput<Report & { cleanedUp: string[] }>({ ...r, stdout: r.stdout.toString() }, 'restore-test');
  assert.equal(r.code, 0, `${report.error}\n${r.stderr.slice(-3000)}`);
  assert.deepEqual(report.cleanedUp, [abandoned]);
  assert.match(r.stderr, /stopping the scratch PostgreSQL \(pid \d+\) of a restore-test that died/);
  assert.deepEqual(findProcesses('pgark-restore-test-', 'postgres'), [], 'the abandoned server was stopped');
  assert.deepEqual(fs.readdirSync(parent), ['pgark-restore-test-decoy'], 'the abandoned directory is gone, the decoy stays');
  assert.equal(await p.sql('SELECT count(*) FROM t'), '10000', 'the server the decoy points at still runs');
});
