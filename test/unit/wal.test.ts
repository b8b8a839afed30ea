import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PgarkError } from '../../src/errors.ts';
import { checkSegmentHeader, formatLsn, parseLsn, parseWalFileName, requireWalFileName, segmentName, segmentNumber } from '../../src/postgres/wal.ts';
import { parseWalObjectKey, walObjectKey } from '../../src/repo/layout.ts';
import { coverageOf } from '../../src/repo/wal-ranges.ts';

const SEG = 16 * 1024 * 1024;
const sha = (c: string) => c.repeat(64);

test('WAL file names', () => {
  assert.deepEqual(parseWalFileName('000000010000000A000000FF'), { name: '000000010000000A000000FF', kind: 'segment', timeline: 1, log: 10, seg: 255 });
  assert.equal(parseWalFileName('000000020000000000000003.partial')?.kind, 'partial');
  assert.equal(parseWalFileName('000000010000000000000002.00000028.backup')?.kind, 'backup');
  assert.equal(parseWalFileName('00000002.history')?.kind, 'history');
  for (const bad of ['../../etc/passwd', 'pg_wal/000000010000000000000001', '000000010000000000000001 ', '00000001000000000000000g', 'RECOVERYXLOG', '', '.history']) {
    assert.equal(parseWalFileName(bad), undefined, bad);
    assert.throws(() => requireWalFileName(bad), (e: unknown) => e instanceof PgarkError && e.code === 'USAGE');
  }
});

test('segment arithmetic across a log boundary, for 16 MiB and 64 MiB segments', () => {
  assert.equal(segmentName(1, 255, SEG), '0000000100000000000000FF');
  assert.equal(segmentName(1, 256, SEG), '000000010000000100000000');
  assert.equal(segmentNumber(parseWalFileName('000000010000000100000000')!, SEG), 256);
  assert.equal(segmentName(3, 64, 64 * 1024 * 1024), '000000030000000100000000');
  assert.equal(formatLsn(parseLsn('16/B374D848')), '16/B374D848');
});

function header(sysid: bigint, segSize: number, pageAddress: bigint): Buffer {
  const data = Buffer.alloc(segSize);
  data.writeUInt16LE(0xd10d, 0);
  data.writeUInt16LE(0x0002, 2);
  data.writeUInt32LE(1, 4);
  data.writeBigUInt64LE(pageAddress, 8);
  data.writeBigUInt64LE(sysid, 24);
  data.writeUInt32LE(segSize, 32);
  data.writeUInt32LE(8192, 36);
  return data;
}

test('segment header checks: system identifier, size, page address', () => {
  const size = 1024 * 1024;
  const expected = { systemIdentifier: '7300000000000000001', walSegmentSize: size };
  const file = parseWalFileName('000000010000000000000003')!;
  checkSegmentHeader(file, header(7300000000000000001n, size, 3n * BigInt(size)), expected);
  assert.throws(() => checkSegmentHeader(file, header(7300000000000000002n, size, 3n * BigInt(size)), expected), (e: unknown) => e instanceof PgarkError && e.code === 'REPO_MISMATCH');
  assert.throws(() => checkSegmentHeader(file, header(7300000000000000001n, size, 4n * BigInt(size)), expected), /starts at LSN/);
  assert.throws(() => checkSegmentHeader(file, Buffer.alloc(size), expected), /no valid WAL segment header/);
  checkSegmentHeader(parseWalFileName('00000002.history')!, Buffer.from('1\t0/3000000\tno recovery target specified\n'), expected);
});

test('WAL object keys carry name and SHA-256 and parse back', () => {
  for (const name of ['000000010000000000000001', '000000010000000000000001.partial', '000000010000000000000002.00000028.backup', '00000002.history']) {
    const key = walObjectKey(name, sha('a'), '.zst.age');
    assert.deepEqual(parseWalObjectKey(key), { name, sha256: sha('a') });
  }
  assert.equal(walObjectKey('00000002.history', sha('b'), ''), `wal/history/00000002.history-${sha('b')}`);
  assert.equal(parseWalObjectKey('wal/0000000100000000/../x'), undefined);
});

test('coverage: runs, gaps and conflicts per timeline', () => {
  const objects = [1, 2, 3, 7, 8, 255, 256].map((n) => ({ name: segmentName(1, n, SEG), sha256: sha('a') }));
  objects.push({ name: segmentName(1, 2, SEG), sha256: sha('b') });
  objects.push({ name: '00000002.history', sha256: sha('c') }, { name: segmentName(2, 9, SEG), sha256: sha('c') });
  const coverage = coverageOf(objects, SEG);
  assert.deepEqual(coverage.conflicts, [segmentName(1, 2, SEG)]);
  const tl1 = coverage.timelines[0]!;
  assert.deepEqual(tl1.runs.map((r) => [r.first, r.last, r.count]), [
    [segmentName(1, 1, SEG), segmentName(1, 3, SEG), 3],
    [segmentName(1, 7, SEG), segmentName(1, 8, SEG), 2],
    [segmentName(1, 255, SEG), segmentName(1, 256, SEG), 2],
  ]);
  assert.deepEqual(tl1.gaps.map((g) => g.count), [3, 246]);
  assert.equal(coverage.timelines[1]!.history, true);
  assert.equal(coverage.timelines[1]!.segments, 1);
});
