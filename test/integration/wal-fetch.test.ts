// pgark wal-fetch (restore_command) against an archive of real segments:
//   - a segment or history file the archive does not have: exit 1, quickly, nothing printed at
//     the default log level, nothing written;
//   - %f must be a WAL file name: ../x, /etc/passwd, pg_wal/<segment>, RECOVERYXLOG... are
//     refused (exit 2) and nothing is written;
//   - a fetched file is byte-identical to what PostgreSQL archived;
//   - prefetch: after a fetch the next segments appear in spool/<hash>/fetched/, later fetches
//     are served from there (byte-identical), the spool never holds more than wal-prefetch
//     files and is emptied as replay proceeds (also when replay jumps ahead);
//   - calls ask the running prefetcher; its "not in the archive" is never stale: the segment
//     after the end of the archive is found as soon as it is archived.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { createCluster } from '../support/postgres.ts';
import {
  Cleanup, createWalRepo, findProcesses, insertRows, mkdirTestUser, scratchDir, sleep, stopPrefetchers, switchWal, waitArchived, waitFor,
} from '../support/wal.ts';

const PREFETCH = 4;

test('wal-fetch: missing files, name validation, byte-identical files, bounded prefetch', { timeout: 600_000 }, async (t) => {
  const cleanup = new Cleanup(t);
  const originals = scratchDir('fetch-orig');
  cleanup.add('originals', () => fs.rmSync(originals, { recursive: true, force: true }));
  const repo = await createWalRepo({ kind: 'file', name: 'fetch', settings: { 'wal-prefetch': PREFETCH } });
  cleanup.add('repository', () => repo.cleanup());
  const c = await createCluster({ walSegmentSizeMB: 1, settings: { archive_mode: 'on', archive_command: '', autovacuum: 'off' } });
  cleanup.add('cluster', () => c.destroy());
  await repo.init(c);
  c.setSettings({ archive_command: `cp %p '${originals}/%f' && ${repo.command('wal-push %p')}` });
  await c.reload();
  for (let i = 0; i < 16; i++) {
    await insertRows(c, i * 10_000 + 1, 1500);
    await switchWal(c);
  }
  await waitArchived(c, await switchWal(c));
  await c.stop();
  const segments = fs.readdirSync(originals).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
  assert.ok(segments.length >= 16);
  const original = (name: string) => fs.readFileSync(path.join(originals, name));

  const restoreDir = mkdirTestUser(path.join(repo.dir, 'restore'));
  const fetch = async (name: string, target = path.join(restoreDir, 'RECOVERYXLOG'), env: Record<string, string> = {}) => {
    fs.rmSync(target, { force: true });
    const t0 = Date.now();
    const r = await repo.pgark(['wal-fetch', name, target], { env });
    return { ...r, ms: Date.now() - t0, content: fs.existsSync(target) ? fs.readFileSync(target) : undefined };
  };
  // the log format comes from the config file (json); the level stays the default (info)
  assert.equal(repo.settings['log-level'], undefined);

  // ---- missing files: exit 1, silent ----
  const last = segments.at(-1)!;
  const afterEnd = last.slice(0, 16) + (parseInt(last.slice(16), 16) + 1).toString(16).toUpperCase().padStart(8, '0');
  for (const name of [afterEnd, '00000002' + segments[3]!.slice(8), '00000002.history', '00000001.history', `${segments[2]}.partial`]) {
    const r = await fetch(name);
    assert.equal(r.code, 1, `${name}: exit 1\n${r.stderr}`);
    assert.equal(r.stdout, '', `${name}: nothing on stdout`);
    assert.equal(r.stderr, '', `${name}: nothing on stderr at the default log level`);
    assert.equal(r.content, undefined, `${name}: nothing written`);
    assert.ok(r.ms < 10_000, `${name}: answered in ${r.ms} ms`);
    t.diagnostic(`missing ${name}: exit 1 in ${r.ms} ms`);
  }
  const debug = await fetch(afterEnd, undefined, { PGARK_LOG_LEVEL: 'debug' });
  assert.equal(debug.code, 1);
  assert.match(debug.stderr, new RegExp(`${afterEnd} is not in the archive`), 'said at debug level');

  // ---- %f validation ----
  for (const bad of ['../x', '/etc/passwd', `pg_wal/${segments[1]}`, 'RECOVERYXLOG', `../${segments[1]}`, '00000001000000000000000a', `${segments[1]}/`, '00000000.history', '']) {
    const r = await fetch(bad);
    assert.equal(r.code, 2, `${JSON.stringify(bad)} refused\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(`pgark wal-fetch: error: "${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}" is not a WAL file name`));
    assert.equal(r.content, undefined, `${JSON.stringify(bad)}: nothing written`);
  }
  assert.deepEqual(fs.readdirSync(restoreDir), [], 'no stray (temporary) file in the target directory');
  assert.deepEqual(repo.fetchedFiles(true), [], 'nothing prefetched for refused or missing names');

  // ---- a fetch is byte-identical; prefetch fills the spool, bounded ----
  let maxSpool = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      maxSpool = Math.max(maxSpool, repo.fetchedFiles().length);
      await sleep(10);
    }
  })();
  cleanup.add('spool sampler', async () => { sampling = false; await sampler; });

  const walk = segments.slice(0, 10);
  let fromSpool = 0;
  for (const [i, name] of walk.entries()) {
    const wanted = segments.slice(i + 1, i + 1 + PREFETCH);
    const r = await fetch(name);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    assert.ok(r.content?.equals(original(name)), `${name} fetched byte-identical`);
    if (/restored [0-9A-F]{24} \(prefetched\)/.test(r.stderr)) fromSpool++;
    else assert.match(r.stderr, new RegExp(`"msg":"restored ${name}"`));
    // the prefetcher brings the next ones, verified, and nothing else
    await waitFor(`${wanted.join(' ')} prefetched after ${name}`, () => wanted.every((w) => repo.fetchedFiles().includes(w)), 30_000,
      () => `fetched/: ${repo.fetchedFiles(true).join(' ')}`);
    await stopPrefetchers(repo.configPath);
    assert.deepEqual(repo.fetchedFiles(true), wanted, `after ${name}: exactly the next ${PREFETCH} segments in the spool`);
    for (const w of wanted) assert.ok(fs.readFileSync(path.join(repo.spoolRoot, 'fetched', w)).equals(original(w)), `prefetched ${w} is byte-identical`);
  }
  assert.ok(fromSpool >= walk.length - 1, `fetches after the first are served from the spool (${fromSpool}/${walk.length})`);
  t.diagnostic(`${fromSpool} of ${walk.length} fetches served from the prefetch spool`);

  // ---- replay jumps ahead (e.g. a new restore): stale prefetched files are removed ----
  const jump = segments[13]!;
  const r = await fetch(jump);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.content?.equals(original(jump)));
  const rest = segments.slice(14);
  const tail = rest.slice(0, PREFETCH);
  await waitFor('the spool to hold only the segments after the jump', () => JSON.stringify(repo.fetchedFiles()) === JSON.stringify(tail), 30_000,
    () => `fetched/: ${repo.fetchedFiles(true).join(' ')}, expected ${tail.join(' ')}`);
  // ---- to the end of the archive: the spool empties ----
  for (const name of rest) {
    const f = await fetch(name);
    assert.equal(f.code, 0, f.stderr);
    assert.ok(f.content?.equals(original(name)));
  }
  const end = await fetch(afterEnd);
  assert.equal(end.code, 1);
  await waitFor('the spool to be empty at the end of the archive', async () => {
    await stopPrefetchers(repo.configPath);
    return repo.fetchedFiles(true).length === 0;
  }, 30_000, () => `fetched/: ${repo.fetchedFiles(true).join(' ')}`);
  // ---- a "missing" from the running prefetcher is never remembered ----
  // Calls ask the running prefetcher, which answers "missing" only from a listing it made after
  // the request. So while probes keep it running, the segment after the end of the archive is
  // found as soon as it is archived: no probe may be answered from an earlier "not found".
  const prefetchLog = () => fs.readFileSync(path.join(repo.spoolRoot, 'wal-prefetch.log'), 'utf8');
  assert.match(prefetchLog(), new RegExp(`${afterEnd} is not in the archive \\(answered a request\\)`), 'the end-of-archive probe was answered by the prefetcher');
  await c.start();
  await insertRows(c, 900_001, 1500);
  const archiving = (async () => waitArchived(c, await switchWal(c)))();
  let found: Awaited<ReturnType<typeof fetch>> | undefined;
  let probes = 0;
  const prefetchers = new Set<number>();
  for (const end = Date.now() + 120_000; Date.now() < end;) {
    const probe = await fetch(afterEnd);
    probes++;
    for (const pid of findProcesses('wal-prefetch', repo.configPath)) prefetchers.add(pid);
    if (probe.code === 0) {
      found = probe;
      break;
    }
    assert.equal(probe.code, 1, probe.stderr);
    await sleep(200);
  }
  await archiving;
  assert.ok(found, `${afterEnd} found once archived (${probes} probes)`);
  assert.ok(found.content?.equals(original(afterEnd)), `${afterEnd} fetched byte-identical after earlier "missing" answers`);
  t.diagnostic(`${afterEnd}: ${probes} probes until archived, prefetcher pid(s) ${[...prefetchers].join(' ')}`);
  await c.stop();
  await stopPrefetchers(repo.configPath);

  sampling = false;
  await sampler;
  assert.ok(maxSpool <= PREFETCH, `the spool never held more than wal-prefetch (${PREFETCH}) segments: max ${maxSpool}`);
  assert.equal(fs.existsSync(path.join(repo.spoolRoot, 'prefetch.lock')), false, 'the prefetch lock is released');
});
