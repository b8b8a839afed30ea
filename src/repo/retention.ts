/**
 * Retention policy, as pure logic over backup summaries and a WAL listing (unit tested):
 * which backups stay and which WAL files nothing retained can use any more.
 *
 * - retain N:        the newest N backups.
 * - retain-full N:   the newest N full backups and every backup taken after the oldest of them.
 * - retain-window D: everything needed to restore to any point in the last D: every backup that
 *                    ended inside the window and the newest one that ended before it (recovery
 *                    to the window's first instant starts from that one).
 * Policies combine as a union: a backup stays if any policy keeps it. Backups marked to keep
 * always stay, but keep only the WAL that makes them consistent (start to stop), not all the
 * WAL after them.
 *
 * WAL: recovery from a backup reads WAL forward from its start segment, on whatever timelines
 * it follows. So every segment (and .partial, .backup file) numbered at or after the oldest
 * start segment of the backups retained by policy stays, on every timeline; older ones stay
 * only inside a kept backup's start..stop range on its timeline. History files always stay:
 * they are tiny and recovery needs those of every timeline it may follow.
 */
import { parseWalFileName, segmentNumber } from '../postgres/wal.ts';
import type { BackupSummary } from './backup-manifest.ts';

export interface RetentionPolicy {
  retain?: number;
  retainFull?: number;
  windowMs?: number;
}

export type RetainReason = 'retain' | 'retain-full' | 'retain-window' | 'keep';

export interface RetentionDecision {
  /** Retained backup ids with why (a backup may have several reasons). */
  retained: Map<string, RetainReason[]>;
  expired: BackupSummary[];
  /** The start of the recovery window (now - window), when a window is set. */
  windowStart?: string;
}

export function hasPolicy(policy: RetentionPolicy): boolean {
  return policy.retain !== undefined || policy.retainFull !== undefined || policy.windowMs !== undefined;
}

/** `backups` oldest first (by id, i.e. start time). `kept(b)`: marked to keep. */
export function decideRetention(backups: readonly BackupSummary[], policy: RetentionPolicy, now: Date, kept: (b: BackupSummary) => boolean): RetentionDecision {
  const retained = new Map<string, RetainReason[]>();
  const add = (b: BackupSummary, reason: RetainReason) => retained.set(b.id, [...(retained.get(b.id) ?? []), reason]);
  if (policy.retain !== undefined) for (const b of backups.slice(-policy.retain)) add(b, 'retain');
  if (policy.retainFull !== undefined) {
    const fulls = backups.filter((b) => b.type === 'full');
    const oldest = fulls.at(-Math.min(policy.retainFull, fulls.length));
    const from = oldest ? backups.indexOf(oldest) : 0;
    for (const b of backups.slice(from)) add(b, 'retain-full');
  }
  let windowStart: string | undefined;
  if (policy.windowMs !== undefined) {
    const start = now.getTime() - policy.windowMs;
    windowStart = new Date(start).toISOString();
    const byStop = [...backups].sort((a, b) => Date.parse(a.stoppedAt) - Date.parse(b.stoppedAt));
    const before = byStop.filter((b) => Date.parse(b.stoppedAt) < start);
    for (const b of byStop) if (Date.parse(b.stoppedAt) >= start) add(b, 'retain-window');
    if (before.length > 0) add(before.at(-1)!, 'retain-window');
  }
  for (const b of backups) if (kept(b)) add(b, 'keep');
  return { retained, expired: backups.filter((b) => !retained.has(b.id)), windowStart };
}

/** Decides for each WAL file name whether a retained backup (or the window) may still need it. */
export function walNeeded(backups: readonly BackupSummary[], decision: RetentionDecision, segmentSize: number): (name: string) => boolean {
  const retained = backups.filter((b) => decision.retained.has(b.id));
  const byPolicy = retained.filter((b) => decision.retained.get(b.id)!.some((r) => r !== 'keep'));
  const segno = (name: string) => segmentNumber(parseWalFileName(name)!, segmentSize);
  const from = byPolicy.length > 0 ? Math.min(...byPolicy.map((b) => segno(b.startWal))) : Infinity;
  const ranges = retained.map((b) => ({ timeline: b.timeline, first: segno(b.startWal), last: segno(b.stopWal) }));
  return (name) => {
    const file = parseWalFileName(name);
    if (!file || file.kind === 'history') return true;
    const n = segmentNumber(file, segmentSize);
    if (n >= from) return true;
    return ranges.some((r) => r.timeline === file.timeline && n >= r.first && n <= r.last);
  };
}
