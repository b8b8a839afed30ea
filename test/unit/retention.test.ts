import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BackupSummary } from '../../src/repo/backup-manifest.ts';
import { decideRetention, walNeeded } from '../../src/repo/retention.ts';

const SEG = 16 * 1024 * 1024;
const wal = (tl: number, n: number) => `${tl.toString(16).toUpperCase().padStart(8, '0')}${'0'.repeat(8)}${n.toString(16).toUpperCase().padStart(8, '0')}`;

function backup(day: number, type: 'full' | 'incremental', startSeg: number, keep = false, timeline = 1): BackupSummary {
  const at = new Date(Date.UTC(2026, 10, day, 1)).toISOString();
  const stop = new Date(Date.UTC(2026, 10, day, 2)).toISOString();
  return {
    format: 1, id: `202611${String(day).padStart(2, '0')}T010000${type === 'full' ? 'F' : 'I'}`, type, base: null, systemIdentifier: '1', pgMajor: 16, timeline,
    startLsn: '0/0', stopLsn: '0/0', startWal: wal(timeline, startSeg), stopWal: wal(timeline, startSeg + 1), startedAt: at, stoppedAt: stop, blockSize: 8192, fromStandby: false,
    manifestKey: 'x', packs: [], files: 0, size: 0, storedBytes: 0, blocksStored: 0, blocksReferenced: 0, durationMs: 0, tablespaces: [], keep,
  };
}

// days 1..10, fulls on 1 and 6, WAL segments 10 per day
const history = Array.from({ length: 10 }, (_, i) => backup(i + 1, i === 0 || i === 5 ? 'full' : 'incremental', (i + 1) * 10, i === 1));
const now = new Date(Date.UTC(2026, 10, 10, 12));
const ids = (d: { retained: Map<string, unknown> }) => [...d.retained.keys()].map((id) => Number(id.slice(6, 8))).sort((a, b) => a - b);

test('retain N keeps the newest N, plus kept backups', () => {
  assert.deepEqual(ids(decideRetention(history, { retain: 3 }, now, (b) => b.keep)), [2, 8, 9, 10]);
});

test('retain-full N keeps the newest N fulls and everything after the oldest of them', () => {
  assert.deepEqual(ids(decideRetention(history, { retainFull: 1 }, now, () => false)), [6, 7, 8, 9, 10]);
  assert.deepEqual(ids(decideRetention(history, { retainFull: 5 }, now, () => false)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

test('retain-window keeps the backups that ended in the window and the one before it', () => {
  // window of 3 days from Nov 10 12:00: starts Nov 7 12:00; backup 7 ended at 02:00 that day
  const d = decideRetention(history, { windowMs: 3 * 86_400_000 }, now, () => false);
  assert.deepEqual(ids(d), [7, 8, 9, 10]);
  assert.equal(d.windowStart, '2026-11-07T12:00:00.000Z');
  // a window older than every backup keeps them all; one shorter than the last backup's age keeps the last
  assert.deepEqual(ids(decideRetention(history, { windowMs: 30 * 86_400_000 }, now, () => false)).length, 10);
  assert.deepEqual(ids(decideRetention(history, { windowMs: 1000 }, now, () => false)), [10]);
});

test('policies combine as a union', () => {
  assert.deepEqual(ids(decideRetention(history, { retain: 1, retainFull: 1, windowMs: 86_400_000 * 8 }, now, () => false)), [2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

test('WAL: from the oldest policy-retained start on every timeline; kept backups only their own range; history always', () => {
  const d = decideRetention(history, { retain: 3 }, now, (b) => b.keep);
  const needed = walNeeded(history, d, SEG);
  assert.equal(needed(wal(1, 79)), false);
  assert.equal(needed(wal(1, 80)), true);
  assert.equal(needed(wal(2, 80)), true, 'a later timeline after the start');
  assert.equal(needed(wal(2, 20)), false, 'the kept backup range is on its own timeline only');
  assert.equal(needed(wal(1, 20)), true, 'kept backup 2: start');
  assert.equal(needed(wal(1, 21)), true, 'kept backup 2: stop');
  assert.equal(needed(wal(1, 22)), false);
  assert.equal(needed(`${wal(1, 21)}.partial`), true);
  assert.equal(needed(`${wal(1, 30)}.00000028.backup`), false);
  assert.equal(needed('00000002.history'), true);
});
