/**
 * pgark restore-test: proves that a backup restores. Restores it (latest, or a target, like
 * `pgark restore`) into a scratch directory, downloads the WAL recovery needs into it, starts
 * PostgreSQL there as an unprivileged user, waits until recovery has ended (the target reached,
 * or the end of the archive) and the server is promoted, then checks: connect, count the rows
 * of every table of every database, amcheck's bt_index_check on every B-tree index when the
 * extension is available, and an optional SQL file. Reports the time spent downloading and
 * replaying; stops the server and removes the scratch directory whatever happens. Should pgark
 * itself be killed (SIGKILL), the next restore-test with the same restore-test-path stops the
 * server left running and removes its directory (abandoned-scratch.ts).
 *
 * The restored server fetches WAL with `cp` from the scratch directory rather than with
 * `pgark wal-fetch`: as root, the server's user must not need pgark's configuration and keys.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Client } from 'pg';
import type { CommandContext } from '../cli/context.ts';
import { shellQuote } from '../cli/self-command.ts';
import { PgarkError } from '../errors.ts';
import { parseWalFileName, segmentNumber } from '../postgres/wal.ts';
import { chownMarkerBack, cleanAbandonedScratch, SCRATCH_PREFIX, writeScratchMarker } from '../postgres/abandoned-scratch.ts';
import { chownTree, findServerBinaries, freePort, ScratchServer, serverOsUser } from '../postgres/scratch-server.ts';
import { listBackups, type BackupSummary } from '../repo/backup-manifest.ts';
import { acquireReaderLease, type RepositoryLock } from '../repo/lock.ts';
import { Repository } from '../repo/repository.ts';
import { listWalObjects, readStoredWal, type StoredWalObject } from '../repo/wal-archive.ts';
import { mapSettled } from '../util/concurrency.ts';
import { log } from '../util/log.ts';
import { formatBytes, formatDuration } from '../util/units.ts';
import { chooseBackup, run as runRestore, targetOf, type Target } from './restore.ts';

interface Report {
  ok: boolean;
  backup: string | null;
  target: Target;
  pgMajor: number | null;
  binDir: string | null;
  osUser: string;
  port: number | null;
  scratchDir: string | null;
  /** Milliseconds: download = restore (files) + WAL; replay = server start to promoted. */
  timings: { downloadMs: number; restoreMs: number; walMs: number; replayMs: number; consistentMs: number | null; checksMs: number; totalMs: number };
  wal: { files: number; bytes: number };
  checks: {
    connected: boolean;
    databases: number;
    tables: number;
    rows: number;
    amcheck: { available: boolean; indexes: number };
    sql: { file: string; ok: boolean } | null;
  };
  error: string | null;
  /** Scratch directories of earlier runs that died (SIGKILL), whose servers were stopped and which were removed. */
  cleanedUp: string[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function run(ctx: CommandContext): Promise<number> {
  const started = Date.now();
  const { loaded, options } = ctx;
  const target = targetOf(options);
  const sqlFile = options.sql as string | undefined;
  let sql: string | undefined;
  if (sqlFile) {
    sql = await readFile(sqlFile, 'utf8').catch((error: Error) => {
      throw new PgarkError('USAGE', `cannot read --sql ${sqlFile}: ${error.message}`);
    });
  }
  const user = await serverOsUser(loaded.config['restore-test-user']);
  const report: Report = {
    ok: false, backup: null, target, pgMajor: null, binDir: null, osUser: user?.name ?? ScratchServer.currentUserName(), port: null, scratchDir: null,
    timings: { downloadMs: 0, restoreMs: 0, walMs: 0, replayMs: 0, consistentMs: null, checksMs: 0, totalMs: 0 },
    wal: { files: 0, bytes: 0 },
    checks: { connected: false, databases: 0, tables: 0, rows: 0, amcheck: { available: false, indexes: 0 }, sql: sqlFile ? { file: sqlFile, ok: false } : null },
    error: null,
    cleanedUp: [],
  };

  // One shared lease from choosing the backup to the last WAL file downloaded (the restore
  // inside takes its own as well): expire must not delete what the test still has to read.
  const repo = await Repository.open(loaded, { requireInit: true });
  let lease: RepositoryLock | undefined;
  let backup: BackupSummary;
  try {
    lease = await acquireReaderLease(repo, 'pgark restore-test', { leaseMs: loaded.config['lock-lease'], waitMs: loaded.config['lock-wait'], signal: ctx.signal });
    backup = chooseBackup(await listBackups(repo), target, options.set as string | undefined);
  } catch (error) {
    await lease?.release();
    await repo.close();
    throw error;
  }

  let repoOpen = true;
  const releaseLease = async () => {
    if (!repoOpen) return;
    repoOpen = false;
    await lease?.release();
    await repo.close();
  };
  report.backup = backup.id;
  report.pgMajor = backup.pgMajor;
  let binDir: string;
  let scratch: string;
  try {
    binDir = await findServerBinaries(backup.pgMajor, loaded.config['pg-bin-dir']);
    report.binDir = binDir;
    const parent = resolve(loaded.config['restore-test-path'] ?? tmpdir());
    await mkdir(parent, { recursive: true });
    report.cleanedUp = await cleanAbandonedScratch(parent);
    scratch = await mkdtemp(join(parent, SCRATCH_PREFIX));
    await writeScratchMarker(scratch);
  } catch (error) {
    await releaseLease();
    throw error;
  }
  report.scratchDir = scratch;
  let server: ScratchServer | undefined;
  let failure: unknown;
  try {
    const dataDir = join(scratch, 'data');
    const walDir = join(scratch, 'wal');
    const socketDir = join(scratch, 'sock');
    await mkdir(walDir, { mode: 0o700 });
    await mkdir(socketDir, { mode: 0o700 });
    log.info(`restore-test of backup ${backup.id}`, { target: target.kind === 'latest' ? 'latest' : `${target.kind} ${target.value ?? ''}`.trim(), scratch, binDir, osUser: report.osUser });

    // ---- download: the backup's files, then the WAL from its start ----
    let t0 = Date.now();
    await runRestore({
      ...ctx,
      json: false,
      options: {
        ...options,
        'target-dir': dataDir,
        set: backup.id,
        'target-action': target.kind === 'latest' ? undefined : 'promote',
        'restore-command': `cp ${shellQuote(walDir)}/%f %p`,
        'tablespace-map': backup.tablespaces.map((t) => `${t.oid}=${join(scratch, 'tblspc', t.oid)}`),
        standby: false,
        delta: false,
      },
    });
    report.timings.restoreMs = Date.now() - t0;
    ctx.signal.throwIfAborted();
    t0 = Date.now();
    report.wal = await stageWal(loaded, backup, walDir, loaded.config['process-max'], ctx.signal);
    report.timings.walMs = Date.now() - t0;
    report.timings.downloadMs = report.timings.restoreMs + report.timings.walMs;
    await releaseLease(); // everything needed is local now; replay and checks may take long
    if (user) {
      await chownTree(scratch, user);
      await chownMarkerBack(scratch);
    }

    // ---- replay: start, wait for consistency and the end of recovery ----
    const port = await freePort();
    report.port = port;
    server = new ScratchServer({ binDir, dataDir, socketDir, logFile: join(scratch, 'postgres.log'), hbaFile: join(scratch, 'pg_hba.conf'), port, user, home: scratch });
    t0 = Date.now();
    await server.start();
    const roles = [...new Set([loaded.config['pg-user'], 'postgres', report.osUser].filter((r): r is string => Boolean(r)))];
    let role: string | undefined;
    for (;;) {
      ctx.signal.throwIfAborted();
      if (!server.running) throw await serverFailed(server, 'during recovery');
      const client = await server.connect('template1', role ? [role] : roles);
      if (client) {
        report.timings.consistentMs ??= Date.now() - t0;
        role ??= client.user;
        try {
          const inRecovery = (await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r;
          if (!inRecovery) break;
        } finally {
          await client.end().catch(() => {});
        }
      }
      await sleep(250);
    }
    report.timings.replayMs = Date.now() - t0;
    report.checks.connected = true;
    log.info('recovery finished: the server is promoted', { consistentAfter: formatDuration(report.timings.consistentMs ?? 0), replay: formatDuration(report.timings.replayMs) });

    // ---- checks ----
    t0 = Date.now();
    await runChecks(server, role!, report, sql, loaded.config['pg-database'] ?? 'postgres', ctx.signal);
    report.timings.checksMs = Date.now() - t0;
    report.ok = true;
  } catch (error) {
    failure = ctx.signal.aborted ? ctx.signal.reason : error;
    report.error = (failure as Error).message;
  } finally {
    await releaseLease().catch(() => {});
    await server?.stop().catch((error: unknown) => log.error(`could not stop the scratch server: ${(error as Error).message}`));
    await rm(scratch, { recursive: true, force: true, maxRetries: 3 });
  }
  report.timings.totalMs = Date.now() - started;

  if (ctx.json) process.stdout.write(JSON.stringify(report) + '\n');
  else process.stdout.write(textReport(report));
  if (failure) {
    if (failure instanceof PgarkError) throw failure;
    throw new PgarkError('POSTGRES', `restore-test of backup ${backup.id} failed: ${(failure as Error).message}`, { cause: failure });
  }
  return 0;
}

/** Downloads, verified, every WAL file recovery from `backup` may ask for: histories, and segments from its start on its and later timelines. */
async function stageWal(loaded: CommandContext['loaded'], backup: BackupSummary, walDir: string, concurrency: number, signal: AbortSignal): Promise<{ files: number; bytes: number }> {
  const repo = await Repository.open(loaded, { requireInit: true });
  try {
    const segmentSize = repo.identity!.postgres.walSegmentSize;
    const start = parseWalFileName(backup.startWal)!;
    const startSegno = segmentNumber(start, segmentSize);
    const wanted = new Map<string, StoredWalObject[]>();
    for (const object of await listWalObjects(repo)) {
      const file = parseWalFileName(object.name);
      if (!file) continue;
      const needed = file.kind === 'history' || (file.kind === 'segment' && file.timeline >= start.timeline && segmentNumber(file, segmentSize) >= startSegno);
      if (!needed) continue;
      const list = wanted.get(object.name) ?? [];
      list.push(object);
      wanted.set(object.name, list);
    }
    const objects = [...wanted.values()].map((list) => {
      if (new Set(list.map((o) => o.sha256)).size > 1) {
        throw new PgarkError('CONFLICT', `${list[0]!.name} is archived with different contents`, { hint: 'two servers archive into this repository; `pgark verify` shows the details' });
      }
      return list[0]!;
    });
    let bytes = 0;
    const results = await mapSettled(objects, concurrency, async (object) => {
      signal.throwIfAborted();
      const content = await readStoredWal(repo, object);
      await writeFile(join(walDir, object.name), content, { mode: 0o600 });
      bytes += content.length;
    });
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return { files: objects.length, bytes };
  } finally {
    await repo.close();
  }
}

async function serverFailed(server: ScratchServer, when: string): Promise<PgarkError> {
  const tail = await server.logTail(20);
  log.error(`the restored server's log:\n${tail}`);
  const fatal = tail.split('\n').reverse().find((line) => /\b(FATAL|PANIC):/.test(line));
  return new PgarkError('POSTGRES', `PostgreSQL stopped ${when} (exit ${server.exitCode})${fatal ? `: ${fatal.replace(/^.*?\b(FATAL|PANIC):\s*/, '')}` : ''}`, {
    hint: 'the server log is printed above; a backup that cannot start is not a usable backup',
  });
}

async function runChecks(server: ScratchServer, role: string, report: Report, sql: string | undefined, sqlDatabase: string, signal: AbortSignal): Promise<void> {
  const open = async (database: string): Promise<Client> => {
    const client = await server.connect(database, [role]);
    if (!client) throw await serverFailed(server, 'during the checks');
    return client;
  };
  const first = await open('template1');
  let databases: string[];
  try {
    databases = (await first.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname')).rows.map((r) => r.datname);
  } finally {
    await first.end().catch(() => {});
  }
  report.checks.databases = databases.length;
  const brokenIndexes: string[] = [];
  for (const database of databases) {
    signal.throwIfAborted();
    const client = await open(database);
    try {
      const tables = (await client.query<{ name: string }>(
        `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' ORDER BY 1`)).rows;
      for (const table of tables) {
        signal.throwIfAborted();
        try {
          const { rows } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${table.name}`);
          report.checks.rows += Number(rows[0]!.n);
        } catch (error) {
          if ((error as { code?: string }).code === '55000') continue; // a materialized view never populated
          throw new PgarkError('POSTGRES', `reading ${database}: ${table.name} failed: ${(error as Error).message}`);
        }
        report.checks.tables++;
      }
      const available = (await client.query("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'")).rowCount! > 0;
      report.checks.amcheck.available ||= available;
      if (!available) continue;
      await client.query('CREATE EXTENSION IF NOT EXISTS amcheck');
      const schema = (await client.query<{ s: string }>("SELECT quote_ident(n.nspname) AS s FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'")).rows[0]!.s;
      const indexes = (await client.query<{ oid: number; name: string }>(
        `SELECT c.oid, c.oid::regclass::text AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
          WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't' ORDER BY 2`)).rows;
      for (const index of indexes) {
        signal.throwIfAborted();
        try {
          await client.query(`SELECT ${schema}.bt_index_check($1::oid::regclass)`, [index.oid]);
          report.checks.amcheck.indexes++;
        } catch (error) {
          brokenIndexes.push(`${database}: ${index.name}: ${(error as Error).message}`);
        }
      }
    } finally {
      await client.end().catch(() => {});
    }
  }
  if (brokenIndexes.length > 0) {
    throw new PgarkError('INTEGRITY', `amcheck found ${brokenIndexes.length} corrupt index(es): ${brokenIndexes.slice(0, 3).join('; ')}`);
  }
  if (sql !== undefined) {
    const client = await open(sqlDatabase);
    try {
      await client.query(sql);
    } catch (error) {
      throw new PgarkError('POSTGRES', `the SQL file ${report.checks.sql!.file} failed in database ${sqlDatabase}: ${(error as Error).message}`, { hint: 'the restored data does not pass your checks' });
    } finally {
      await client.end().catch(() => {});
    }
    report.checks.sql!.ok = true;
  }
}

function textReport(r: Report): string {
  const t = r.timings;
  const out = [
    `backup ${r.backup ?? '-'} restored with PostgreSQL ${r.pgMajor ?? '?'} (${r.binDir ?? '?'}) as ${r.osUser}`,
    `download ${formatDuration(t.downloadMs)} (files ${formatDuration(t.restoreMs)}, WAL ${formatDuration(t.walMs)}: ${r.wal.files} file(s), ${formatBytes(r.wal.bytes)}); replay ${formatDuration(t.replayMs)}${t.consistentMs !== null ? ` (consistent after ${formatDuration(t.consistentMs)})` : ''}; checks ${formatDuration(t.checksMs)}`,
  ];
  if (r.checks.connected) {
    out.push(`checked ${r.checks.databases} database(s), ${r.checks.tables} table(s), ${r.checks.rows} row(s); amcheck: ${r.checks.amcheck.available ? `${r.checks.amcheck.indexes} B-tree index(es)` : 'not available'}${r.checks.sql ? `; ${r.checks.sql.file}: ${r.checks.sql.ok ? 'ok' : 'FAILED'}` : ''}`);
  }
  out.push(r.ok ? `ok (${formatDuration(t.totalMs)})` : `FAILED: ${r.error}`);
  return out.join('\n') + '\n';
}
