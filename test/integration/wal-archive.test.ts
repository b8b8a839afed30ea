// WAL archiving end to end: a real cluster under write load (SQL, pg_switch_wal, pgbench)
// with archive_command = pgark wal-push into two repositories at once (a file:// one, and an
// age-encrypted S3 one on Ceph RGW) archives every segment: pg_stat_archiver agrees with
// `pgark wal-verify --json` (no gaps, every file readable) and `pgark info --json`, every
// stored object decodes (independently: age CLI, node:zlib) to a segment of this cluster, and
// the spool is left empty.
//
// 1 MiB segments; PostgreSQL 18 by default, 18, 15 and 13 with PGARK_TEST_MATRIX=1;
// PGARK_TEST_FULL=1 runs a longer pgbench load.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseWalSummaryKey } from '../../src/repo/layout.ts';
import { skipServers } from '../support/objstores.ts';
import { createCluster, debianPgBin, type Cluster } from '../support/postgres.ts';
import {
  Cleanup, FULL, MATRIX, archiverStats, createWalRepo, parseJsonOutput, insertRows, parseWalKey, readyFiles, sha256, sleep, switchWal, waitArchived, type WalRepo,
} from '../support/wal.ts';

// PostgreSQL 18 by default (wal-replay runs 13, the other WAL tests the harness default, 15);
// PGARK_TEST_MATRIX=1: 18, 15 and 13.
const MAJORS = MATRIX ? [18, 15, 13] : [18];
const SEGMENT = 1024 * 1024;

function pgbenchPath(): string | undefined {
  try { return debianPgBin('pgbench'); } catch { return undefined; }
}

function runPgbench(bin: string, c: Cluster, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['-h', '127.0.0.1', '-p', String(c.port), '-U', 'postgres', ...args, 'postgres'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`pgbench ${args.join(' ')} failed (${code}): ${err.slice(-2000)}`))));
  });
}

/** The server log's lines that are not info messages of pgark or routine checkpoints. */
function problems(c: Cluster): string {
  return fs.readFileSync(c.logFile, 'utf8').split('\n').filter((l) => l && !l.includes('"level":"info"') && !/checkpoint|max_wal_size/.test(l)).slice(-40).join('\n');
}

interface VerifyJson {
  ok: boolean; files: number; checked: string;
  timelines: { timeline: number; runs: { first: string; last: string; count: number }[]; segments: number; history: boolean; partials: string[] }[];
  gaps: unknown[]; conflicts: string[]; unreadable: unknown[];
}

async function checkRepo(t: { diagnostic(m: string): void }, repo: WalRepo, c: Cluster, sysid: string, archivedCount: number, first: string, last: string): Promise<void> {
  const label = repo.kind === 'file' ? 'file repo' : 'S3 repo (encrypted)';
  const v = await repo.pgark(['wal-verify', '--json']);
  assert.equal(v.code, 0, `${label}: wal-verify exit 0\n${v.stdout}\n${v.stderr}`);
  const verify = parseJsonOutput<VerifyJson>(v, `${label}: wal-verify --json`);
  assert.equal(verify.ok, true);
  assert.equal(verify.checked, 'content');
  assert.deepEqual(verify.gaps, []);
  assert.deepEqual(verify.conflicts, []);
  assert.deepEqual(verify.unreadable, []);
  assert.equal(verify.files, archivedCount, `${label}: one object per file PostgreSQL archived`);
  assert.equal(verify.timelines.length, 1);
  assert.deepEqual(verify.timelines[0]!.runs, [{ first, last, count: archivedCount }], `${label}: one run from the segment the server started in to last_archived_wal`);

  const i = await repo.pgark(['info', '--json']);
  assert.equal(i.code, 0, i.stderr);
  const info = parseJsonOutput<{
    identity: { postgres: { systemIdentifier: string; majorVersion: number; walSegmentSize: number }; encryption: { recipients: string[] } };
    wal: { files: number; storedBytes: number; newestArchivedAt: string | null; timelines: unknown[]; conflicts: string[] };
  }>(i, `${label}: info --json`);
  assert.equal(info.identity.postgres.systemIdentifier, sysid);
  assert.equal(info.identity.postgres.majorVersion, c.major);
  assert.equal(info.identity.postgres.walSegmentSize, SEGMENT);
  assert.deepEqual(info.identity.encryption.recipients, repo.recipient ? [repo.recipient] : []);
  assert.equal(info.wal.files, archivedCount);
  assert.deepEqual(info.wal.timelines, verify.timelines, 'info and wal-verify agree');
  assert.deepEqual(info.wal.conflicts, []);
  assert.ok(info.wal.newestArchivedAt !== null);

  // Every object: pgark.json, a WAL key or the block map of an archived segment (walsum/, same
  // name and SHA-256); WAL keys decode (without pgark) to a segment of this cluster whose SHA-256
  // is the one in the key. No temporary or stray objects.
  const allKeys = await repo.keys();
  const suffix = repo.recipient ? '.zst.age' : '.zst';
  const blockMaps = allKeys.filter((k) => k.startsWith('walsum/'));
  const keys = allKeys.filter((k) => !k.startsWith('walsum/'));
  const walKeys = keys.filter((k) => k !== 'pgark.json');
  for (const k of blockMaps) {
    const parsed = parseWalSummaryKey(k);
    assert.ok(parsed && k.endsWith(suffix), `${label}: ${k} is a block map key`);
    assert.ok(walKeys.some((w) => parseWalKey(w)?.name === parsed.name && parseWalKey(w)?.sha256 === parsed.sha256), `${label}: ${k} belongs to an archived segment`);
  }
  assert.ok(blockMaps.length > 0, `${label}: segments have block maps`);
  assert.ok(keys.includes('pgark.json'));
  for (const k of walKeys) {
    assert.ok(parseWalKey(k), `${label}: ${k} is a WAL object key`);
    assert.ok(k.endsWith(suffix), `${label}: ${k} ends with ${suffix}`);
  }
  assert.equal(walKeys.length, archivedCount);
  const sample = repo.recipient ? [walKeys[0]!, walKeys[Math.floor(walKeys.length / 2)]!, walKeys.at(-1)!] : walKeys;
  let storedBytes = 0;
  for (const k of sample) {
    const content = await repo.decodeObject(k);
    const parsed = parseWalKey(k)!;
    assert.equal(sha256(content), parsed.sha256, `${label}: ${k} decodes to its SHA-256`);
    assert.equal(content.length, SEGMENT);
    assert.equal(content.readBigUInt64LE(24).toString(), sysid, `${label}: ${k} is a segment of this cluster`);
    storedBytes += (await repo.readObject(k)).length;
  }
  if (!repo.recipient) t.diagnostic(`${label}: ${archivedCount} segments, ${(storedBytes / archivedCount / 1024).toFixed(0)} KiB stored per 1 MiB segment on average (zstd)`);

  // Markers of files uploaded ahead go once PostgreSQL has the file: removed by the call when
  // Node answered it, by the running pusher when the launcher did (it writes nothing).
  const walDir = path.join(c.dataDir, 'pg_wal');
  const quickDir = path.join(walDir, '.pgark', 'archived');
  const leftover = () => [...repo.archivedMarkers(), ...(fs.existsSync(quickDir) ? fs.readdirSync(quickDir) : [])]
    .filter((name) => !fs.existsSync(path.join(walDir, 'archive_status', `${name}.ready`)));
  for (let i = 0; i < 300 && leftover().length > 0; i++) await sleep(100);
  assert.deepEqual(leftover(), [], `${label}: no push-ahead marker left once PostgreSQL has the files`);
  if (repo.repoDir) {
    const temps = keys.filter((k) => k.includes('.pgark-tmp-'));
    assert.deepEqual(temps, [], 'no temporary files left in the file repository');
  }
}

for (const major of MAJORS) {
  test(`PostgreSQL ${major}: archive_command = pgark wal-push into a file and an encrypted S3 repository archives every segment under load`, { skip: skipServers(), timeout: 600_000 }, async (t) => {
    const cleanup = new Cleanup(t);
    const fileRepo = await createWalRepo({ kind: 'file', name: `arch${major}f` });
    cleanup.add('file repository', () => fileRepo.cleanup());
    const s3Repo = await createWalRepo({ kind: 's3', name: `arch${major}s`, encrypted: true });
    cleanup.add('S3 repository', () => s3Repo.cleanup());

    const archiveCommand = `${fileRepo.command('wal-push %p')} && ${s3Repo.command('wal-push %p')}`;
    const c = await createCluster({
      major, walSegmentSizeMB: 1,
      // archive_command empty: WAL is kept (.ready) until the repositories are initialised
      settings: { archive_mode: 'on', archive_command: '', wal_level: 'replica', max_wal_size: '64MB', min_wal_size: '8MB',
        autovacuum: 'off' }, // no WAL of its own after the load: the end of the archive is where the test says
    });
    cleanup.add('cluster', () => c.destroy());
    const first = await c.sql('SELECT pg_walfile_name(pg_current_wal_lsn())');
    await fileRepo.init(c);
    await s3Repo.init(c);
    c.setSettings({ archive_command: archiveCommand });
    await c.reload();
    const sysid = await c.sql('SELECT system_identifier FROM pg_control_system()');

    // ---- load: bulk SQL, pg_switch_wal, pgbench (when installed) with switches meanwhile ----
    const t0 = Date.now();
    const startLsn = await c.sql('SELECT pg_current_wal_lsn()');
    await insertRows(c, 1, FULL ? 100_000 : 20_000);
    for (let i = 0; i < 5; i++) {
      await insertRows(c, 1_000_000 + i * 10, 10);
      await switchWal(c);
    }
    const pgbench = pgbenchPath();
    if (pgbench) {
      await runPgbench(pgbench, c, ['-i', '-q', '-s', FULL ? '4' : '1']);
      let stop = false;
      const switcher = (async () => {
        while (!stop) { await switchWal(c).catch(() => {}); await sleep(250); }
      })();
      await runPgbench(pgbench, c, ['-c', '2', '-T', FULL ? '30' : '3', '-n']);
      stop = true;
      await switcher;
    } else {
      t.diagnostic('pgbench not available: SQL load only');
    }
    await c.sql('CHECKPOINT');
    const last = await switchWal(c);
    const loadMs = Date.now() - t0;
    const walBytes = Number(await c.sql(`SELECT pg_current_wal_lsn() - '${startLsn}'::pg_lsn`));
    const backlog = readyFiles(c).length;
    await waitArchived(c, last, 400_000);
    const catchUpMs = Date.now() - t0 - loadMs;

    const stats = await archiverStats(c);
    t.diagnostic(`PostgreSQL ${major}: ${(walBytes / SEGMENT).toFixed(0)} MiB of WAL in ${loadMs} ms; ${stats.archived_count} files archived (each into 2 repositories); ` +
      `${backlog} waited when the load stopped, archived ${catchUpMs} ms later ` +
      `(${((Date.now() - t0) / stats.archived_count).toFixed(0)} ms per segment overall)`);
    assert.equal(stats.failed_count, 0, `no failed archive_command\n${problems(c)}`);
    assert.equal(stats.last_archived_wal, last);
    assert.ok(stats.archived_count >= 20, `at least 20 segments archived (${stats.archived_count})`);
    // pg_wal holds no segment waiting, and none was dropped
    assert.equal(fs.existsSync(path.join(fileRepo.spoolRoot, 'dropped.log')), false);

    await checkRepo(t, fileRepo, c, sysid, stats.archived_count, first, last);
    await checkRepo(t, s3Repo, c, sysid, stats.archived_count, first, last);

    // push-ahead did its job: most calls found their file uploaded already (logged per call)
    const log = fs.readFileSync(c.logFile, 'utf8');
    const ahead = (log.match(/uploaded ahead/g) ?? []).length;
    const direct = (log.match(/"msg":"archived [0-9A-F]{24}"/g) ?? []).length;
    const again = (log.match(/was already archived with the same content/g) ?? []).length;
    // The calls the launcher answered (file uploaded ahead, no Node started) log nothing.
    const quiet = 2 * stats.archived_count - ahead - direct - again;
    t.diagnostic(`wal-push calls: ${direct} uploaded their own file, ${ahead} found it uploaded ahead, ${again} found it archived already, ${quiet} answered by the launcher`);
    assert.ok(quiet >= 0, 'at most one log line per wal-push call and repository');
  });
}
