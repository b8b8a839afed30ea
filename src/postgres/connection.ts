/**
 * Connections to the PostgreSQL server being backed up, via node-postgres. Settings come from
 * pg-* settings, then libpq's PG* environment variables, then libpq's defaults.
 */
import { existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import type { Client } from 'pg';
import type { Config } from '../config/load.ts';
import { PgarkError } from '../errors.ts';

export interface ConnectionTarget {
  host: string;
  port: number;
  user: string;
  database: string;
}

export function connectionTarget(config: Config): ConnectionTarget {
  const env = process.env;
  const host = config['pg-host'] ?? env.PGHOST ?? (existsSync('/var/run/postgresql') ? '/var/run/postgresql' : 'localhost');
  return {
    host,
    port: config['pg-port'] ?? (env.PGPORT ? Number(env.PGPORT) : 5432),
    user: config['pg-user'] ?? env.PGUSER ?? userInfo().username,
    database: config['pg-database'] ?? env.PGDATABASE ?? 'postgres',
  };
}

export function describeTarget(target: ConnectionTarget): string {
  return `${target.user}@${target.host}:${target.port}/${target.database}`;
}

export async function connect(config: Config): Promise<Client> {
  const { default: pg } = await import('pg');
  const target = connectionTarget(config);
  const client = new pg.Client({
    ...target,
    password: config['pg-password'] ?? process.env.PGPASSWORD,
    application_name: 'pgark',
    connectionTimeoutMillis: 10_000,
  });
  try {
    await client.connect();
  } catch (error) {
    await client.end().catch(() => {});
    const e = error as NodeJS.ErrnoException & { code?: string };
    let hint = 'check pg-host, pg-port, pg-user and pg-database (or PGHOST, PGPORT, PGUSER, PGDATABASE)';
    if (e.code === '28P01' || e.code === '28000') hint = 'authentication failed: check pg-user and the password (~/.pgpass, PGPASSWORD) and pg_hba.conf';
    if (e.code === 'ECONNREFUSED' || e.code === 'ENOENT') hint = 'is PostgreSQL running there? ' + hint;
    // node-postgres never puts the password in its messages; keep it that way.
    throw new PgarkError('POSTGRES', `cannot connect to PostgreSQL at ${describeTarget(target)}: ${e.message}`, { hint, cause: error });
  }
  return client;
}

export interface ClusterInfo {
  systemIdentifier: string;
  majorVersion: number;
  serverVersion: string;
  walSegmentSize: number;
  archiveMode: string;
  archiveCommand: string;
  dataDirectory: string | undefined;
  inRecovery: boolean;
}

export async function clusterInfo(client: Client): Promise<ClusterInfo> {
  const { rows } = await client.query<{ sysid: string; version_num: string; version: string; seg: string; archive_mode: string; archive_command: string; in_recovery: boolean }>(
    `SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
            current_setting('server_version_num') AS version_num,
            current_setting('server_version') AS version,
            (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size') AS seg,
            current_setting('archive_mode') AS archive_mode,
            current_setting('archive_command') AS archive_command,
            pg_is_in_recovery() AS in_recovery`,
  );
  const row = rows[0]!;
  let dataDirectory: string | undefined;
  try {
    dataDirectory = (await client.query<{ d: string }>(`SELECT current_setting('data_directory') AS d`)).rows[0]?.d;
  } catch {
    dataDirectory = undefined; // needs superuser or pg_read_all_settings
  }
  const versionNum = Number(row.version_num);
  return {
    systemIdentifier: row.sysid,
    majorVersion: Math.floor(versionNum / 10000),
    serverVersion: row.version,
    walSegmentSize: Number(row.seg),
    archiveMode: row.archive_mode,
    archiveCommand: row.archive_command,
    dataDirectory,
    inRecovery: row.in_recovery,
  };
}
