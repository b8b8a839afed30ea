/**
 * Helpers for the base backup and restore tests (test/integration/backup-restore-*.test.ts), on
 * top of the WAL test helpers (support/wal.ts): a primary archiving into a pgark repository,
 * `pgark backup --json` and `pgark info --json` parsed, restores into new clusters that are
 * started and waited for, and content fingerprints to compare clusters with.
 *
 * Every pgark call runs as the clusters' OS user (WalRepo.pgark), so restored files belong to it.
 * Restored clusters get archive_mode = off: they must never archive into the original's
 * repository (a promoted copy would push its own timeline there).
 */
import assert from 'node:assert/strict';
import { createCluster, type Cluster, type RunResult } from './postgres.ts';
import { createWalRepo, sleep, switchWal, waitArchived, waitFor, type RepoKind, type WalRepo, type WalRepoOptions } from './wal.ts';

export interface TestContextLike {
  after(fn: () => unknown): void;
  diagnostic(message: string): void;
}

export interface BackupJson {
  id: string;
  type: 'full' | 'incremental';
  base: string | null;
  timeline: number;
  startLsn: string;
  stopLsn: string;
  startWal: string;
  stopWal: string;
  startedAt: string;
  stoppedAt: string;
  fromStandby: boolean;
  manifestKey: string;
  packs: string[];
  files: number;
  size: number;
  storedBytes: number;
  blocksStored: number;
  blocksReferenced: number;
  /** Bytes read from the data directory (less than size when the WAL block map was used). */
  readBytes?: number;
  walBlockMap?: boolean;
  durationMs: number;
  tablespaces: { oid: string; location: string }[];
}

export interface InfoJson {
  backups: (BackupJson & { recoverability?: { consistent: boolean; reachesWal?: string; reachesTime?: string } })[];
  recoverable: { earliest: string | null; latest: string | null };
}

export interface Primary {
  repo: WalRepo;
  primary: Cluster;
}

/**
 * A repository and a primary (1 MiB WAL segments: cheap pg_switch_wal) archiving into it with
 * archive_command = pgark wal-push; pg-host/pg-port/pg-user written to the config file so that
 * `pgark backup` reaches the primary. Both are removed when the test ends.
 */
export async function createPrimary(t: TestContextLike, opts: {
  kind?: RepoKind; encrypted?: boolean; name: string; major?: number;
  settings?: Record<string, string | number | boolean>; repoSettings?: WalRepoOptions['settings'];
}): Promise<Primary> {
  const repo = await createWalRepo({ kind: opts.kind ?? 'file', encrypted: opts.encrypted, name: opts.name, settings: { 'archive-timeout': '120s', ...opts.repoSettings } });
  t.after(() => repo.cleanup());
  const primary = await createCluster({
    major: opts.major, walSegmentSizeMB: 1,
    settings: { archive_mode: 'on', archive_command: '', wal_level: 'replica', autovacuum: 'off', ...opts.settings },
  });
  t.after(() => primary.destroy());
  await repo.init(primary);
  repo.updateSettings({ 'pg-host': primary.socketDir, 'pg-port': primary.port, 'pg-user': 'postgres' });
  primary.setSettings({ archive_command: repo.command('wal-push %p') });
  await primary.reload();
  return { repo, primary };
}

function describeRun(what: string, r: RunResult): string {
  return `${what} failed (${r.signal ?? `exit ${r.code}`}):\n${r.stderr.slice(-4000)}${r.stdout.slice(-2000)}`;
}

/** `pgark backup --json` (extra args appended); returns the summary and how long it took. */
export async function takeBackup(repo: WalRepo, args: string[] = [], timeoutMs = 300_000): Promise<BackupJson & { ms: number }> {
  const t0 = Date.now();
  const r = await repo.pgark(['backup', '--json', ...args], { timeoutMs });
  const ms = Date.now() - t0;
  assert.equal(r.code, 0, describeRun(`pgark backup ${args.join(' ')}`, r));
  const line = r.stdout.trim().split('\n').at(-1)!;
  return { ...(JSON.parse(line) as BackupJson), ms };
}

export async function info(repo: WalRepo): Promise<InfoJson> {
  const r = await repo.pgark(['info', '--json']);
  assert.equal(r.code, 0, describeRun('pgark info', r));
  return JSON.parse(r.stdout) as InfoJson;
}

export interface Restored {
  cluster: Cluster;
  /** pgark restore's duration */
  restoreMs: number;
  result: RunResult;
}

/**
 * A new cluster directory (not initialised) and `pgark restore --target-dir DIR ...args` into
 * it. Does not start it. archive_mode = off unless `settings` say otherwise.
 */
export async function restoreNew(t: TestContextLike, repo: WalRepo, args: string[], opts: { major?: number; settings?: Record<string, string | number | boolean>; env?: Record<string, string> } = {}): Promise<Restored> {
  const cluster = await createCluster({ major: opts.major, initdb: false, start: false, env: opts.env });
  t.after(() => cluster.destroy());
  const t0 = Date.now();
  const result = await repo.pgark(['restore', '--target-dir', cluster.dataDir, ...args], { timeoutMs: 300_000 });
  const restoreMs = Date.now() - t0;
  assert.equal(result.code, 0, describeRun(`pgark restore ${args.join(' ')}`, result));
  cluster.setSettings({ archive_mode: 'off', ...opts.settings });
  return { cluster, restoreMs, result };
}

/** Starts a restored cluster and waits until recovery ended (promoted); returns the ms it took. */
export async function startPromoted(c: Cluster, timeoutMs = 180_000): Promise<number> {
  const t0 = Date.now();
  await c.start();
  await waitFor('the restored cluster to finish recovery and promote',
    async () => (await c.sql('SELECT pg_is_in_recovery()').catch(() => 't')) === 'f', timeoutMs, () => c.logTail(25));
  return Date.now() - t0;
}

/** Restore + start + wait for the promotion, in one. */
export async function restoreAndStart(t: TestContextLike, repo: WalRepo, args: string[], opts: Parameters<typeof restoreNew>[3] = {}): Promise<Restored & { startMs: number }> {
  const restored = await restoreNew(t, repo, args, opts);
  const startMs = await startPromoted(restored.cluster);
  return { ...restored, startMs };
}

/**
 * Per table: row count and md5 of all rows in primary-key order (tables with an `id` column), as
 * one string, e.g. "t=200000:3f2a…;u=12:9b1c…". `where` restricts the rows of every table.
 */
export async function fingerprint(c: Cluster, tables: readonly string[]): Promise<string> {
  const parts: string[] = [];
  for (const table of tables) {
    const exists = await c.sql(`SELECT to_regclass('${table}') IS NOT NULL`);
    if (exists !== 't') { parts.push(`${table}=absent`); continue; }
    parts.push(`${table}=${await c.sql(`SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x.id)), '-') FROM ${table} x`)}`);
  }
  return parts.join(';');
}

/** B-tree indexes of user tables verified with amcheck (the extension is created if missing). */
export async function checkIndexes(c: Cluster): Promise<number> {
  await c.sql('CREATE EXTENSION IF NOT EXISTS amcheck');
  const n = await c.sql(`SELECT count(bt_index_check(i.indexrelid, true)) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_namespace n ON n.oid = ic.relnamespace JOIN pg_am a ON a.oid = ic.relam WHERE a.amname = 'btree' AND n.nspname = 'public'`);
  return Number(n);
}

/** pg_switch_wal() and wait until the archiver has pushed it (and everything before). */
export async function switchAndArchive(c: Cluster): Promise<string> {
  const name = await switchWal(c);
  await waitArchived(c, name);
  return name;
}

/**
 * Runs async jobs, at most `limit` at a time; waits for all, then throws the first failure.
 * Independent restores run side by side: on a saturated machine that is most of the speed-up.
 */
export async function inParallel(jobs: readonly (() => Promise<unknown>)[], limit = 2): Promise<void> {
  const queue = [...jobs];
  const errors: unknown[] = [];
  await Promise.all(Array.from({ length: Math.min(limit, queue.length) }, async () => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      try { await job(); } catch (error) { errors.push(error); }
    }
  }));
  if (errors.length > 0) throw errors[0];
}

/** Formats a millisecond duration for diagnostics. */
export const secs = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;

/** The single `pgark <cmd>: error:` line of a failed run (asserts there is exactly one). */
export function oneErrorLine(r: RunResult): string {
  const lines = r.stderr.split('\n').filter((l) => /^pgark[^:]*: (error|internal error):/.test(l));
  assert.equal(lines.length, 1, `exactly one error line expected, got:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /internal error|\n\s+at /, 'no internal error, no stack trace');
  return lines[0]!;
}

export { sleep };
