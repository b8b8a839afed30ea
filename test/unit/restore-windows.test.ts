// How restore cuts files into windows (src/repo/restore-files.ts): pieces per window, the order
// in which blobs are first needed and last used, and manifests whose extents do not cover a
// file exactly, which are refused before anything is written.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Extent } from '../../src/repo/backup-manifest.ts';
import { copyFromParts, planWindows, WINDOW_BLOCKS, type FileToRestore } from '../../src/repo/restore-files.ts';

const BS = 8192;
const W = WINDOW_BLOCKS * BS;
const PACK = 'a'.repeat(24) + '.zst';

function file(path: string, size: number, x: Extent[]): FileToRestore {
  return { entry: { t: 'f', p: path, m: 0o600, s: size, mt: 0, x }, absolute: `/nowhere/${path}` };
}

test('a full backup: one window per blob, one piece each', () => {
  const size = 2 * W + 3 * BS;
  const { windows, blobs } = planWindows([file('base/1/16384', size, [
    [0, WINDOW_BLOCKS, PACK, 0, 100, 0],
    [WINDOW_BLOCKS, WINDOW_BLOCKS, PACK, 100, 100, 0],
    [2 * WINDOW_BLOCKS, 3, PACK, 200, 10, 0],
  ])], BS);
  assert.deepEqual(windows.map((w) => [w.position, w.length, w.pieces.length]), [[0, W, 1], [W, W, 1], [2 * W, 3 * BS, 1]]);
  assert.deepEqual(blobs.map((b) => [b.offset, b.lastWindow, b.contentBytes]), [[0, 0, W], [100, 1, W], [200, 2, 3 * BS]]);
});

test('an incremental: runs of old and new blocks become pieces of the same window; a blob spanning windows stays until its last', () => {
  // blocks 0-9 from the old blob, 10-11 new, 12-199 old again (crossing the first window's end)
  const { windows, blobs } = planWindows([file('base/1/16385', 200 * BS, [
    [0, 10, PACK, 0, 500, 0],
    [10, 2, PACK, 900, 50, 0],
    [12, 116, PACK, 0, 500, 12],
    [128, 72, PACK, 500, 400, 0],
  ])], BS);
  assert.equal(windows.length, 2);
  assert.deepEqual(windows[0]!.pieces.map((p) => [p.blob, p.from / BS, p.length / BS, p.at / BS]), [[0, 0, 10, 0], [1, 0, 2, 10], [0, 12, 116, 12]]);
  assert.deepEqual(windows[1]!.pieces.map((p) => [p.blob, p.from / BS, p.length / BS, p.at / BS]), [[2, 0, 72, 0]]);
  assert.deepEqual(blobs.map((b) => b.lastWindow), [0, 0, 1]);
  // A partial last block counts by its bytes.
  const tail = planWindows([file('PG_VERSION', 3, [[0, 1, PACK, 0, 12, 0]])], BS);
  assert.deepEqual(tail.windows.map((w) => [w.position, w.length]), [[0, 3]]);
  assert.equal(planWindows([file('empty', 0, [])], BS).windows.length, 0);
});

test('extents that leave a gap, overlap or run past the end are refused', () => {
  assert.throws(() => planWindows([file('a', 3 * BS, [[0, 1, PACK, 0, 1, 0], [2, 1, PACK, 1, 1, 0]])], BS), /manifest entry of a is inconsistent: no extent covers bytes 8192-16383/);
  assert.throws(() => planWindows([file('b', 3 * BS, [[0, 2, PACK, 0, 1, 0], [1, 2, PACK, 1, 1, 0]])], BS), /extents overlap at byte 8192/);
  assert.throws(() => planWindows([file('c', BS, [[0, 1, PACK, 0, 1, 0], [1, 1, PACK, 1, 1, 0]])], BS), /at or past the end/);
  assert.throws(() => planWindows([file('d', 3 * BS, [[0, 2, PACK, 0, 1, 0]])], BS), /the extents cover 16384 of its 24576 bytes/);
});

test('copyFromParts reads across the pieces a blob was decoded into', () => {
  const content = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
  const parts = [content.subarray(0, 30), content.subarray(30, 31), content.subarray(31)];
  const target = Buffer.alloc(50);
  assert.equal(copyFromParts(parts, 25, 40, target, 5), true);
  assert.deepEqual([...target.subarray(5, 45)], [...content.subarray(25, 65)]);
  assert.equal(copyFromParts(parts, 90, 20, target, 0), false, 'content shorter than asked');
});
