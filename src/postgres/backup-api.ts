/**
 * The non-exclusive backup API, on one connection held open for the whole backup:
 * pg_backup_start / pg_backup_stop from PostgreSQL 15, pg_start_backup / pg_stop_backup(false)
 * before. The stop call returns the backup_label and tablespace_map contents that a restore
 * writes into the data directory.
 */
import type { Client } from 'pg';
import { PgarkError } from '../errors.ts';
import { parseLsn } from './wal.ts';

export interface BackupStart {
  startLsn: string;
  timeline: number;
  startedAt: Date;
}

export interface BackupStop {
  stopLsn: string;
  stoppedAt: Date;
  backupLabel: string;
  tablespaceMap: string;
}

export async function startBackup(client: Client, major: number, label: string): Promise<BackupStart> {
  const startedAt = new Date();
  try {
    const sql = major >= 15 ? 'SELECT pg_backup_start($1, true)::text AS lsn' : 'SELECT pg_start_backup($1, true, false)::text AS lsn';
    const { rows } = await client.query<{ lsn: string }>(sql, [label]);
    // The timeline of the checkpoint the backup starts from.
    const tli = await client.query<{ tli: number }>('SELECT timeline_id AS tli FROM pg_control_checkpoint()');
    return { startLsn: rows[0]!.lsn, timeline: Number(tli.rows[0]!.tli), startedAt };
  } catch (error) {
    throw new PgarkError('POSTGRES', `could not start the backup: ${(error as Error).message}`, {
      hint: 'the user needs the pg_backup_start privilege (or superuser), and wal_level must be replica or logical',
      cause: error,
    });
  }
}

/**
 * Where the WAL is now (written on a primary, replayed on a standby) and the timeline of the
 * last checkpoint: a guess, before the backup starts, of its base and WAL stretch (backup.ts
 * loads the block map of that stretch during the start checkpoint). undefined if unknown.
 */
export async function walPosition(client: Client): Promise<{ timeline: number; lsn: bigint } | undefined> {
  const { rows } = await client.query<{ tli: number; lsn: string | null }>(
    'SELECT timeline_id AS tli, (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn FROM pg_control_checkpoint()',
  );
  const row = rows[0];
  return row?.lsn ? { timeline: Number(row.tli), lsn: parseLsn(row.lsn) } : undefined;
}

export async function stopBackup(client: Client, major: number): Promise<BackupStop> {
  try {
    // wait_for_archive = false: PostgreSQL checks whether the last segment is archived once a
    // second, so waiting there costs most of a second of every backup. It still switches WAL;
    // the backup command then waits for the segments to be in the repository itself (a stronger
    // condition than PostgreSQL's archive status), polling more often.
    const sql = major >= 15
      ? 'SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_backup_stop(false)'
      : 'SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_stop_backup(false, false)';
    const { rows } = await client.query<{ lsn: string; labelfile: string; spcmapfile: string | null }>(sql);
    const row = rows[0]!;
    return { stopLsn: row.lsn, stoppedAt: new Date(), backupLabel: row.labelfile, tablespaceMap: row.spcmapfile ?? '' };
  } catch (error) {
    throw new PgarkError('POSTGRES', `could not stop the backup: ${(error as Error).message}`, { cause: error });
  }
}
