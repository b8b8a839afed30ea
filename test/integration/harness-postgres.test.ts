// The PostgreSQL test harness itself: real clusters of several majors start, answer, honour
// their options, run as the unprivileged test user when root, and leave nothing behind.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  availableMajors, createCluster, freePort, processTree, runAsTestUser, testUser, testUserAccessProblem, type Cluster,
} from '../support/postgres.ts';

const isRoot = process.getuid?.() === 0;

function uidOf(pid: number): number {
  const m = /^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1]);
}

async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Stops and destroys the cluster and checks that no process of it and no file of it remain. */
async function destroyAndCheck(c: Cluster): Promise<void> {
  const pm = c.postmasterPid();
  const pids = pm === null ? [] : processTree(pm);
  if (pm !== null) assert.ok(pids.length >= 3, `postmaster and its children: ${pids.join(' ')}`);
  await c.destroy();
  assert.equal(fs.existsSync(c.baseDir), false, `${c.baseDir} removed`);
  const alive = pids.filter((p) => fs.existsSync(`/proc/${p}`) && !/\) Z /.test(fs.readFileSync(`/proc/${p}/stat`, 'utf8')));
  assert.deepEqual(alive, [], 'no process of the cluster left');
}

test('the majors the tests rely on are installed', () => {
  const majors = availableMajors();
  for (const m of [13, 15, 18]) assert.ok(majors.includes(m), `node_modules/pg${m} (have ${majors.join(', ')})`);
});

for (const [major, checksums] of [[13, true], [15, false], [18, false], [18, true]] as const) {
  test(`PostgreSQL ${major}, data checksums ${checksums ? 'on' : 'off'}: start, query, stop, restart, destroy`, async () => {
    const c = await createCluster({ major, dataChecksums: checksums, settings: { work_mem: '7MB' } });
    try {
      assert.equal(c.major, major);
      assert.match(await c.sql('SHOW server_version'), new RegExp(`^${major}\\.\\d+`));
      assert.equal(await c.sql('SHOW data_checksums'), checksums ? 'on' : 'off');
      assert.equal(await c.sql('SHOW fsync'), 'off');
      assert.equal(await c.sql('SHOW work_mem'), '7MB');
      assert.equal(await c.sql('SHOW port'), String(c.port));
      assert.equal(await c.sql('SHOW listen_addresses'), '127.0.0.1');
      assert.equal(await c.sql('SHOW data_directory'), c.dataDir);
      assert.equal(await c.sql('SELECT 1, NULL, \'a\'::text UNION ALL SELECT 2, 3, \'b\''), '1||a\n2|3|b');
      assert.deepEqual(await c.query('SELECT 1::int AS n, true AS b'), [{ n: 1, b: true }]);

      // runs as the unprivileged user when root, as us otherwise
      const pm = c.postmasterPid();
      assert.ok(pm !== null);
      const u = testUser();
      assert.equal(c.osUser, isRoot ? 'pgark-test' : null);
      assert.equal(uidOf(pm), u ? u.uid : process.getuid?.());

      // tools through the socket dir, as the cluster's user
      const id = await c.run('id', ['-u'], { check: true });
      assert.equal(Number(id.stdout.trim()), u ? u.uid : process.getuid?.());
      const env = await c.run('sh', ['-c', 'echo "$PGHOST $PGPORT $PGUSER"'], { check: true });
      assert.equal(env.stdout.trim(), `${c.socketDir} ${c.port} postgres`);
      assert.ok(fs.readdirSync(c.socketDir).includes(`.s.PGSQL.${c.port}`));

      // data survives a stop/start
      await c.sql('CREATE TABLE t AS SELECT generate_series(1, 1000) AS i');
      await c.stop();
      assert.equal(c.isRunning(), false);
      assert.equal(processTree(pm).length, 0, 'all backends gone after stop');
      await c.start();
      assert.equal(await c.sql('SELECT count(*) FROM t'), '1000');
      assert.match(c.logTail(5), /database system is ready to accept connections/);
    } finally {
      await destroyAndCheck(c);
    }
  });
}

test('walSegmentSizeMB, setSettings + reload, stop modes', async () => {
  const c = await createCluster({ walSegmentSizeMB: 1 });
  try {
    assert.equal(await c.sql('SHOW wal_segment_size'), '1MB');
    c.setSettings({ work_mem: '9MB', fsync: true });
    await c.reload();
    // the postmaster rereads the file asynchronously; new connections then see the new value
    await waitFor('work_mem 9MB after reload', async () => (await c.sql('SHOW work_mem')) === '9MB');
    await c.stop('immediate');
    await c.start(); // crash recovery after the immediate stop
    assert.equal(await c.sql('SHOW fsync'), 'on');
    assert.equal(await c.sql('SELECT pg_is_in_recovery()'), 'f');
  } finally {
    await destroyAndCheck(c);
  }
});

test('the postmaster environment reaches archive_command; leftover archive commands are killed on destroy', async () => {
  const marker = `marker-${process.pid}-${Date.now()}`;
  const c = await createCluster({
    major: 15,
    env: { PGARK_HARNESS_MARKER: marker },
    settings: {
      archive_mode: 'on',
      // the first segment records the env; later ones hang, as a slow upload would
      archive_command: 'if [ -e archived ]; then sleep 600; else echo "$PGARK_HARNESS_MARKER" > archived; fi',
    },
  });
  try {
    // archive_command runs in the data dir
    await c.sql('CREATE TABLE a AS SELECT 1; SELECT pg_switch_wal()');
    const file = path.join(c.dataDir, 'archived');
    await waitFor('archive_command', () => fs.existsSync(file) && fs.readFileSync(file, 'utf8').trim() !== '');
    assert.equal(fs.readFileSync(file, 'utf8').trim(), marker);
    await c.sql('CREATE TABLE b AS SELECT 1; SELECT pg_switch_wal()');
    const pm = c.postmasterPid()!;
    // (a process of the tree may exit between listing and reading its cmdline)
    const cmdline = (pid: number): string => { try { return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { return ''; } };
    await waitFor('the hanging archive_command', () => processTree(pm).some((p) => /sleep/.test(cmdline(p))));
  } finally {
    await destroyAndCheck(c); // the `sleep 600` must be gone too
  }
});

test('initdb: false gives an empty data dir to restore into; start() then works', async () => {
  const src = await createCluster({ major: 15 });
  const dst = await createCluster({ major: 15, initdb: false });
  try {
    assert.equal(fs.existsSync(dst.dataDir), false);
    await assert.rejects(dst.start(), /holds no cluster/);
    await src.sql('CREATE TABLE copied AS SELECT 42 AS x');
    await src.stop();
    // a cold copy as the cluster's user stands in for a restore
    await dst.run('cp', ['-a', src.dataDir, dst.dataDir], { check: true });
    await dst.start();
    assert.equal(await dst.sql('SELECT x FROM copied'), '42');
    assert.equal(await dst.sql('SHOW port'), String(dst.port), 'the copy listens on its own port, not the source one');
    assert.notEqual(dst.port, src.port);
  } finally {
    await destroyAndCheck(dst);
    await destroyAndCheck(src);
  }
});

test('a taken port is replaced by a free one on start', async () => {
  const c = await createCluster({ start: false });
  const blocker = await import('node:net').then((net) => net.createServer());
  await new Promise<void>((r) => blocker.listen(c.port, '127.0.0.1', () => r()));
  try {
    const taken = c.port;
    await c.start();
    assert.notEqual(c.port, taken);
    assert.equal(await c.sql('SELECT 1'), '1');
  } finally {
    blocker.close();
    await destroyAndCheck(c);
  }
});

test('failures are reported and leave no directory behind', async (t) => {
  const tmp = fs.mkdtempSync(path.join('/tmp', 'pgark-harness-'));
  fs.chmodSync(tmp, 0o755);
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = tmp; // createCluster puts its base dirs in os.tmpdir()
  t.after(() => {
    if (saved === undefined) delete process.env.TMPDIR; else process.env.TMPDIR = saved;
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  assert.equal(os.tmpdir(), tmp);
  await assert.rejects(createCluster({ major: 99 }), /PostgreSQL 99 is not installed/);
  await assert.rejects(createCluster({ settings: { shared_buffers: 'lots' } }), /pg_ctl start .* failed[\s\S]*shared_buffers/);
  await assert.rejects(createCluster({ walSegmentSizeMB: 3 }), /initdb .* failed/);
  assert.deepEqual(fs.readdirSync(tmp), []);
});

test('freePort gives distinct, bindable ports', async () => {
  const ports = await Promise.all([freePort(), freePort(), freePort()]);
  assert.equal(new Set(ports).size, 3);
  for (const p of ports) assert.ok(p > 1024 && p < 65536);
});

test('runAsTestUser and the access check', { skip: !isRoot && 'only meaningful as root' }, async () => {
  const r = await runAsTestUser('id', ['-un'], { check: true });
  assert.equal(r.stdout.trim(), 'pgark-test');
  const priv = fs.mkdtempSync(path.join(os.tmpdir(), 'pgark-private-'));
  try {
    fs.mkdirSync(path.join(priv, 'sub'));
    fs.writeFileSync(path.join(priv, 'sub', 'f'), 'x');
    assert.match(testUserAccessProblem(path.join(priv, 'sub', 'f')) ?? '', new RegExp(`^${priv} \\(mode 0700.*cannot be traversed by pgark-test`));
    fs.chmodSync(priv, 0o711);
    assert.equal(testUserAccessProblem(path.join(priv, 'sub', 'f')), null);
    fs.chmodSync(path.join(priv, 'sub', 'f'), 0o600);
    assert.match(testUserAccessProblem(path.join(priv, 'sub', 'f')) ?? '', /sub\/f \(mode 0600.*is not readable by pgark-test/);
  } finally {
    fs.rmSync(priv, { recursive: true, force: true });
  }
  assert.equal(testUserAccessProblem('/usr/bin/env', 'x'), null);
  const bad = await runAsTestUser('sh', ['-c', 'echo oops >&2; exit 3']);
  assert.deepEqual([bad.code, bad.stderr], [3, 'oops\n']);
  await assert.rejects(runAsTestUser('sh', ['-c', 'exit 4'], { check: true }), /exit 4/);
});
