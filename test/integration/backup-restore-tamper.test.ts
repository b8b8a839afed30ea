// Damage and interruption, in an unencrypted file repository:
//   - a flipped byte inside a pack: restore fails with one clear error line (a damaged blob);
//   - a pack missing: restore fails with one clear error line naming it;
//   - a manifest rewritten (zstd-decoded, edited, re-encoded under the same key) to contain the
//     path ../../etc/x, an absolute path, or a symlink outside pg_tblspc: restore refuses, and
//     nothing appears outside the target directory;
//   - a non-empty target directory without --delta: refused, left as it was;
//   - `pgark backup` killed with SIGKILL at random moments (while it walks, uploads, waits for
//     WAL...): the interrupted backup is never listed by `pgark info --json`, the next backup
//     succeeds (incremental on the last complete one) and restores to the primary's data.
// PGARK_TEST_FULL=1: more kill trials.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { createPrimary, fingerprint, info, oneErrorLine, restoreAndStart, secs, switchAndArchive, takeBackup } from '../support/backup.ts';
import { NODE_BIN } from '../support/cli.ts';
import { spawnAsTestUser } from '../support/postgres.ts';
import { FULL, PGARK, pgarkEnv, sleep, waitFor } from '../support/wal.ts';

const KILL_TRIALS = FULL ? 12 : 5;

test('damaged packs, missing packs, hostile manifests, a busy target dir and killed backups', { timeout: 900_000 }, async (t) => {
  const { repo, primary: p } = await createPrimary(t, { name: 'bktamper' });
  await p.sql('CREATE TABLE t (id bigint PRIMARY KEY, v text)');
  await p.sql('INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 60000) g');
  const b1 = await takeBackup(repo);
  await p.sql('UPDATE t SET v = upper(v) WHERE id % 50 = 0');
  const b2 = await takeBackup(repo);
  assert.equal(b2.base, b1.id);
  t.diagnostic(`full ${b1.id} ${secs(b1.ms)}, incremental ${b2.id} ${secs(b2.ms)}`);
  const repoDir = repo.repoDir!;
  const packPath = (id: string) => path.join(repoDir, 'packs', id.slice(0, 2), id);
  const target = () => path.join(repo.dir, `target-${Math.random().toString(36).slice(2, 8)}`);

  // ---- a flipped byte inside a pack ----
  {
    const pack = packPath(b1.packs[0]!);
    const original = fs.readFileSync(pack);
    const damaged = Buffer.from(original);
    const at = Math.floor(original.length / 2);
    damaged[at] = damaged[at]! ^ 0x20;
    fs.writeFileSync(pack, damaged);
    try {
      const r = await repo.pgark(['restore', '--target-dir', target(), '--set', b1.id]);
      assert.notEqual(r.code, 0);
      const line = oneErrorLine(r);
      assert.match(line, new RegExp(`pgark restore: error: a blob in pack ${b1.packs[0]} \\(offset \\d+\\) is damaged`), line);
      t.diagnostic(`flipped byte: ${line}`);
    } finally {
      fs.writeFileSync(pack, original);
    }
  }

  // ---- a missing pack ----
  {
    const pack = packPath(b2.packs[0]!);
    fs.renameSync(pack, `${pack}.away`);
    try {
      const r = await repo.pgark(['restore', '--target-dir', target()]);
      assert.equal(r.code, 2);
      const line = oneErrorLine(r);
      assert.match(line, new RegExp(`pgark restore: error: pack ${b2.packs[0]!.replace(/\./g, '\\.')}, which the backup's manifest references, is missing from the repository`), line);
      t.diagnostic(`missing pack: ${line}`);
    } finally {
      fs.renameSync(`${pack}.away`, pack);
    }
  }

  // ---- hostile manifests ----
  {
    const manifestPath = path.join(repoDir, 'backups', b2.id, 'manifest.jsonl.zst');
    const original = fs.readFileSync(manifestPath);
    const lines = zstdDecompressSync(original).toString('utf8').trimEnd().split('\n');
    assert.ok(lines.length > 100 && JSON.parse(lines.at(-1)!).t === 'end', 'a manifest of JSON lines ending with the end line');
    const version = lines.map((l) => JSON.parse(l) as { t: string; p?: string }).find((e) => e.t === 'f' && e.p === 'PG_VERSION')!;
    const cases: { name: string; entry: object; outside: string[] }[] = [
      { name: 'a file at ../../etc/x', entry: { ...version, p: '../../etc/x' }, outside: ['../../etc/x', '../../etc'] },
      { name: 'a file at base/../../x', entry: { ...version, p: 'base/../../x' }, outside: ['../x'] },
      { name: 'an absolute file path', entry: { ...version, p: path.join(repo.dir, 'abs-evil') }, outside: [path.join(repo.dir, 'abs-evil')] },
      { name: 'a symlink outside pg_tblspc', entry: { t: 'l', p: 'evil', target: repo.dir }, outside: [] },
    ];
    try {
      for (const c of cases) {
        fs.writeFileSync(manifestPath, zstdCompressSync(Buffer.from([JSON.stringify(c.entry), ...lines].join('\n') + '\n')));
        const dir = target();
        const would = c.outside.map((o) => path.resolve(dir, o));
        for (const w of would) assert.equal(fs.existsSync(w), false, `${w} does not exist before`);
        const r = await repo.pgark(['restore', '--target-dir', dir, '--set', b2.id]);
        assert.equal(r.code, 2, `${c.name}: refused\n${r.stderr}`);
        const line = oneErrorLine(r);
        assert.match(line, /pgark restore: error: the backup manifest (contains an unsafe path|has a link at)/, `${c.name}: ${line}`);
        assert.match(r.stderr, /hint: the repository has been tampered with or is damaged/);
        for (const w of would) assert.equal(fs.existsSync(w), false, `${c.name}: nothing written at ${w}`);
        if (c.entry && (c.entry as { t: string }).t === 'l') assert.equal(fs.existsSync(path.join(dir, 'evil')), false, 'no link created');
        t.diagnostic(`${c.name}: ${line}`);
      }
    } finally {
      fs.writeFileSync(manifestPath, original);
    }
  }

  // ---- a non-empty target directory without --delta ----
  {
    const dir = target();
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'precious'), 'keep me');
    const r = await repo.pgark(['restore', '--target-dir', dir]);
    assert.equal(r.code, 2);
    assert.match(oneErrorLine(r), new RegExp(`error: ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not empty`));
    assert.match(r.stderr, /hint: .*--delta/);
    assert.deepEqual(fs.readdirSync(dir), ['precious']);
    assert.equal(fs.readFileSync(path.join(dir, 'precious'), 'utf8'), 'keep me');
  }

  // ---- pgark backup killed at random moments ----
  const complete = (await info(repo)).backups.map((b) => b.id);
  assert.deepEqual(complete, [b1.id, b2.id]);
  // Kill moments spread over a backup's duration (pgark's start, pg_backup_start, the walk, the
  // uploads, pg_backup_stop, the wait for WAL, the summary); a backup that had already finished
  // does not count as a trial, and the spread shrinks.
  let typical = Math.max(b2.ms, 1500);
  let kills = 0;
  for (let attempt = 1; kills < KILL_TRIALS && attempt <= KILL_TRIALS * 3; attempt++) {
    await p.sql(`INSERT INTO t SELECT g, 'attempt ${attempt}' FROM generate_series(${attempt * 100_000}, ${attempt * 100_000 + 2000}) g`);
    const delay = Math.floor(typical * (0.9 * (kills + Math.random()) / KILL_TRIALS));
    const child = spawnAsTestUser(NODE_BIN, [PGARK, 'backup', '--config', repo.configPath], { env: pgarkEnv({ HOME: repo.dir }), cwd: repo.dir, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    let endedAt = 0;
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => {
      endedAt = Date.now();
      resolve(code);
    }));
    const t0 = Date.now();
    await sleep(delay);
    const alive = child.exitCode === null && child.signalCode === null;
    child.kill('SIGKILL');
    const code = await exited;
    const backups = (await info(repo)).backups;
    const listed = backups.map((b) => b.id);
    // every listed backup is whole: its manifest and packs are stored (the summary comes last)
    for (const b of backups) {
      assert.ok(fs.existsSync(path.join(repoDir, b.manifestKey)), `${b.id}: manifest stored`);
      for (const pack of b.packs) assert.ok(fs.existsSync(packPath(pack)), `${b.id}: pack ${pack} stored`);
    }
    const added = listed.filter((id) => !complete.includes(id));
    if (alive && added.length === 0) {
      kills++;
      const stage = /"msg":"backup \S+ started"/.test(stderr) ? 'after pg_backup_start' : 'before pg_backup_start';
      t.diagnostic(`kill ${kills}: SIGKILL after ${delay} ms (${stage})`);
      assert.deepEqual(listed, complete, `kill ${kills}: the killed backup is not listed`);
    } else {
      // finished, or killed after writing its summary (then it is complete: listed is right)
      assert.equal(added.length, 1, `attempt ${attempt}: one backup added`);
      // How long it ran (not until after the `pgark info` above: the spread then never shrank
      // below that call's time, and a backup faster than the first ones was never hit).
      typical = Math.min(typical, alive ? delay : endedAt - t0);
      t.diagnostic(`attempt ${attempt}: the backup ${alive ? 'had written its summary' : `finished (exit ${code})`} before the kill at ${delay} ms; spreading kills over ${typical} ms now`);
      complete.splice(0, complete.length, ...listed);
    }
    // the server's backup session ended with the connection (no backup left running)
    await waitFor('the killed backup\'s session to end', async () => (await p.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgark'")) === '0', 30_000);
  }
  assert.equal(kills, KILL_TRIALS, 'every kill trial hit a running backup');
  await p.sql(`UPDATE t SET v = 'after the kills' WHERE id % 7 = 0`);
  const after = await takeBackup(repo);
  assert.equal(after.type, 'incremental');
  assert.equal(after.base, complete.at(-1), 'based on the last complete backup');
  assert.deepEqual((await info(repo)).backups.map((b) => b.id), [...complete, after.id]);
  const orphans = fs.readdirSync(path.join(repoDir, 'backups')).filter((id) => !fs.existsSync(path.join(repoDir, 'backups', id, 'backup.json')));
  t.diagnostic(`backup after ${kills} kills: ${after.id} in ${secs(after.ms)}; ${orphans.length} interrupted backup directories without a summary left behind`);

  await p.sql(`INSERT INTO t VALUES (-1, 'after the last backup')`);
  const expected = await fingerprint(p, ['t']);
  await switchAndArchive(p);
  const r = await restoreAndStart(t, repo, []);
  assert.match(r.result.stderr, new RegExp(`restoring backup ${after.id}`));
  assert.equal(await fingerprint(r.cluster, ['t']), expected);
  t.diagnostic(`restore after the kills: ${secs(r.restoreMs)}, replay+promote ${secs(r.startMs)}`);
});
