// ChangedBlocks (src/repo/wal-block-map.ts): the union of WAL changes an incremental backup asks
// about per data file — paths to relation forks, 1 GiB segment files, limits, whole databases,
// and the switch from a listed set to bitmaps as a fork's changed blocks grow.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WalChanges } from '../../src/postgres/wal-records.ts';
import { ChangedBlocks } from '../../src/repo/wal-block-map.ts';

const SEG = 131072; // blocks per 1 GiB relation segment file

test('relation files map to their fork and blocks: base, global, tablespaces, segment files', () => {
  const wal = new WalChanges();
  wal.addBlock(1663, 5, 16384, 0, 7);
  wal.addBlock(1663, 5, 16384, 0, SEG + 3); // block 3 of 16384.1
  wal.addBlock(1663, 5, 16384, 1, 9); // the free space map: not a main fork
  wal.addBlock(1664, 0, 1262, 0, 0);
  wal.addBlock(16500, 5, 16600, 0, 2);
  const changed = new ChangedBlocks();
  changed.add(wal);
  const blocks = (path: string, upTo = 10) => {
    const c = changed.forFile(path);
    assert.ok(c && c.kind === 'blocks', path);
    return Array.from({ length: upTo }, (_, i) => i).filter((b) => c.changed(b));
  };
  assert.deepEqual(blocks('base/5/16384'), [7]);
  assert.deepEqual(blocks('base/5/16384.1'), [3]);
  assert.deepEqual(blocks('base/5/16384.2'), []);
  assert.deepEqual(blocks('global/1262'), [0]);
  assert.deepEqual(blocks('pg_tblspc/16500/PG_15_202209061/5/16600'), [2]);
  assert.deepEqual(blocks('base/5/99999'), [], 'a relation the WAL never named: nothing changed');
  assert.equal(changed.forFile('base/5/16384_fsm'), undefined, 'other forks are not relation data files here');
  assert.equal(changed.forFile('pg_xact/0000'), undefined);
});

test('limits (creation, truncation) per segment file, and whole databases', () => {
  const wal = new WalChanges();
  wal.addLimit(1663, 5, 16384, 0, SEG + 100); // truncated to 1 GiB + 100 blocks, then maybe extended
  wal.addLimit(1663, 5, 16390, 0, 0); // created
  wal.databases.add(16418);
  const changed = new ChangedBlocks();
  changed.add(wal);
  const first = changed.forFile('base/5/16384');
  assert.ok(first?.kind === 'blocks' && first.limit === SEG + 100);
  const second = changed.forFile('base/5/16384.1');
  assert.ok(second?.kind === 'blocks' && second.limit === 100);
  assert.deepEqual(changed.forFile('base/5/16384.2'), { kind: 'all' });
  assert.deepEqual(changed.forFile('base/5/16390'), { kind: 'all' });
  assert.deepEqual(changed.forFile('base/16418/1259'), { kind: 'all' });
  assert.deepEqual(changed.forFile('pg_tblspc/16500/PG_15_202209061/16418/16600'), { kind: 'all' });
});

test('many changed blocks of one fork (a listed set becomes bitmaps) and the stored summary form', () => {
  const wal = new WalChanges();
  const expected = new Set<number>();
  for (let i = 0; i < 5000; i++) {
    const block = (i * 7919) % (3 * SEG);
    wal.addBlock(1663, 5, 16384, 0, block);
    expected.add(block);
  }
  const changed = new ChangedBlocks();
  changed.add(wal);
  changed.addStored({ format: 1, segment: '000000010000000000000001', pageMagic: 0xd110, databases: [], forks: [['1663/5/16384/0', null, [5, 1, 1000]]] });
  for (const block of [5, 6, 1006]) expected.add(block);
  for (let file = 0; file < 3; file++) {
    const c = changed.forFile(`base/5/16384${file ? `.${file}` : ''}`);
    assert.ok(c?.kind === 'blocks');
    for (let b = 0; b < SEG; b += 1) {
      if (c.changed(b) !== expected.has(file * SEG + b)) assert.fail(`block ${file * SEG + b}: ${c.changed(b)}`);
    }
  }
});

test('anyChanged: whether any of a file\'s first blocks changed, listed and as bitmaps, per segment file', () => {
  const small = new WalChanges();
  small.addBlock(1663, 5, 16384, 0, 10);
  small.addBlock(1663, 5, 16384, 0, SEG + 7);
  const big = new WalChanges();
  for (let i = 0; i < 5000; i++) big.addBlock(1663, 5, 20000, 0, 2 * SEG + 100 + i * 3); // bitmaps, segment file .2 only
  big.addBlock(1663, 5, 20000, 0, 13); // and one block of the first
  for (const wal of [small, big]) {
    const changed = new ChangedBlocks();
    changed.add(wal);
    const any = (path: string, count: number) => {
      const c = changed.forFile(path);
      assert.ok(c?.kind === 'blocks', path);
      // the same answer as asking block by block
      let expected = false;
      for (let b = 0; b < count; b++) expected ||= c.changed(b);
      assert.equal(c.anyChanged(count), expected, `${path} [0, ${count})`);
      return c.anyChanged(count);
    };
    if (wal === small) {
      assert.equal(any('base/5/16384', 10), false);
      assert.equal(any('base/5/16384', 11), true);
      assert.equal(any('base/5/16384.1', 7), false);
      assert.equal(any('base/5/16384.1', 8), true);
      assert.equal(any('base/5/16384.2', SEG), false);
      assert.equal(any('base/5/99999', SEG), false, 'a relation the WAL never named');
    } else {
      assert.equal(any('base/5/20000', 13), false);
      assert.equal(any('base/5/20000', 14), true);
      assert.equal(any('base/5/20000.1', SEG), false, 'no bit in this segment file\'s bitmap');
      assert.equal(any('base/5/20000.2', 100), false);
      assert.equal(any('base/5/20000.2', 101), true);
      assert.equal(any('base/5/20000.2', 9), false);
      assert.equal(any('base/5/20000.3', SEG), false);
    }
  }
});
