// kill -9 trials of `pgark wal-push`: real 1 MiB segments of a real cluster are put into a
// scratch pg_wal-like directory (archive_status/*.ready, so the push-ahead path runs) and
// pushed to Ceph RGW through the fault proxy (latency injected), the way PostgreSQL's archiver
// does it (oldest .ready first, .ready → .done on exit 0), but each wal-push is SIGKILLed at a
// random moment, and every other time the background pusher it started (wal-push-ahead, which
// does the uploads) at the same moment. After every kill:
//   - every file the spool marks as archived (spool/<hash>/archived/*) is in the repository
//     under its SHA-256 and decodes to the same bytes;
//   - every WAL object visible in the bucket decodes to the original segment (no partial,
//     no temporary object under a WAL key).
// When a round's files are all .done, a new round starts in a new prefix. At the end, wal-push
// is run again for every file of the last round (all exit 0, everything present), and
// wal-verify is clean, no multipart upload is open, no stray object and no marker is left.
//
// 20 trials by default, 100 with PGARK_TEST_FULL=1; PGARK_TEST_SEED=n repeats a run.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { NODE_BIN } from '../support/cli.ts';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';
import { createTestBucket, listOpenMultipartUploads, s3Env, skipServers, type TestBucket } from '../support/objstores.ts';
import { createCluster, spawnAsTestUser, type Cluster } from '../support/postgres.ts';
import {
  Cleanup, FULL, PGARK, chownTestUser, createWalRepo, parseJsonOutput, findProcesses, insertRows, mkdirTestUser, parseWalKey, pgarkEnv, scratchDir, sha256, switchWal,
  waitArchived, waitFor,
  type WalRepo,
} from '../support/wal.ts';
import { prng } from '../support/random.ts';
import { parseWalSummaryKey } from '../../src/repo/layout.ts';

const TRIALS = Number(process.env.PGARK_TEST_KILL_TRIALS ?? (FULL ? 100 : 20));
const SEGMENTS = 24;
const PUSH_AHEAD = 4;
const SEED = Number(process.env.PGARK_TEST_SEED ?? Date.now() % 1_000_000);

interface Outcome { code: number | null; signal: NodeJS.Signals | null; ms: number; stderr: string; pushersKilled: number }

/**
 * Runs wal-push as the cluster user (cwd = the fake data directory, %p relative) and SIGKILLs it
 * after killAfterMs (if still running) — and, with killPusher, at that moment also the
 * background pusher (wal-push-ahead) of this repository.
 */
function pushAndKill(repo: WalRepo, dataDir: string, name: string, killAfterMs: number | null, killPusher = false): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawnAsTestUser(NODE_BIN, [PGARK, 'wal-push', `pg_wal/${name}`, '--config', repo.configPath], {
      cwd: dataDir, env: pgarkEnv({ HOME: repo.dir }), stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    let pushersKilled = 0;
    const timer = killAfterMs === null ? undefined : setTimeout(() => {
      child.kill('SIGKILL');
      if (!killPusher) return;
      for (const pid of findProcesses('wal-push-ahead', repo.configPath)) {
        try { process.kill(pid, 'SIGKILL'); pushersKilled++; } catch { /* gone */ }
      }
    }, killAfterMs);
    child.on('error', reject);
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, ms: Date.now() - t0, stderr, pushersKilled }); });
  });
}

interface Round {
  index: number;
  repo: WalRepo;
  dataDir: string;
  walDir: string;
  /** decoded-and-compared object keys */
  verified: Set<string>;
}

test(`wal-push SIGKILLed at random moments (${TRIALS} trials) never marks or shows a file that is not fully archived`, { skip: skipServers(), timeout: FULL ? 1_800_000 : 600_000 }, async (t) => {
  const cleanup = new Cleanup(t);
  t.diagnostic(`seed ${SEED} (PGARK_TEST_SEED=${SEED} repeats this run)`);
  const random = prng(SEED);

  // ---- real segments: a cluster whose archive_command copies them out ----
  const originalsDir = scratchDir('kill-orig');
  cleanup.add('originals', () => fs.rmSync(originalsDir, { recursive: true, force: true }));
  const c: Cluster = await createCluster({
    walSegmentSizeMB: 1,
    settings: { archive_mode: 'on', archive_command: `test ! -f '${originalsDir}/%f' && cp %p '${originalsDir}/%f'`, autovacuum: 'off' },
  });
  cleanup.add('cluster', () => c.destroy());
  for (let i = 0; i < SEGMENTS; i++) {
    await insertRows(c, i * 10_000 + 1, i % 4 === 0 ? 6000 : 500); // full segments and mostly-empty ones
    await switchWal(c);
  }
  await waitArchived(c);
  const names = fs.readdirSync(originalsDir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort().slice(-SEGMENTS);
  assert.equal(names.length, SEGMENTS);
  const originals = new Map(names.map((n) => [n, fs.readFileSync(path.join(originalsDir, n))]));

  const bucket: TestBucket = await createTestBucket('rgw', { prefix: 'walkill' });
  cleanup.add('bucket', () => bucket.cleanup());
  const proxy: FaultProxy = await startFaultProxy({ target: s3Env('rgw').endpoint });
  cleanup.add('fault proxy', () => proxy.close());

  const rounds: Round[] = [];
  const newRound = async (): Promise<Round> => {
    const index = rounds.length + 1;
    const repo = await createWalRepo({
      kind: 's3', bucket, prefix: `r${index}`, endpoint: proxy.url, name: `kill-r${index}`,
      settings: { 'archive-push-ahead': PUSH_AHEAD, 'process-max': 4, 'retry-max': 4 },
    });
    cleanup.add(`round ${index}`, () => repo.cleanup());
    proxy.setFaults({});
    await repo.init(c);
    const dataDir = mkdirTestUser(path.join(repo.dir, 'data'));
    const walDir = mkdirTestUser(path.join(dataDir, 'pg_wal'));
    mkdirTestUser(path.join(walDir, 'archive_status'));
    for (const [name, content] of originals) {
      fs.writeFileSync(path.join(walDir, name), content, { mode: 0o600 });
      fs.writeFileSync(path.join(walDir, 'archive_status', `${name}.ready`), '');
    }
    chownTestUser(walDir, true);
    const round = { index, repo, dataDir, walDir, verified: new Set<string>() };
    rounds.push(round);
    return round;
  };
  const readyOf = (r: Round) => fs.readdirSync(path.join(r.walDir, 'archive_status')).filter((n) => n.endsWith('.ready')).map((n) => n.slice(0, -6)).sort();
  const markDone = (r: Round, name: string) => fs.renameSync(path.join(r.walDir, 'archive_status', `${name}.ready`), path.join(r.walDir, 'archive_status', `${name}.done`));

  /**
   * The invariants, which hold at every moment, also while the background pusher (started by
   * wal-push, not killed with it) works: the markers are read before the objects are listed, so
   * every marker seen must have its object in the listing.
   */
  const checkInvariants = async (r: Round, when: string): Promise<{ objects: number; markers: number }> => {
    const markers = r.repo.archivedMarkers();
    const keys = await r.repo.keys();
    const byName = new Map<string, string[]>();
    for (const key of keys) {
      if (key === 'pgark.json') continue;
      // A segment's block map is stored alongside it (and may outlive a kill without it: it
      // archives nothing, and expire removes it); it must name a segment pushed, with its hash.
      const blockMap = parseWalSummaryKey(key);
      if (blockMap) {
        const original = originals.get(blockMap.name);
        assert.ok(original && blockMap.sha256 === sha256(original), `${when}: ${key} is the block map of a segment pushed`);
        continue;
      }
      const parsed = parseWalKey(key);
      assert.ok(parsed, `${when}: only WAL objects, their block maps and pgark.json in the repository, found ${key}`);
      byName.set(parsed.name, [...(byName.get(parsed.name) ?? []), key]);
      if (r.verified.has(key)) continue;
      const original = originals.get(parsed.name);
      assert.ok(original, `${when}: ${key} is one of the segments pushed`);
      assert.equal(parsed.sha256, sha256(original), `${when}: ${key} carries the SHA-256 of the segment`);
      assert.ok((await r.repo.decodeObject(key)).equals(original), `${when}: ${key} decodes to the original segment`);
      r.verified.add(key);
    }
    for (const [name, list] of byName) assert.equal(list.length, 1, `${when}: one object for ${name}: ${list.join(' ')}`);
    for (const marker of markers) {
      assert.ok(byName.has(marker), `${when}: the spool marks ${marker} as archived, but it is not in the repository`);
    }
    return { objects: byName.size, markers: markers.length };
  };

  let round = await newRound();
  const outcomes = { uploadKilled: 0, uploadCompleted: 0, fastKilled: 0, fastCompleted: 0, markersChecked: 0, pushersKilled: 0 };
  const uploadDurations: number[] = [];
  const started = Date.now();
  // A trial is a call that has to upload (its file is not marked as uploaded ahead); the calls
  // PostgreSQL makes in between for marked files return at once, and are killed too, in a
  // shorter window.
  // Kill windows adapt to the machine's speed (shared CI runners...): each kill widens the
  // window by 10 %, each completed call narrows it by 10 %, which settles at about half killed.
  const windowMs = { upload: 1500, fast: 400 };
  for (let trial = 1; trial <= TRIALS;) {
    t.signal.throwIfAborted(); // timed out: stop, the cleanup runs
    if (readyOf(round).length === 0) {
      await checkInvariants(round, `round ${round.index} complete`);
      round = await newRound();
    }
    const name = readyOf(round)[0]!;
    const uploads = !round.repo.archivedMarkers().includes(name);
    const latencyMs = 10 + Math.floor(random() * 70);
    proxy.setFaults({ latencyMs });
    const kind = uploads ? 'upload' : 'fast';
    const killAfter = Math.floor(random() * windowMs[kind]);
    // the uploads run in the background pusher: every other kill takes it down too
    const killPusher = random() < 0.5;
    const out = await pushAndKill(round.repo, round.dataDir, name, killAfter, killPusher);
    if (out.pushersKilled) outcomes.pushersKilled += out.pushersKilled;
    const when = `${uploads ? `trial ${trial}` : 'call for a marked file'} (round ${round.index}, ${name}, latency ${latencyMs} ms, kill after ${killAfter} ms${out.pushersKilled ? ', pusher killed too' : ''})`;
    windowMs[kind] *= out.signal === 'SIGKILL' ? 1.1 : 0.9;
    if (out.signal === 'SIGKILL') {
      if (uploads) outcomes.uploadKilled++; else outcomes.fastKilled++;
    } else {
      assert.equal(out.code, 0, `${when}: wal-push exit 0\n${out.stderr}`);
      markDone(round, name);
      if (uploads) { outcomes.uploadCompleted++; uploadDurations.push(out.ms); } else outcomes.fastCompleted++;
    }
    outcomes.markersChecked += (await checkInvariants(round, when)).markers;
    if (uploads) trial++;
  }
  const trialsMs = Date.now() - started;

  // ---- recovery: PostgreSQL calls again for every file still .ready ----
  proxy.setFaults({});
  for (const name of readyOf(round)) {
    const out = await pushAndKill(round.repo, round.dataDir, name, null);
    assert.equal(out.code, 0, `retry of ${name}: exit 0\n${out.stderr}`);
    markDone(round, name);
  }
  assert.deepEqual(round.repo.archivedMarkers(), [], 'every marker consumed once PostgreSQL asked for its file');
  // ---- and once more for every file (4 at a time): all recognised as archived ----
  const rerun0 = Date.now();
  const queue = [...names];
  await Promise.all(Array.from({ length: 4 }, async () => {
    for (let name = queue.shift(); name && !t.signal.aborted; name = queue.shift()) {
      const out = await pushAndKill(round.repo, round.dataDir, name, null);
      assert.equal(out.code, 0, `re-run of ${name}: exit 0\n${out.stderr}`);
      assert.match(out.stderr, /already archived with the same content/, `re-run of ${name} recognises the archived file`);
    }
  }));
  const rerunMs = Date.now() - rerun0;

  for (const r of rounds) {
    const final = r === round;
    const { objects } = await checkInvariants(r, `end, round ${r.index}`);
    if (final) assert.equal(objects, SEGMENTS, 'every segment of the last round is archived');
    if (final || readyOf(r).length === 0) {
      const v = await r.repo.pgark(['wal-verify', '--json']);
      assert.equal(v.code, 0, `round ${r.index}: wal-verify\n${v.stdout}${v.stderr}`);
      const verify = parseJsonOutput<{ ok: boolean; files: number; gaps: unknown[]; unreadable: unknown[]; conflicts: unknown[] }>(v, 'wal-verify --json');
      assert.deepEqual({ ok: verify.ok, files: verify.files, gaps: verify.gaps, unreadable: verify.unreadable, conflicts: verify.conflicts },
        { ok: true, files: SEGMENTS, gaps: [], unreadable: [], conflicts: [] });
    }
    const uploads = await listOpenMultipartUploads(bucket.client, bucket.name, r.repo.prefix);
    assert.deepEqual(uploads.map((u) => u.key), [], `round ${r.index}: no open multipart upload`);
    // a temporary file of a killed marker write is harmless (never read) but should not pile up
    const spoolTemps = fs.readdirSync(path.join(r.repo.spoolRoot, 'archived')).filter((n) => n.includes('.tmp-'));
    if (spoolTemps.length) t.diagnostic(`round ${r.index}: ${spoolTemps.length} temporary marker file(s) of killed runs left in the spool: ${spoolTemps.join(' ')}`);
  }
  uploadDurations.sort((a, b) => a - b);
  t.diagnostic(`${TRIALS} uploading calls in ${trialsMs} ms over ${rounds.length} round(s): ${outcomes.uploadKilled} killed, ${outcomes.uploadCompleted} completed ` +
    `(median ${uploadDurations[Math.floor(uploadDurations.length / 2)] ?? '-'} ms with 10-80 ms latency, push-ahead ${PUSH_AHEAD}; kill window now ${windowMs.upload.toFixed(0)} ms); ` +
    `calls for marked files: ${outcomes.fastKilled} killed, ${outcomes.fastCompleted} completed; background pushers killed: ${outcomes.pushersKilled}; ${outcomes.markersChecked} markers checked; ` +
    `re-running wal-push for all ${SEGMENTS} files (4 at a time) took ${rerunMs} ms`);
  assert.ok(outcomes.uploadKilled >= TRIALS / 4, `many uploading calls were killed before they exited (${outcomes.uploadKilled}/${TRIALS}): the kill window matches the run time`);
});

// WAL objects larger than part-size go up as multipart uploads, and a wal-push killed between
// CreateMultipartUpload and Complete leaves the upload open (nothing can abort it at that
// moment); the retry stores the object under a new upload. `pgark expire` aborts multipart
// uploads under the repository open for over a day (as `pgark lifecycle`'s rule does on S3):
// shown here with expire's clock moved two days ahead. The archived segment is untouched.
test('a multipart upload left open by a SIGKILLed wal-push is aborted by expire a day later, and the segment stays archived', {
  skip: skipServers(), timeout: 300_000,
}, async (t) => {
  const cleanup = new Cleanup(t);
  const proxy = await startFaultProxy({ target: s3Env('rgw').endpoint });
  cleanup.add('fault proxy', () => proxy.close());
  const repo = await createWalRepo({ kind: 's3', endpoint: proxy.url, name: 'mpkill', settings: { 'part-size': '16KiB', 'archive-push-ahead': 0 } });
  cleanup.add('repository', () => repo.cleanup());
  const c = await createCluster({ walSegmentSizeMB: 1 });
  cleanup.add('cluster', () => c.destroy());
  await repo.init(c);
  await insertRows(c, 1, 6000);
  const name = await switchWal(c);
  const dataDir = mkdirTestUser(path.join(repo.dir, 'data'));
  mkdirTestUser(path.join(dataDir, 'pg_wal'));
  fs.copyFileSync(path.join(c.dataDir, 'pg_wal', name), path.join(dataDir, 'pg_wal', name));
  chownTestUser(path.join(dataDir, 'pg_wal', name));

  proxy.setFaults({ latencyMs: 300 });
  const killed = pushAndKill(repo, dataDir, name, 60_000);
  await waitFor('the first part upload', () => proxy.log.some((r) => r.method === 'PUT' && r.url.includes('uploadId=')), 60_000);
  for (const pid of findProcesses('wal-push', repo.configPath)) process.kill(pid, 'SIGKILL');
  assert.equal((await killed).signal, 'SIGKILL');
  proxy.setFaults({});
  const open = await listOpenMultipartUploads(repo.bucket!.client, repo.bucket!.name);
  assert.equal(open.length, 1, 'the kill left the upload open');

  const out = await pushAndKill(repo, dataDir, name, null);
  assert.equal(out.code, 0, out.stderr);
  const v = await repo.pgark(['wal-verify', '--json']);
  assert.equal(v.code, 0, v.stdout);
  assert.equal((await listOpenMultipartUploads(repo.bucket!.client, repo.bucket!.name)).length, 1, 'the retry did not touch the open upload');
  const dryRun = await repo.pgark(['expire', '--retain', '3', '--dry-run'], { env: { PGARK_TEST_NOW: new Date(Date.now() + 2 * 86_400_000).toISOString() } });
  assert.equal(dryRun.code, 0, dryRun.stderr);
  assert.equal((await listOpenMultipartUploads(repo.bucket!.client, repo.bucket!.name)).length, 1, 'a dry run aborts nothing');
  const now = await repo.pgark(['expire', '--retain', '3']);
  assert.equal(now.code, 0, now.stderr);
  assert.equal((await listOpenMultipartUploads(repo.bucket!.client, repo.bucket!.name)).length, 1, 'an upload open for less than a day is left alone (it may still be running)');
  const later = await repo.pgark(['expire', '--retain', '3'], { env: { PGARK_TEST_NOW: new Date(Date.now() + 2 * 86_400_000).toISOString() } });
  assert.equal(later.code, 0, later.stderr);
  t.diagnostic(`expire two days later: ${later.stdout.trim().split('\n').join(' | ')}`);
  assert.deepEqual((await listOpenMultipartUploads(repo.bucket!.client, repo.bucket!.name)).map((u) => u.key), [], 'no open multipart upload left');
  const after = await repo.pgark(['wal-verify', '--json']);
  assert.equal(after.code, 0, `the archived segment survives expire: ${after.stdout}`);
});
