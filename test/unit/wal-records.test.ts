// The WAL record decoder (src/postgres/wal-records.ts) on segments written here byte by byte,
// for the cases real WAL produces rarely or at random: headers split between pages and between
// segments, compressed images with holes in both layouts, the other header ids, storage and
// database records, a WAL switch, and segments that are not whole. (integration/
// wal-block-map.test.ts checks the decoder against real PostgreSQL 13, 15 and 18.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { joinSplitRecord, segmentChanges, WalChanges } from '../../src/postgres/wal-records.ts';

const PAGE = 8192;
const MAGIC_15 = 0xd110;
const MAGIC_13 = 0xd106;

interface BlockRef { spc?: number; db?: number; rel?: number; fork?: number; block: number; sameRel?: boolean; image?: { length: number; info: number; holeLength?: boolean }; data?: number }

/** The bytes of one record: XLogRecord, block headers, main-data header, then block data and main data. */
function record(opts: { rmid?: number; info?: number; blocks?: BlockRef[]; main?: Buffer; origin?: boolean; toplevel?: boolean; pad?: number }): Buffer {
  const headers: Buffer[] = [];
  const payload: Buffer[] = [];
  if (opts.origin) headers.push(Buffer.from([253, 1, 0]));
  if (opts.toplevel) headers.push(Buffer.from([252, 7, 0, 0, 0]));
  (opts.blocks ?? []).forEach((b, id) => {
    const image = b.image;
    const flags = (b.fork ?? 0) | (image ? 0x10 : 0) | (b.data ? 0x20 : 0) | (b.sameRel ? 0x80 : 0);
    const h: number[] = [id, flags, (b.data ?? 0) & 0xff, (b.data ?? 0) >> 8];
    if (image) {
      h.push(image.length & 0xff, image.length >> 8, 0, 0, image.info);
      if (image.holeLength) h.push(0x10, 0x00); // a compressed image with a hole says how long the hole is
      payload.push(Buffer.alloc(image.length, 0xee));
    }
    if (!b.sameRel) {
      const rel = Buffer.alloc(12);
      rel.writeUInt32LE(b.spc ?? 1663, 0);
      rel.writeUInt32LE(b.db ?? 5, 4);
      rel.writeUInt32LE(b.rel ?? 16384, 8);
      h.push(...rel);
    }
    const block = Buffer.alloc(4);
    block.writeUInt32LE(b.block);
    h.push(...block);
    headers.push(Buffer.from(h));
    if (b.data) payload.push(Buffer.alloc(b.data, 0xdd));
  });
  const main = opts.main ?? Buffer.alloc(opts.pad ?? 8, 0xaa);
  if (main.length < 256) headers.push(Buffer.from([255, main.length]));
  else {
    const long = Buffer.alloc(5);
    long[0] = 254;
    long.writeUInt32LE(main.length, 1);
    headers.push(long);
  }
  const body = Buffer.concat([...headers, ...payload, main]);
  const head = Buffer.alloc(24);
  head.writeUInt32LE(24 + body.length, 0);
  head[16] = opts.info ?? 0;
  head[17] = opts.rmid ?? 10; // heap
  return Buffer.concat([head, body]);
}

/**
 * Segments of `pages` pages at LSN segno × size, holding `records` one after the other
 * (MAXALIGNed), split across pages and segments with continuation headers as PostgreSQL does.
 */
function writeSegments(records: Buffer[], opts: { pages: number; count: number; magic?: number; startOffset?: number }): Buffer[] {
  const size = opts.pages * PAGE;
  const stream = Buffer.alloc(size * opts.count); // the WAL as one address space
  const magic = opts.magic ?? MAGIC_15;
  // Page headers first; record bytes fill the rest.
  const headerSize = (pos: number) => (pos % size === 0 ? 40 : 24);
  let pos = 40 + (opts.startOffset ?? 0);
  const remainingAt = new Map<number, number>(); // page start -> xlp_rem_len
  for (const rec of records) {
    if (pos % PAGE === 0) pos += headerSize(pos);
    let left = rec.length;
    let from = 0;
    while (left > 0) {
      const room = PAGE - (pos % PAGE);
      const step = Math.min(room, left);
      rec.copy(stream, pos, from, from + step);
      pos += step;
      from += step;
      left -= step;
      if (left > 0) {
        remainingAt.set(pos, left);
        pos += headerSize(pos);
      }
    }
    pos = (pos + 7) & ~7;
  }
  for (let page = 0; page < stream.length; page += PAGE) {
    stream.writeUInt16LE(magic, page);
    const rem = remainingAt.get(page) ?? 0;
    stream.writeUInt16LE((page % size === 0 ? 0x0002 : 0) | (rem > 0 ? 0x0001 : 0), page + 2);
    stream.writeUInt32LE(1, page + 4);
    stream.writeBigUInt64LE(BigInt(size * 5 + page), page + 8); // segment 5 onwards
    stream.writeUInt32LE(rem, page + 16);
    if (page % size === 0) {
      stream.writeBigUInt64LE(123n, page + 24);
      stream.writeUInt32LE(size, page + 32);
      stream.writeUInt32LE(PAGE, page + 36);
    }
  }
  return Array.from({ length: opts.count }, (_, i) => stream.subarray(i * size, (i + 1) * size));
}

function blocksOf(changes: WalChanges): string[] {
  const out: string[] = [];
  for (const [key, fork] of changes.forks) for (const block of new Set(fork.blocks)) out.push(`${key}:${block}`);
  return out.sort();
}

const filler = (n: number) => Array.from({ length: n }, (_, i) => record({ blocks: [{ rel: 20000, block: i }] }));

test('block references: relations, forks, "same relation", images with and without holes, data, origin and top-level xid', () => {
  const records = [
    record({ blocks: [{ block: 1 }, { block: 2, sameRel: true }, { rel: 16390, fork: 2, block: 0 }] }),
    // 15+: 0x01 has a hole, 0x04 pglz-compressed (so hole_length follows), 0x02 apply
    record({ origin: true, toplevel: true, blocks: [{ spc: 1664, db: 0, rel: 1262, block: 3, image: { length: 3000, info: 0x01 | 0x04, holeLength: true }, data: 20 }] }),
    record({ blocks: [{ block: 9, image: { length: 8000, info: 0x01 | 0x02 } }], main: Buffer.alloc(300, 1) }),
  ];
  const [segment] = writeSegments(records, { pages: 4, count: 1 });
  const decoded = segmentChanges(segment!);
  assert.equal(decoded.complete, false, 'the rest of the segment is zeros: not a whole segment');
  assert.deepEqual(blocksOf(decoded.changes), ['1663/5/16384/0:1', '1663/5/16384/0:2', '1663/5/16384/0:9', '1663/5/16390/2:0', '1664/0/1262/0:3']);
});

test('a whole segment (ended by a WAL switch); records split across pages; the rest after the switch is ignored', () => {
  const records = [...filler(300), record({ rmid: 0, info: 0x40 }), record({ blocks: [{ rel: 99999, block: 1 }] })];
  const [segment] = writeSegments(records, { pages: 4, count: 1 });
  const decoded = segmentChanges(segment!);
  assert.equal(decoded.complete, true);
  const blocks = blocksOf(decoded.changes);
  assert.equal(blocks.length, 300);
  assert.ok(!blocks.some((b) => b.includes('99999')), 'nothing after the switch');
});

test('storage and database records: creation and truncation limits, databases', () => {
  const create = Buffer.alloc(16);
  create.writeUInt32LE(1663, 0); create.writeUInt32LE(5, 4); create.writeUInt32LE(16500, 8); create.writeInt32LE(0, 12);
  const truncate = Buffer.alloc(20);
  truncate.writeUInt32LE(42, 0); truncate.writeUInt32LE(1663, 4); truncate.writeUInt32LE(5, 8); truncate.writeUInt32LE(16384, 12); truncate.writeInt32LE(1 | 2 | 4, 16);
  const dropDb = Buffer.alloc(12);
  dropDb.writeUInt32LE(16418, 0);
  const records = [record({ rmid: 2, info: 0x10, main: create }), record({ rmid: 2, info: 0x20, main: truncate }), record({ rmid: 4, info: 0x20, main: dropDb }), record({ rmid: 0, info: 0x40 })];
  const decoded = segmentChanges(writeSegments(records, { pages: 2, count: 1 })[0]!);
  assert.equal(decoded.complete, true);
  assert.equal(decoded.changes.forks.get('1663/5/16500/0')?.limit, 0);
  assert.equal(decoded.changes.forks.get('1663/5/16384/0')?.limit, 42);
  assert.equal(decoded.changes.forks.get('1663/5/16384/1')?.limit, 0, 'free space map: from the start');
  assert.equal(decoded.changes.forks.get('1663/5/16384/2')?.limit, 0, 'visibility map: from the start');
  assert.deepEqual([...decoded.changes.databases], [16418]);
});

test('PostgreSQL 13-14 image layout: 0x02 is "compressed" (hole length follows), 0x04 "apply"', () => {
  const records = [
    record({ blocks: [{ block: 7, image: { length: 3000, info: 0x01 | 0x02, holeLength: true } }, { block: 8, sameRel: true, image: { length: 8000, info: 0x01 | 0x04 } }] }),
    record({ rmid: 0, info: 0x40 }),
  ];
  const decoded = segmentChanges(writeSegments(records, { pages: 2, count: 1, magic: MAGIC_13 })[0]!);
  assert.equal(decoded.complete, true);
  assert.deepEqual(blocksOf(decoded.changes), ['1663/5/16384/0:7', '1663/5/16384/0:8']);
  // Read with the 15+ layout, the lengths no longer add up: refused, never silently misread.
  assert.equal(segmentChanges(writeSegments(records, { pages: 2, count: 1, magic: MAGIC_15 })[0]!).complete, false);
});

test('a record whose headers straddle two segments is decoded from the tail of one and the head of the next', () => {
  // Fill segment 1 so that a record with many block references starts 40 bytes before its end.
  const big = record({ blocks: Array.from({ length: 20 }, (_, i) => ({ rel: 30000 + i, block: 1000 + i })) });
  for (let fill = 0; fill < 400; fill++) {
    const records = [...filler(fill), big, ...filler(30), record({ rmid: 0, info: 0x40 })];
    const [first, second] = writeSegments(records, { pages: 2, count: 2 });
    const a = segmentChanges(first!);
    if (!a.tail || !a.tail.equals(big.subarray(0, a.tail.length))) continue; // not this record split
    const b = segmentChanges(second!);
    assert.equal(a.complete, true);
    assert.equal(b.complete, true);
    assert.ok(b.head, 'the next segment starts with the rest of the record');
    assert.ok(!blocksOf(a.changes).some((x) => x.startsWith('1663/5/30000/')), 'not decoded from a partial header');
    const joined = new WalChanges();
    assert.equal(joinSplitRecord(a.tail, b.head, MAGIC_15, joined), true);
    assert.equal(blocksOf(joined).length, 20);
    assert.ok(blocksOf(joined).includes('1663/5/30019/0:1019'));
    // the records after it are in the second segment's changes
    assert.equal(blocksOf(b.changes).length, 30);
    // and the wrong head does not join
    assert.equal(joinSplitRecord(a.tail, Buffer.alloc(64, 0xff), MAGIC_15, new WalChanges()), false);
    return;
  }
  assert.fail('no filling put the record across the segment boundary');
});

test('segments that are not whole WAL: wrong page address, zero length inside, no header', () => {
  const [segment] = writeSegments([...filler(400), record({ rmid: 0, info: 0x40 })], { pages: 4, count: 1 });
  const moved = Buffer.from(segment!);
  moved.writeBigUInt64LE(0n, PAGE + 8); // a recycled page
  assert.equal(segmentChanges(moved).complete, false);
  const cut = Buffer.from(segment!);
  cut.fill(0, PAGE * 2); // WAL ends inside the segment: a partial file
  assert.equal(segmentChanges(cut).complete, false);
  assert.equal(segmentChanges(Buffer.alloc(4 * PAGE)).complete, false);
  // stopAt: records from that LSN on are not read (a segment being written)
  const stop = BigInt(4 * PAGE * 5 + PAGE);
  const partial = segmentChanges(cut, stop);
  assert.equal(partial.complete, true);
  assert.ok(blocksOf(partial.changes).length > 0);
});

test('a segment that starts inside a record continuing over several of its pages', () => {
  const long = record({ blocks: [{ rel: 40000, block: 1 }], main: Buffer.alloc(5 * PAGE, 0x55) });
  const records = [...filler(250), long, ...filler(20).map((_, i) => record({ blocks: [{ rel: 41000, block: i }] })), record({ rmid: 0, info: 0x40 })];
  const [first, second] = writeSegments(records, { pages: 4, count: 2 });
  const a = segmentChanges(first!);
  const b = segmentChanges(second!);
  assert.equal(a.complete, true);
  assert.ok(blocksOf(a.changes).includes('1663/5/40000/0:1'), 'decoded where it starts');
  assert.equal(b.complete, true);
  assert.ok(b.head && b.head.length === 1024, 'the first 1,024 bytes of the rest kept');
  assert.equal(blocksOf(b.changes).filter((x) => x.startsWith('1663/5/41000/')).length, 20, 'the records after it');
});
