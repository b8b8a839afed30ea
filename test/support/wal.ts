/**
 * Helpers for the WAL archiving integration tests (test/integration/wal-*.test.ts): a pgark
 * repository (file:// or S3 on RGW, optionally age-encrypted) with its config file, spool and
 * identity in a scratch directory the clusters' OS user owns, so that archive_command and
 * restore_command (run by PostgreSQL as that user) and the tests' own pgark calls (run as that
 * user too, see WalRepo.pgark) share one spool; WAL generation; waiting for the archiver.
 *
 * PGARK_TEST_BIN=path runs another build of pgark than dist/pgark.mjs.
 *
 * Every pgark call of these helpers runs as the clusters' OS user: a spool or file repository
 * written by root would not be writable by PostgreSQL's archive_command afterwards.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { zstdDecompressSync } from 'node:zlib';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { NODE_BIN, PGARK_BIN } from './cli.ts';
import { createTestBucket, listKeys, s3Env, type TestBucket } from './objstores.ts';
import { cleanEnv, runAsTestUser, spawnAsTestUser, testUser, testUserCan, type Cluster, type RunResult } from './postgres.ts';

export const FULL = process.env.PGARK_TEST_FULL === '1';
/** The pgark executable these tests run: dist/pgark.mjs, or another build (PGARK_TEST_BIN). */
export const PGARK = process.env.PGARK_TEST_BIN || PGARK_BIN;
export const MATRIX = process.env.PGARK_TEST_MATRIX === '1';
/**
 * The `pgark` executable users and PostgreSQL run: the shell launcher next to the bundle
 * (src/cli/launcher.sh), which answers most wal-push calls without starting Node. Absent in
 * builds from before it (PGARK_TEST_BIN): then Node runs the bundle directly.
 */
export const LAUNCHER = path.join(path.dirname(PGARK), 'pgark');
const HAS_LAUNCHER = fs.existsSync(LAUNCHER);
/** PATH for the launcher: the project's Node first (the system's may be older than pgark needs). */
export const LAUNCHER_PATH = `${path.dirname(NODE_BIN)}:/usr/local/bin:/usr/bin:/bin`;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Cleanup steps run last-in first-out in one after hook, each even if an earlier one failed
 * (node:test stops at the first failing hook): clusters stop before their repositories go.
 */
export class Cleanup {
  private readonly steps: { what: string; fn: () => unknown }[] = [];
  constructor(t: { after(fn: () => unknown): void }) {
    t.after(() => this.run());
  }
  add(what: string, fn: () => unknown): void {
    this.steps.push({ what, fn });
  }
  async run(): Promise<void> {
    for (let step = this.steps.pop(); step; step = this.steps.pop()) {
      try { await step.fn(); } catch (error) { console.error(`cleanup of ${step.what} failed: ${String(error)}`); }
    }
  }
}

/** Polls `fn` until it returns a truthy value; throws with `what` (and `detail()`) on timeout. */
export async function waitFor<T>(what: string, fn: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeoutMs = 60_000, detail?: () => string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail ? `\n${detail()}` : ''}`);
    await sleep(100);
  }
}

/** A scratch directory owned by the clusters' OS user (mode 0755), under a dir that user can traverse. */
export function scratchDir(prefix: string): string {
  const base = testUserCan(os.tmpdir(), 'x') ? os.tmpdir() : '/tmp';
  const dir = fs.mkdtempSync(path.join(base, `pgark-${prefix}-`));
  fs.chmodSync(dir, 0o755);
  chownTestUser(dir);
  return dir;
}

export function chownTestUser(p: string, recursive = false): void {
  const u = testUser();
  if (!u) return;
  fs.chownSync(p, u.uid, u.gid);
  if (recursive && fs.statSync(p).isDirectory()) for (const e of fs.readdirSync(p)) chownTestUser(path.join(p, e), true);
}

export function mkdirTestUser(p: string): string {
  fs.mkdirSync(p, { recursive: true, mode: 0o755 });
  chownTestUser(p);
  return p;
}

/** The environment of pgark runs: no PGARK_* settings or libpq variables from the developer's shell. */
export function pgarkEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env = cleanEnv({ AWS_EC2_METADATA_DISABLED: 'true', ...extra });
  for (const key of Object.keys(env)) if (key.startsWith('PGARK_') && !key.startsWith('PGARK_TEST_') && !(key in extra)) delete env[key];
  return env;
}

/** JSON.parse of a command's stdout; on failure the error shows the exit code and stderr. */
export function parseJsonOutput<T = unknown>(r: { code: number | null; stdout: string; stderr: string }, what: string): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`${what}: no JSON on stdout (exit ${r.code})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
}

export const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

// ---------------------------------------------------------------------------------------------
// repositories

export type RepoKind = 'file' | 's3';

export interface WalRepoOptions {
  kind: RepoKind;
  /** age-encrypt the repository to a recipient made with `pgark keygen` (identity configured for reading) */
  encrypted?: boolean;
  /** S3 endpoint to use instead of RGW's (e.g. a fault proxy's url) */
  endpoint?: string;
  /** extra settings for the config file (YAML keys) */
  settings?: Record<string, string | number | boolean>;
  /** name part of the scratch dir and bucket */
  name?: string;
  /** S3: an existing bucket to use (not removed by cleanup) instead of a new one */
  bucket?: TestBucket;
  /** S3: key prefix inside the bucket */
  prefix?: string;
}

export interface WalRepo {
  kind: RepoKind;
  url: string;
  /** scratch dir: config, spool, identity, file repository */
  dir: string;
  configPath: string;
  /** spool-path (the base); spoolRoot is this repository's subdirectory */
  spoolPath: string;
  spoolRoot: string;
  /** the file repository's directory */
  repoDir?: string;
  bucket?: TestBucket;
  /** S3 key prefix of the repository inside the bucket ('' or 'x/') */
  prefix: string;
  identityPath?: string;
  recipient?: string;
  settings: Record<string, string | number | boolean>;
  /** Rewrites the config file with these settings on top of the current ones. */
  updateSettings(settings: Record<string, string | number | boolean | undefined>): void;
  /** `pgark ARGS --config FILE` as the clusters' OS user. */
  pgark(args: readonly string[], opts?: { env?: Record<string, string | undefined>; timeoutMs?: number; cwd?: string }): Promise<RunResult>;
  /** `pgark init` for this cluster (and the recipient when encrypted). */
  init(cluster: Cluster): Promise<void>;
  /**
   * A shell command line running pgark with this config (for archive_command / restore_command),
   * through the launcher as PostgreSQL runs it for users.
   */
  command(args: string): string;
  /**
   * Runs the launcher (`pgark ARGS --config FILE`) as the clusters' OS user. `withoutNode`: with
   * a PATH on which no Node can be found, so only what the launcher answers by itself succeeds.
   */
  launch(args: readonly string[], opts: { cwd: string; withoutNode?: boolean; configPath?: string }): Promise<RunResult>;
  /** Every object key of the repository, relative to it. */
  keys(): Promise<string[]>;
  /** Raw stored bytes of an object. */
  readObject(key: string): Promise<Buffer>;
  /** Decodes a stored WAL object (zstd, age) independently of pgark's reader (age CLI, node:zlib). */
  decodeObject(key: string): Promise<Buffer>;
  /** The spool's markers of files uploaded ahead (names). */
  archivedMarkers(): string[];
  /** The prefetched segments in the spool (names; temporary files excluded unless `all`). */
  fetchedFiles(all?: boolean): string[];
  /** Stops leftover background wal-prefetch and wal-push-ahead processes, removes the bucket (unless given) and the scratch dir. */
  cleanup(): Promise<void>;
}

/**
 * A PATH directory with the few programs the launcher uses besides shell builtins (mv, sleep,
 * readlink) and no Node: a call that needs Node fails on it.
 */
function toolsWithoutNode(): string {
  const directory = path.join(os.tmpdir(), 'pgark-test-tools-without-node');
  if (!fs.existsSync(directory)) {
    const temp = `${directory}.${process.pid}`;
    fs.mkdirSync(temp, { recursive: true });
    for (const tool of ['mv', 'sleep', 'readlink']) fs.symlinkSync(`/bin/${tool}`, path.join(temp, tool));
    fs.chmodSync(temp, 0o755);
    try {
      fs.renameSync(temp, directory);
    } catch {
      fs.rmSync(temp, { recursive: true, force: true }); // made by a test running in parallel
    }
  }
  return directory;
}

function yamlOf(settings: Record<string, string | number | boolean>): string {
  return Object.entries(settings).map(([k, v]) => `${k}: ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`).join('\n') + '\n';
}

export async function createWalRepo(opts: WalRepoOptions): Promise<WalRepo> {
  const dir = scratchDir(opts.name ?? 'wal');
  const spoolPath = mkdirTestUser(path.join(dir, 'spool'));
  let bucket: TestBucket | undefined;
  let url: string;
  let repoDir: string | undefined;
  const prefix = opts.prefix ? opts.prefix.replace(/\/*$/, '/') : '';
  const settings: Record<string, string | number | boolean> = { 'spool-path': spoolPath, 'log-format': 'json' };
  try {
    if (opts.kind === 'file') {
      repoDir = mkdirTestUser(path.join(dir, 'repo'));
      url = `file://${repoDir}`;
    } else {
      bucket = opts.bucket ?? await createTestBucket('rgw', { prefix: opts.name ?? 'wal' });
      const env = s3Env('rgw');
      url = `s3://${bucket.name}/${prefix}`;
      Object.assign(settings, { 's3-endpoint': opts.endpoint ?? env.endpoint, 's3-access-key-id': env.accessKeyId, 's3-secret-access-key': env.secretAccessKey, 's3-region': env.region });
    }
    settings.repo = url;
    Object.assign(settings, opts.settings ?? {});
    const configPath = path.join(dir, 'pgark.yaml');
    const write = () => {
      fs.writeFileSync(configPath, yamlOf(settings), { mode: 0o600 });
      chownTestUser(configPath);
    };
    write();

    const runPgark = (args: readonly string[], o: { env?: Record<string, string | undefined>; timeoutMs?: number; cwd?: string } = {}) =>
      runAsTestUser(NODE_BIN, [PGARK, ...args, '--config', configPath], { env: pgarkEnv({ HOME: dir, ...o.env }), cwd: o.cwd ?? dir, timeoutMs: o.timeoutMs ?? 120_000 });

    let identityPath: string | undefined;
    let recipient: string | undefined;
    if (opts.encrypted) {
      identityPath = path.join(dir, 'identity.txt');
      const r = await runPgark(['keygen', '--output', identityPath]);
      if (r.code !== 0) throw new Error(`pgark keygen failed: ${r.stderr}`);
      recipient = r.stdout.trim();
      if (!/^age1[0-9a-z]+$/.test(recipient)) throw new Error(`pgark keygen printed ${JSON.stringify(r.stdout)}`);
      settings.identity = identityPath;
      write();
    }

    const spoolRoot = path.join(spoolPath, createHash('sha256').update(url).digest('hex').slice(0, 16));
    const repo: WalRepo = {
      kind: opts.kind, url, dir, configPath, spoolPath, spoolRoot, repoDir, bucket, prefix, identityPath, recipient, settings,
      updateSettings(more) {
        for (const [k, v] of Object.entries(more)) {
          if (v === undefined) delete settings[k]; else settings[k] = v;
        }
        write();
      },
      pgark: runPgark,
      async init(cluster) {
        const args = ['init', '--pg-host', cluster.socketDir, '--pg-port', String(cluster.port), '--pg-user', 'postgres'];
        if (recipient) args.push('--recipient', recipient);
        const r = await runPgark(args);
        if (r.code !== 0) throw new Error(`pgark init failed (exit ${r.code}): ${r.stderr}`);
      },
      command(args) {
        if (!HAS_LAUNCHER) return `'${NODE_BIN}' '${PGARK}' ${args} --config '${configPath}'`;
        return `PATH='${LAUNCHER_PATH}' '${LAUNCHER}' ${args} --config '${configPath}'`;
      },
      launch(args, o) {
        const env = pgarkEnv({ HOME: dir, PATH: o.withoutNode ? toolsWithoutNode() : LAUNCHER_PATH });
        return runAsTestUser(LAUNCHER, [...args, '--config', o.configPath ?? configPath], { env, cwd: o.cwd, timeoutMs: 120_000 });
      },
      async keys() {
        if (repoDir) return walkFiles(repoDir);
        return (await listKeys(bucket!.client, bucket!.name, { prefix })).map((k) => k.slice(prefix.length));
      },
      async readObject(key) {
        if (repoDir) return fs.readFileSync(path.join(repoDir, key));
        const r = await bucket!.client.send(new GetObjectCommand({ Bucket: bucket!.name, Key: prefix + key }));
        return Buffer.from(await r.Body!.transformToByteArray());
      },
      async decodeObject(key) {
        let data = await repo.readObject(key);
        if (key.endsWith('.age')) {
          if (!identityPath) throw new Error(`${key} is encrypted and the repo has no identity`);
          data = await ageDecrypt(identityPath, data);
          key = key.slice(0, -4);
        }
        if (key.endsWith('.zst')) return zstdDecompressSync(data);
        if (/-[0-9a-f]{64}$/.test(key)) return data;
        throw new Error(`decodeObject: unsupported encoding of ${key}`);
      },
      archivedMarkers() {
        return listDir(path.join(spoolRoot, 'archived')).filter((n) => !n.includes('.tmp-'));
      },
      fetchedFiles(all = false) {
        return listDir(path.join(spoolRoot, 'fetched')).filter((n) => all || !n.includes('.tmp-'));
      },
      async cleanup() {
        await stopPrefetchers(configPath);
        await stopPushers(configPath);
        if (bucket && !opts.bucket) await bucket.cleanup().catch((e: unknown) => console.error(`bucket cleanup: ${String(e)}`));
        if (process.env.PGARK_TEST_KEEP_CLUSTERS === '1') { console.error(`kept ${dir}`); return; }
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
    return repo;
  } catch (error) {
    if (bucket && !opts.bucket) await bucket.cleanup().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

function ageDecrypt(identityPath: string, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawnAsTestUser('age', ['-d', '-i', identityPath], { stdio: ['pipe', 'pipe', 'pipe'], env: pgarkEnv(), cwd: '/' });
    const out: Buffer[] = [];
    let err = '';
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`age -d failed: ${err}`))));
    child.stdin!.end(data);
  });
}

function listDir(p: string): string[] {
  try { return fs.readdirSync(p).sort(); } catch { return []; }
}

function walkFiles(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
    const key = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walkFiles(root, key));
    else out.push(key);
  }
  return out.sort();
}

/** PIDs of live processes whose command line contains every one of `needles`. */
export function findProcesses(...needles: string[]): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8');
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) continue;
      if (needles.every((n) => cmdline.includes(n))) out.push(Number(d));
    } catch { /* gone */ }
  }
  return out;
}

/**
 * wal-fetch starts `pgark wal-prefetch` detached (its own session), so stopping the cluster does
 * not stop it: wait for the ones started with this config to finish, SIGKILL them after 15 s.
 */
export async function stopPrefetchers(configPath: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (findProcesses('wal-prefetch', configPath).length > 0 && Date.now() < end) await sleep(100);
  for (const pid of findProcesses('wal-prefetch', configPath)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
}

/**
 * wal-push starts `pgark wal-push-ahead` detached too; it waits a few seconds for new WAL before
 * it exits. SIGTERM stops it (it aborts its uploads: nothing is marked that is not stored);
 * SIGKILL after `timeoutMs`.
 */
export async function stopPushers(configPath: string, timeoutMs = 15_000): Promise<void> {
  for (const pid of findProcesses('wal-push-ahead', configPath)) { try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ } }
  const end = Date.now() + timeoutMs;
  while (findProcesses('wal-push-ahead', configPath).length > 0 && Date.now() < end) await sleep(100);
  for (const pid of findProcesses('wal-push-ahead', configPath)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
}

// ---------------------------------------------------------------------------------------------
// WAL object keys (docs/FORMAT.md)

const WAL_KEY = /^wal\/(?:[0-9A-F]{16}|history)\/([0-9A-F]{8}(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?|\.history))-([0-9a-f]{64})(\.zst|\.lz4|\.gz)?(\.age)?$/;

export interface WalKey { key: string; name: string; sha256: string }

export function parseWalKey(key: string): WalKey | undefined {
  const m = WAL_KEY.exec(key);
  return m ? { key, name: m[1]!, sha256: m[2]! } : undefined;
}

/** The WAL objects of a repository by name (an array: more than one would be a conflict). */
export async function walObjects(repo: WalRepo): Promise<Map<string, WalKey[]>> {
  const out = new Map<string, WalKey[]>();
  for (const key of await repo.keys()) {
    const parsed = parseWalKey(key);
    if (!parsed) continue;
    out.set(parsed.name, [...(out.get(parsed.name) ?? []), parsed]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// clusters and WAL

export const segmentName = (timeline: number, segno: number, segmentSize: number): string => {
  const perLog = 0x1_0000_0000 / segmentSize;
  const h = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
  return h(timeline) + h(Math.floor(segno / perLog)) + h(segno % perLog);
};

/** pg_switch_wal(); returns the name of the segment it completed (or the last one if nothing was written). */
export async function switchWal(c: Cluster): Promise<string> {
  return c.sql('SELECT pg_walfile_name(pg_switch_wal())');
}

export function readyFiles(c: Cluster): string[] {
  return listDir(path.join(c.dataDir, 'pg_wal', 'archive_status')).filter((n) => n.endsWith('.ready')).map((n) => n.slice(0, -6));
}

export interface ArchiverStats { archived_count: number; failed_count: number; last_archived_wal: string | null; last_failed_wal: string | null }

export async function archiverStats(c: Cluster): Promise<ArchiverStats> {
  const [row] = await c.query<{ archived_count: string; failed_count: string; last_archived_wal: string | null; last_failed_wal: string | null }>(
    'SELECT archived_count, failed_count, last_archived_wal, last_failed_wal FROM pg_stat_archiver');
  return { archived_count: Number(row!.archived_count), failed_count: Number(row!.failed_count), last_archived_wal: row!.last_archived_wal, last_failed_wal: row!.last_failed_wal };
}

/** Waits until PostgreSQL has no WAL file waiting to be archived (no .ready) and `name` (if given) is archived. */
export async function waitArchived(c: Cluster, name?: string, timeoutMs = 120_000): Promise<void> {
  await waitFor(`the archiver to archive everything${name ? ` up to ${name}` : ''}`, async () => {
    if (readyFiles(c).length > 0) return false;
    if (!name) return true;
    const s = await archiverStats(c);
    return s.last_archived_wal !== null && s.last_archived_wal >= name;
  }, timeoutMs, () => `ready: ${readyFiles(c).join(' ')}\n--- server log:\n${c.logTail(30)}`);
}

/** Table t(id, payload) with `rows` rows (ids start at `from`), WAL of roughly rows × 100 bytes. */
export async function insertRows(c: Cluster, from: number, rows: number): Promise<void> {
  await c.sql('CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY, payload text)');
  await c.sql(`INSERT INTO t SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(${from}, ${from + rows - 1}) g`);
}

/** Row count and an order-independent checksum of table t. */
export async function tableChecksum(c: Cluster): Promise<string> {
  return c.sql(`SELECT count(*) || ':' || coalesce(md5(string_agg(id::text || '=' || payload, ',' ORDER BY id)), '-') FROM t`);
}

/** Removes everything in PGDATA/pg_wal except an empty archive_status (recovery then reads the archive). */
export function emptyPgWal(dataDir: string): void {
  const walDir = path.join(dataDir, 'pg_wal');
  for (const e of fs.readdirSync(walDir)) fs.rmSync(path.join(walDir, e), { recursive: true, force: true });
  fs.mkdirSync(path.join(walDir, 'archive_status'), { mode: 0o700 });
  chownTestUser(path.join(walDir, 'archive_status'));
}

/** cp -a of a data directory (as root, ownership kept). */
export function copyDataDir(from: string, to: string): void {
  fs.cpSync(from, to, { recursive: true, preserveTimestamps: true });
  chownTestUser(to, true);
  fs.chmodSync(to, 0o700);
}
