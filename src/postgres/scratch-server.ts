/**
 * A throwaway PostgreSQL server on a restored data directory, for `pgark restore-test`: the
 * server binaries of the backup's major, run as an unprivileged OS user, reachable only through
 * a Unix socket in the scratch directory (a copy of production data with trust authentication
 * must not be reachable by other users of the host), stopped — whatever happens — by stop().
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chown, lstat, open, readdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { userInfo } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import type { Client } from 'pg';
import { PgarkError } from '../errors.ts';
import { SCRATCH_CLUSTER_NAME } from './abandoned-scratch.ts';

const run = promisify(execFile);

export interface OsUser {
  name: string;
  uid: number;
  gid: number;
}

/** The OS user to run PostgreSQL as: `configured` when we are root, else ourselves (undefined: no switch). */
export async function serverOsUser(configured: string): Promise<OsUser | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  let line: string;
  try {
    line = (await run('getent', ['passwd', configured])).stdout.trim();
  } catch {
    throw new PgarkError('CONFIG', `OS user "${configured}" does not exist; PostgreSQL refuses to run as root`, { hint: 'set restore-test-user to an unprivileged user (e.g. postgres), or run pgark as that user' });
  }
  const fields = line.split(':');
  const user = { name: configured, uid: Number(fields[2]), gid: Number(fields[3]) };
  if (user.uid === 0) throw new PgarkError('CONFIG', `restore-test-user "${configured}" is root; PostgreSQL refuses to run as root`, { hint: 'set restore-test-user to an unprivileged user' });
  return user;
}

/** The major version of a `postgres` binary ("postgres (PostgreSQL) 15.18" → 15), or undefined. */
async function majorOf(postgres: string): Promise<number | undefined> {
  try {
    await access(postgres, constants.X_OK);
    const { stdout } = await run(postgres, ['--version'], { timeout: 10_000 });
    const match = /\(PostgreSQL\) (\d+)/.exec(stdout);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The directory of a `postgres` binary of `major`: the pg-bin-dir setting if given (it must
 * match), else the first match among `pg_config --bindir`, /usr/lib/postgresql/<major>/bin
 * and PATH.
 */
export async function findServerBinaries(major: number, configured: string | undefined): Promise<string> {
  if (configured) {
    const found = await majorOf(join(configured, 'postgres'));
    if (found === major) return configured;
    throw new PgarkError('CONFIG', found === undefined ? `no PostgreSQL server binary at ${join(configured, 'postgres')}` : `pg-bin-dir ${configured} has PostgreSQL ${found}, the backup needs ${major}`, { hint: `set pg-bin-dir to the bin directory of PostgreSQL ${major}` });
  }
  const candidates: string[] = [];
  try {
    candidates.push((await run('pg_config', ['--bindir'], { timeout: 10_000 })).stdout.trim());
  } catch {
    // no pg_config: try the others
  }
  candidates.push(`/usr/lib/postgresql/${major}/bin`, `/usr/pgsql-${major}/bin`, ...(process.env.PATH ?? '').split(delimiter).filter(Boolean));
  for (const dir of candidates) if ((await majorOf(join(dir, 'postgres'))) === major) return dir;
  throw new PgarkError('CONFIG', `cannot find the PostgreSQL ${major} server binaries the backup needs`, { hint: `install PostgreSQL ${major} or set pg-bin-dir to its bin directory (the one with the postgres binary)` });
}

/** chown -R (not following links: tablespace links point into the scratch directory anyway). */
export async function chownTree(path: string, user: OsUser): Promise<void> {
  await chown(path, user.uid, user.gid);
  const info = await lstat(path);
  if (!info.isDirectory()) return;
  for (const entry of await readdir(path, { recursive: true })) {
    await chown(join(path, entry), user.uid, user.gid).catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago (names the socket; see the module comment). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface ScratchServerOptions {
  binDir: string;
  dataDir: string;
  socketDir: string;
  logFile: string;
  /** Where the authentication file goes (trust, socket only). */
  hbaFile: string;
  port: number;
  user: OsUser | undefined;
  /** The directory the server runs in (HOME too when switching users). */
  home: string;
}

export class ScratchServer {
  private readonly options: ScratchServerOptions;
  private child: ChildProcess | undefined;
  private exit: Promise<number | null> | undefined;
  exitCode: number | null | undefined;

  constructor(options: ScratchServerOptions) {
    this.options = options;
  }

  /** Server settings that keep the copy isolated: no archiving into the original's repository, no TCP. */
  private settings(): string[] {
    const o = this.options;
    const settings: Record<string, string> = {
      port: String(o.port),
      listen_addresses: '',
      unix_socket_directories: o.socketDir,
      unix_socket_permissions: '0700',
      hba_file: o.hbaFile,
      archive_mode: 'off',
      ssl: 'off',
      logging_collector: 'off',
      log_destination: 'stderr',
      hot_standby: 'on',
      fsync: 'off', // a scratch copy: its durability does not matter, replay speed does
      cluster_name: SCRATCH_CLUSTER_NAME, // abandoned-scratch.ts recognises its servers by it
    };
    return Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]);
  }

  async start(): Promise<void> {
    const o = this.options;
    await writeFile(o.hbaFile, '# pgark restore-test: the socket only, in a directory only the server user can enter\nlocal all all trust\n', { mode: 0o600 });
    // Debian keeps postgresql.conf in /etc: a restored directory may have none.
    const conf = join(o.dataDir, 'postgresql.conf');
    if (!(await access(conf).then(() => true, () => false))) await writeFile(conf, '# written by pgark restore-test\n', { mode: 0o600 });
    if (o.user) {
      for (const path of [o.hbaFile, conf]) await chown(path, o.user.uid, o.user.gid);
    }
    const log = await open(o.logFile, 'a', 0o600);
    if (o.user) await chown(o.logFile, o.user.uid, o.user.gid);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !/^PG/.test(k)) env[k] = v;
    env.HOME = o.home;
    try {
      this.child = spawn(join(o.binDir, 'postgres'), ['-D', o.dataDir, ...this.settings()], {
        cwd: o.home,
        env,
        stdio: ['ignore', log.fd, log.fd],
        ...(o.user ? { uid: o.user.uid, gid: o.user.gid } : {}),
      });
    } finally {
      await log.close();
    }
    const child = this.child;
    this.exit = new Promise((resolve) => {
      child.on('error', () => resolve(-1));
      child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : -1)));
    });
    void this.exit.then((code) => (this.exitCode = code));
  }

  get running(): boolean {
    return this.child !== undefined && this.exitCode === undefined;
  }

  /** Connects to `database` as the first of `users` that exists, or undefined when the server is not ready. */
  async connect(database: string, users: readonly string[]): Promise<Client | undefined> {
    const { default: pg } = await import('pg');
    for (const user of users) {
      const client = new pg.Client({ host: this.options.socketDir, port: this.options.port, user, database, application_name: 'pgark restore-test', connectionTimeoutMillis: 5_000 });
      try {
        await client.connect();
        return client;
      } catch (error) {
        await client.end().catch(() => {});
        const code = (error as { code?: string }).code;
        if (code === '28000' || code === '28P01') continue; // no such role: try the next
        if (code === '57P03' || code === 'ENOENT' || code === 'ECONNREFUSED') return undefined; // starting up, not consistent yet
        throw error;
      }
    }
    throw new PgarkError('POSTGRES', `none of the roles ${users.join(', ')} exists in the restored cluster`, { hint: 'set pg-user to a superuser of the backed-up cluster' });
  }

  /** Last lines of the server log, for error messages. */
  async logTail(lines = 15): Promise<string> {
    const text = await readFile(this.options.logFile, 'utf8').catch(() => '');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  }

  /** Fast shutdown; immediate after 60 s; SIGKILL after 10 more. Resolves once the postmaster is gone. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || this.exitCode !== undefined) return;
    const waitExit = (ms: number) => Promise.race([this.exit!.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    child.kill('SIGINT');
    if (await waitExit(60_000)) return;
    child.kill('SIGQUIT');
    if (await waitExit(10_000)) return;
    child.kill('SIGKILL');
    await waitExit(10_000);
  }

  static currentUserName(): string {
    return userInfo().username;
  }
}
