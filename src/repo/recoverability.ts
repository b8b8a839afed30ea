/**
 * What can be restored: from each backup, recovery can reach any point up to the end of the
 * unbroken WAL that follows its start on its timeline. The window runs from the oldest backup
 * whose WAL up to its stop is archived (restorable at its stop time) to the newest archived
 * segment reachable without a gap from some backup.
 */
import { PgarkError } from '../errors.ts';
import { parseWalFileName, segmentNumber } from '../postgres/wal.ts';
import type { BackupSummary } from './backup-manifest.ts';
import type { StoredWalObject } from './wal-archive.ts';

export interface BackupRecoverability {
  id: string;
  /** The WAL from the backup's start to its stop is archived: the backup restores at all. */
  consistent: boolean;
  /** The last segment reachable from the backup's start without a gap (same timeline). */
  reachesWal: string | undefined;
  /** When that segment was archived: the latest point in time this backup can recover to. */
  reachesTime: string | undefined;
}

export interface RecoverabilityWindow {
  earliest: string | undefined;
  latest: string | undefined;
  backups: BackupRecoverability[];
}

export function recoverability(backups: readonly BackupSummary[], wal: readonly StoredWalObject[], segmentSize: number): RecoverabilityWindow {
  const segments = new Map<string, StoredWalObject>();
  for (const object of wal) if (parseWalFileName(object.name)?.kind === 'segment') segments.set(object.name, object);
  const byTimeline = new Map<number, Map<number, StoredWalObject>>();
  for (const object of segments.values()) {
    const file = parseWalFileName(object.name)!;
    let map = byTimeline.get(file.timeline);
    if (!map) byTimeline.set(file.timeline, (map = new Map()));
    map.set(segmentNumber(file, segmentSize), object);
  }

  const results: BackupRecoverability[] = backups.map((backup) => {
    const start = parseWalFileName(backup.startWal)!;
    const stop = parseWalFileName(backup.stopWal)!;
    const timeline = byTimeline.get(start.timeline) ?? new Map<number, StoredWalObject>();
    let n = segmentNumber(start, segmentSize);
    let last: StoredWalObject | undefined;
    while (timeline.has(n)) last = timeline.get(n++);
    const consistent = last !== undefined && n - 1 >= segmentNumber(stop, segmentSize);
    return {
      id: backup.id,
      consistent,
      reachesWal: consistent ? last!.name : undefined,
      reachesTime: consistent ? laterOf(last!.lastModified.toISOString(), backup.stoppedAt) : undefined,
    };
  });
  const usable = results.filter((r) => r.consistent);
  const earliestBackup = backups.find((b) => usable.some((r) => r.id === b.id));
  return {
    earliest: earliestBackup?.stoppedAt,
    latest: usable.map((r) => r.reachesTime!).sort().at(-1),
    backups: results,
  };
}

function laterOf(a: string, b: string): string {
  return a > b ? a : b;
}

/**
 * Refuses a time target that the chosen backup cannot reach because the WAL after it has a gap
 * (expired, or lost) — instead of a recovery that stops short. Only a gap with later WAL on
 * the same timeline counts: WAL not archived yet, or a switch to a new timeline, is left to
 * PostgreSQL.
 */
export function checkTimeReachable(backup: BackupSummary, targetTime: string, wal: readonly StoredWalObject[], segmentSize: number): void {
  const [r] = recoverability([backup], wal, segmentSize).backups;
  const timeline = parseWalFileName(backup.startWal)!.timeline;
  const segno = (name: string) => segmentNumber(parseWalFileName(name)!, segmentSize);
  const end = r?.reachesWal ? segno(r.reachesWal) : segno(backup.startWal) - 1;
  const later = wal.some((o) => {
    const file = parseWalFileName(o.name);
    return file?.kind === 'segment' && file.timeline === timeline && segmentNumber(file, segmentSize) > end + 1;
  });
  if (!later) return;
  if (!r?.consistent) {
    throw new PgarkError('NOT_FOUND', `backup ${backup.id} cannot be restored: WAL from ${backup.startWal} to ${backup.stopWal} is missing from the archive`, { hint: '`pgark info` shows the recoverable window; choose another backup with --set', exitCode: 2 });
  }
  if (Date.parse(targetTime) > Date.parse(r.reachesTime!)) {
    throw new PgarkError('NOT_FOUND', `cannot recover to ${targetTime}: backup ${backup.id}, the newest that ended before it, reaches only ${r.reachesTime} (the WAL after ${r.reachesWal} was expired or is missing)`, {
      hint: '`pgark info` shows the recoverable window; pick a target inside it',
      exitCode: 2,
    });
  }
}
