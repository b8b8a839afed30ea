// The page-aligned buffers restore decodes blobs into (ReusableAlignedBuffers in
// src/util/direct-io.ts): a window that is one whole blob is written from there, with O_DIRECT
// where the filesystem allows it, so every buffer must start on a page; buffers given back are
// handed out again (any other buffer given back is freed at once), more than a group are made when
// asked for, and a zstd blob decodes into one as the restore does it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { constants, closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { zstdFrame, ZstdFrameSequence } from '../../src/pipeline/zstd-frames.ts';
import { isAlignedBuffer, ReusableAlignedBuffers } from '../../src/util/direct-io.ts';

const MiB = 1024 * 1024;

test('buffers are page-aligned, rounded up to whole 64 KiB pages, reused once given back, and made beyond a group', () => {
  const pool = new ReusableAlignedBuffers(MiB + 1, 3);
  assert.equal(pool.size, MiB + 64 * 1024);
  const taken = Array.from({ length: 7 }, () => pool.take());
  for (const buffer of taken) {
    assert.equal(buffer.length, pool.size);
    assert.ok(isAlignedBuffer(buffer), 'starts on a page of an aligned allocation');
  }
  const overlap = taken.some((a, i) => taken.some((b, j) => i < j && a.buffer === b.buffer && a.byteOffset === b.byteOffset));
  assert.equal(overlap, false, 'seven distinct buffers');
  pool.give(taken[4]!);
  assert.equal(pool.take(), taken[4], 'a buffer given back is handed out again');
  const foreign = Buffer.allocUnsafeSlow(pool.size);
  pool.give(foreign);
  assert.equal(foreign.length, 0, 'a buffer not from the pool (a small blob\'s own) is freed at once');
  const next = pool.take();
  assert.notEqual(next, foreign, 'and not taken in');
  assert.ok(isAlignedBuffer(next));
  assert.equal(isAlignedBuffer(Buffer.allocUnsafeSlow(MiB)), false);
  assert.equal(isAlignedBuffer(taken[0]!.subarray(512)), false, 'a view off the page start');
});

test('a zstd blob decodes into one and is written from there with O_DIRECT', async (t) => {
  const pool = new ReusableAlignedBuffers(MiB + 1, 2);
  const content = Buffer.concat([randomBytes(300_000), Buffer.alloc(MiB - 300_000, 7)]);
  const frames = new ZstdFrameSequence();
  t.after(() => frames.close());
  const output = pool.take();
  const [part, ...rest] = await frames.decodeParts(await zstdFrame(content, 1), output);
  assert.equal(rest.length, 0);
  assert.equal(part!.buffer, output.buffer);
  assert.equal(part!.byteOffset, output.byteOffset, 'the content starts at the start of the aligned buffer');
  assert.ok(part!.equals(content));

  const dir = mkdtempSync(join(tmpdir(), 'pgark-aligned-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'f');
  const O_DIRECT = (constants as { O_DIRECT?: number }).O_DIRECT;
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | (O_DIRECT ?? 0), 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
    t.skip(`the filesystem of ${dir} refuses O_DIRECT`);
    return;
  }
  try {
    // An unaligned address would fail with EINVAL here.
    assert.equal(writeSync(fd, part!, 0, MiB, 0), MiB);
  } finally {
    closeSync(fd);
  }
  assert.ok(readFileSync(path).equals(content));
});
