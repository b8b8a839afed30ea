/**
 * What the WAL archive covers: per timeline, the runs of consecutive segments and the gaps
 * between them, plus names archived more than once with different content. Pure logic over a
 * listing, so `info` and `wal-verify` agree and it can be unit tested.
 */
import { parseWalFileName, segmentName, segmentNumber } from '../postgres/wal.ts';

export interface SegmentRun {
  first: string;
  last: string;
  count: number;
}

export interface TimelineCoverage {
  timeline: number;
  runs: SegmentRun[];
  /** Missing stretches between the first and last archived segment: [first missing, last missing]. */
  gaps: { first: string; last: string; count: number }[];
  segments: number;
  partials: string[];
  backupLabels: string[];
  history: boolean;
}

export interface ArchiveCoverage {
  timelines: TimelineCoverage[];
  /** WAL file names stored with more than one distinct content. */
  conflicts: string[];
}

export function coverageOf(objects: readonly { name: string; sha256: string }[], segmentSize: number): ArchiveCoverage {
  const hashes = new Map<string, Set<string>>();
  for (const object of objects) {
    let set = hashes.get(object.name);
    if (!set) hashes.set(object.name, (set = new Set()));
    set.add(object.sha256);
  }
  const conflicts = [...hashes].filter(([, set]) => set.size > 1).map(([name]) => name).sort();

  const byTimeline = new Map<number, { segnos: number[]; partials: string[]; backupLabels: string[]; history: boolean }>();
  const entry = (timeline: number) => {
    let value = byTimeline.get(timeline);
    if (!value) byTimeline.set(timeline, (value = { segnos: [], partials: [], backupLabels: [], history: false }));
    return value;
  };
  for (const name of hashes.keys()) {
    const file = parseWalFileName(name);
    if (!file) continue;
    const timeline = entry(file.timeline);
    if (file.kind === 'segment') timeline.segnos.push(segmentNumber(file, segmentSize));
    else if (file.kind === 'partial') timeline.partials.push(name);
    else if (file.kind === 'backup') timeline.backupLabels.push(name);
    else timeline.history = true;
  }

  const timelines: TimelineCoverage[] = [];
  for (const [timeline, value] of [...byTimeline].sort(([a], [b]) => a - b)) {
    const segnos = [...new Set(value.segnos)].sort((a, b) => a - b);
    const runs: SegmentRun[] = [];
    const gaps: TimelineCoverage['gaps'] = [];
    let runStart = 0;
    for (let i = 1; i <= segnos.length; i++) {
      if (i === segnos.length || segnos[i] !== segnos[i - 1]! + 1) {
        if (segnos.length > 0) {
          runs.push({ first: segmentName(timeline, segnos[runStart]!, segmentSize), last: segmentName(timeline, segnos[i - 1]!, segmentSize), count: i - runStart });
        }
        if (i < segnos.length) {
          gaps.push({ first: segmentName(timeline, segnos[i - 1]! + 1, segmentSize), last: segmentName(timeline, segnos[i]! - 1, segmentSize), count: segnos[i]! - segnos[i - 1]! - 1 });
        }
        runStart = i;
      }
    }
    timelines.push({ timeline, runs, gaps, segments: segnos.length, partials: value.partials.sort(), backupLabels: value.backupLabels.sort(), history: value.history });
  }
  return { timelines, conflicts };
}
