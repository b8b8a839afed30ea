// The pure parts of base backups: slicing extents (incrementals reference runs of a base's
// blocks), the walk order the manifest merge-join relies on, which files are compared by page,
// which backup a restore target picks, and the recoverability window `pgark info` reports.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chooseBackup } from '../../src/commands/restore.ts';
import { isPgarkError } from '../../src/errors.ts';
import { comparePaths, isRelationDataFile } from '../../src/postgres/pgdata.ts';
import { segmentName } from '../../src/postgres/wal.ts';
import type { BackupSummary, Extent } from '../../src/repo/backup-manifest.ts';
import { sliceExtents } from '../../src/repo/backup-files.ts';
import { recoverability } from '../../src/repo/recoverability.ts';
import type { StoredWalObject } from '../../src/repo/wal-archive.ts';

// ---- sliceExtents ----------------------------------------------------------------------------

/** Block n of a file → [pack, offset, block in blob], or undefined, by brute force. */
function blockMap(extents: readonly Extent[], n: number): string | undefined {
  const hits = extents.filter(([first, count]) => n >= first && n < first + count);
  assert.ok(hits.length <= 1, `block ${n} is covered by ${hits.length} extents`);
  const e = hits[0];
  return e ? `${e[2]}@${e[3]}#${e[5] + (n - e[0])}` : undefined;
}

const EXTENTS: Extent[] = [
  [0, 128, 'a.zst', 0, 1000, 0],
  [128, 10, 'b.zst', 500, 300, 0],
  [140, 5, 'b.zst', 500, 300, 12], // a hole at 138-139; same blob, later blocks
  [145, 100, 'c.zst', 0, 9000, 28],
];

test('sliceExtents keeps exactly the blocks asked for, re-based inside their blobs', () => {
  for (const [from, count] of [[0, 0], [0, 1], [0, 245], [5, 10], [127, 2], [130, 9], [137, 5], [138, 2], [139, 7], [144, 1], [200, 100], [245, 3], [300, 10]] as const) {
    const sliced = sliceExtents(EXTENTS, from, count);
    for (let n = 0; n < 260; n++) {
      const expected = n >= from && n < from + count ? blockMap(EXTENTS, n) : undefined;
      assert.equal(blockMap(sliced, n), expected, `slice(${from}, ${count}) block ${n}`);
    }
    for (const [, blocks, , , , skip] of sliced) assert.ok(blocks > 0 && skip >= 0);
    // slices stay sorted and never overlap
    for (let i = 1; i < sliced.length; i++) assert.ok(sliced[i]![0] >= sliced[i - 1]![0] + sliced[i - 1]![1]);
  }
  assert.deepEqual(sliceExtents(EXTENTS, 130, 3), [[130, 3, 'b.zst', 500, 300, 2]]);
  assert.deepEqual(sliceExtents(EXTENTS, 137, 5), [[137, 1, 'b.zst', 500, 300, 9], [140, 2, 'b.zst', 500, 300, 12]]);
  assert.deepEqual(sliceExtents([], 0, 100), []);
});

test('sliceExtents of a slice is a slice (incremental of an incremental)', () => {
  const once = sliceExtents(EXTENTS, 100, 100);
  const twice = sliceExtents(once, 120, 30);
  assert.deepEqual(twice, sliceExtents(EXTENTS, 120, 30));
});

// ---- comparePaths: the order of the sorted depth-first walk ------------------------------------

/** The walk order pgdata.ts produces: names sorted per directory, a directory before its contents. */
function walkOrder(paths: readonly string[]): string[] {
  interface Node { name: string; children: Map<string, Node> }
  const root: Node = { name: '', children: new Map() };
  for (const p of paths) {
    let node = root;
    for (const part of p.split('/')) {
      let next = node.children.get(part);
      if (!next) node.children.set(part, (next = { name: part, children: new Map() }));
      node = next;
    }
  }
  const out: string[] = [];
  const visit = (node: Node, prefix: string) => {
    for (const name of [...node.children.keys()].sort()) {
      const path = prefix ? `${prefix}/${name}` : name;
      out.push(path);
      visit(node.children.get(name)!, path);
    }
  };
  visit(root, '');
  return out;
}

test('comparePaths sorts like the depth-first walk with names sorted per directory', () => {
  const paths = [
    'base', 'base/1', 'base/1/1259', 'base/1/1259.1', 'base/1/1259_fsm', 'base/1/PG_VERSION', 'base/10', 'base/10/112', 'base/5', 'base/5/2',
    'a', 'a/b', 'a.x', 'a-b', 'a-b/c', 'global', 'global/1262', 'global/pg_control', 'pg_tblspc', 'pg_tblspc/16385', 'pg_tblspc/16385/PG_15_202209061',
    'pg_tblspc/16385/PG_15_202209061/5', 'pg_tblspc/16385/PG_15_202209061/5/16386', 'pg_wal', 'pg_wal/archive_status', 'PG_VERSION', 'postgresql.auto.conf', 'Zeta', 'z',
  ];
  const expected = walkOrder(paths);
  const sorted = [...paths].sort(comparePaths);
  assert.deepEqual(sorted, expected);
  assert.equal(comparePaths('base/1', 'base/1'), 0);
  assert.ok(comparePaths('a', 'a/b') < 0 && comparePaths('a/b', 'a') > 0, 'a directory comes before its contents');
  assert.ok(comparePaths('a/b', 'a.x') < 0, "a's contents come before a sibling that sorts after a");
  assert.ok(comparePaths('base/10', 'base/5') < 0, 'names compare as strings, not numbers');
  // antisymmetric and transitive on this set
  for (const x of paths) for (const y of paths) assert.equal(Math.sign(comparePaths(x, y)) + Math.sign(comparePaths(y, x)), 0, `${x} vs ${y}`);
});

// ---- isRelationDataFile ------------------------------------------------------------------------

test('isRelationDataFile: main-fork segments of relations only', () => {
  for (const yes of ['global/1262', 'base/1/1259', 'base/16384/16385.1', 'base/5/2619.12', 'pg_tblspc/16390/PG_15_202209061/5/16391', 'pg_tblspc/16390/PG_18_202506291/16384/16391.3']) {
    assert.equal(isRelationDataFile(yes), true, yes);
  }
  for (const no of [
    'global/pg_control', 'global/pg_filenode.map', 'base/1/PG_VERSION', 'base/1/pg_filenode.map', 'base/1/1259_fsm', 'base/1/1259_vm', 'base/1/1259_init',
    'base/1/1259_vm.1', 'base/1/t3_16384', 'base/1', 'base/1/1259/x', 'base/pgsql_tmp/pgsql_tmp123.0', 'pg_xact/0000', 'pg_multixact/offsets/0000',
    'pg_tblspc/16390/PG_15_202209061/5/PG_VERSION', 'pg_tblspc/16390/16391', 'pg_wal/000000010000000000000001', 'PG_VERSION', 'base/1/1259.', 'base/x/1259',
    '/base/1/1259', 'base/1/1259 ', 'xbase/1/1259',
  ]) {
    assert.equal(isRelationDataFile(no), false, no);
  }
});

// ---- chooseBackup ------------------------------------------------------------------------------

function summary(id: string, startLsn: string, stopLsn: string, startedAt: string, stoppedAt: string, extra: Partial<BackupSummary> = {}): BackupSummary {
  return {
    format: 1, id, type: id.endsWith('F') ? 'full' : 'incremental', base: null, systemIdentifier: '1', pgMajor: 15, timeline: 1,
    startLsn, stopLsn, startWal: '', stopWal: '', startedAt, stoppedAt, blockSize: 8192, fromStandby: false,
    manifestKey: `backups/${id}/manifest.jsonl.zst`, packs: [], files: 0, size: 0, storedBytes: 0, blocksStored: 0, blocksReferenced: 0,
    durationMs: 0, tablespaces: [], keep: false, ...extra,
  };
}

const B1 = summary('20261121T100000F', '0/2000028', '0/2000138', '2026-11-21T10:00:00.000Z', '2026-11-21T10:00:05.000Z');
const B2 = summary('20261121T110000I', '0/5000028', '0/5000138', '2026-11-21T11:00:00.000Z', '2026-11-21T11:00:05.000Z');
const B3 = summary('20261121T120000I', '0/9000028', '0/A000100', '2026-11-21T12:00:00.000Z', '2026-11-21T12:00:09.000Z');
const ALL = [B1, B2, B3];

test('chooseBackup: the newest backup that ended before the target', () => {
  const pick = (kind: 'latest' | 'time' | 'lsn' | 'xid' | 'name' | 'immediate', value?: string, set?: string) => chooseBackup(ALL, { kind, value }, set).id;
  assert.equal(pick('latest'), B3.id);
  assert.equal(pick('immediate'), B3.id);
  assert.equal(pick('xid', '1234'), B1.id, 'backups without startXmin cannot place an xid: the oldest reaches it');
  assert.equal(pick('name', 'rp'), B1.id, 'a restore point cannot be placed without reading WAL: the oldest reaches it');
  assert.equal(pick('time', '2026-11-21 10:00:05+00'), B1.id, 'a backup that stopped exactly at the target qualifies');
  assert.equal(pick('time', '2026-11-21 11:00:04.999+00'), B1.id, 'still running at the target: the one before');
  assert.equal(pick('time', '2026-11-21 11:00:05.001+00'), B2.id);
  assert.equal(pick('time', '2026-11-21T13:00:00+01:00'), B2.id, 'time zones are honoured (13:00+01 = 12:00Z, B3 ends 12:00:09)');
  assert.equal(pick('time', '2030-01-01 00:00:00+00'), B3.id);
  assert.equal(pick('lsn', '0/2000138'), B1.id);
  assert.equal(pick('lsn', '0/A0000FF'), B2.id);
  assert.equal(pick('lsn', '0/A000100'), B3.id);
  assert.equal(pick('lsn', 'FF/0'), B3.id);
  assert.equal(pick('latest', undefined, B2.id), B2.id, '--set wins');
  assert.equal(pick('time', '2026-11-21 10:30:00+00', B3.id), B3.id, '--set wins over the target');
  // the input order does not matter
  assert.equal(chooseBackup([B3, B1, B2], { kind: 'time', value: '2026-11-21 11:30:00+00' }, undefined).id, B2.id);
});

test('chooseBackup: --target-xid picks the newest backup that started before the transaction could commit', () => {
  const X1 = { ...B1, startXmin: '1000' };
  const X2 = { ...B2, startXmin: '5000' };
  const X3 = { ...B3, startXmin: '9000' };
  const pick = (xid: string, backups: BackupSummary[] = [X1, X2, X3]) => chooseBackup(backups, { kind: 'xid', value: xid }, undefined).id;
  assert.equal(pick('1000'), B1.id, 'running at the start of B1');
  assert.equal(pick('4999'), B1.id);
  assert.equal(pick('5000'), B2.id);
  assert.equal(pick('100000'), B3.id);
  assert.equal(pick('6000', [X1, X2, B3]), B2.id, 'a newest backup without startXmin is passed over');
  assert.throws(() => pick('999', [X1, X2]), (e: unknown) => isPgarkError(e, 'NOT_FOUND') && /ended before the oldest backup/.test(e.message));
  assert.equal(pick('999', [B1, X2]), B1.id, 'an old backup without startXmin: the oldest');
  // across an xid wraparound (epoch 3 to 4)
  const Y1 = { ...B1, startXmin: String(3n * 2n ** 32n + 4294967000n) };
  const Y2 = { ...B2, startXmin: String(4n * 2n ** 32n + 100n) };
  assert.equal(pick('4294967100', [Y1, Y2]), B1.id, 'a 32-bit xid from just before the wraparound');
  assert.equal(pick('150', [Y1, Y2]), B2.id, 'a 32-bit xid from just after it');
  assert.equal(pick(String(4n * 2n ** 32n + 99n), [Y1, Y2]), B1.id, 'a 64-bit xid');
});

test('chooseBackup: clear errors when nothing fits', () => {
  const notFound = (pattern: RegExp) => (e: unknown) => isPgarkError(e, 'NOT_FOUND') && pattern.test(e.message);
  assert.throws(() => chooseBackup([], { kind: 'latest' }, undefined), notFound(/no backup/));
  assert.throws(() => chooseBackup(ALL, { kind: 'latest' }, '20261121T130000I'), notFound(/no backup 20261121T130000I/));
  assert.throws(() => chooseBackup(ALL, { kind: 'time', value: '2026-11-21 10:00:04+00' }, undefined), notFound(/earliest restorable time is 2026-11-21T10:00:05.000Z/));
  assert.throws(() => chooseBackup(ALL, { kind: 'lsn', value: '0/2000000' }, undefined), notFound(/earliest restorable LSN is 0\/2000138/));
});

// ---- recoverability ----------------------------------------------------------------------------

const SEG = 16 * 1024 * 1024;
const wal = (timeline: number, segno: number, at: string): StoredWalObject => {
  const name = segmentName(timeline, segno, SEG);
  return { key: `wal/x/${name}`, name, sha256: '0'.repeat(64), size: 100, lastModified: new Date(at) };
};

test('recoverability: each backup reaches the end of the unbroken WAL after its start', () => {
  const b1 = { ...B1, startWal: segmentName(1, 2, SEG), stopWal: segmentName(1, 2, SEG) };
  const b2 = { ...B2, startWal: segmentName(1, 5, SEG), stopWal: segmentName(1, 5, SEG) };
  const b3 = { ...B3, startWal: segmentName(1, 9, SEG), stopWal: segmentName(1, 10, SEG) };
  const segments = [
    wal(1, 2, '2026-11-21T10:00:06Z'), wal(1, 3, '2026-11-21T10:30:00Z'), // 4 is missing: b1 reaches 3
    wal(1, 5, '2026-11-21T11:00:06Z'), wal(1, 6, '2026-11-21T11:10:00Z'), wal(1, 7, '2026-11-21T11:20:00Z'), wal(1, 8, '2026-11-21T11:30:00Z'),
    wal(1, 9, '2026-11-21T12:00:04Z'), // 10 (b3's stop segment) is missing: b3 does not restore
    wal(2, 11, '2026-11-21T13:00:00Z'), // another timeline does not continue timeline 1
  ];
  // history files and .partial/.backup objects are not segments
  const extra: StoredWalObject[] = [
    { key: 'wal/history/00000002.history', name: '00000002.history', sha256: '', size: 1, lastModified: new Date('2026-11-21T14:00:00Z') },
    { key: 'x', name: `${segmentName(1, 4, SEG)}.partial`, sha256: '', size: 1, lastModified: new Date('2026-11-21T14:00:00Z') },
  ];
  const w = recoverability([b1, b2, b3], [...extra, ...segments], SEG);
  assert.deepEqual(w.backups, [
    { id: b1.id, consistent: true, reachesWal: segmentName(1, 3, SEG), reachesTime: '2026-11-21T10:30:00.000Z' },
    { id: b2.id, consistent: true, reachesWal: segmentName(1, 9, SEG), reachesTime: '2026-11-21T12:00:04.000Z' },
    { id: b3.id, consistent: false, reachesWal: undefined, reachesTime: undefined },
  ]);
  assert.equal(w.earliest, b1.stoppedAt);
  assert.equal(w.latest, '2026-11-21T12:00:04.000Z');

  // the stop segment archived before the backup's stop time: the backup's own stop time counts
  const early = recoverability([b1], [wal(1, 2, '2026-11-21T10:00:01Z')], SEG);
  assert.equal(early.backups[0]!.reachesTime, b1.stoppedAt);

  // no WAL at all / no backups
  const none = recoverability([b1, b2], [], SEG);
  assert.equal(none.earliest, undefined);
  assert.equal(none.latest, undefined);
  assert.ok(none.backups.every((b) => !b.consistent));
  assert.deepEqual(recoverability([], segments, SEG), { earliest: undefined, latest: undefined, backups: [] });

  // the oldest backup unusable: the window starts at the next one
  const later = recoverability([b1, b2], segments.filter((s) => s.name !== segmentName(1, 2, SEG)), SEG);
  assert.equal(later.earliest, b2.stoppedAt);
  assert.equal(later.backups[0]!.consistent, false);
});

test('recoverability across a log boundary (segment numbering, not names)', () => {
  const start = segmentName(1, 255, SEG);
  const b = { ...B1, startWal: start, stopWal: segmentName(1, 256, SEG) };
  assert.equal(b.stopWal, '000000010000000100000000');
  const w = recoverability([b], [wal(1, 255, '2026-11-21T10:00:06Z'), wal(1, 256, '2026-11-21T10:00:07Z'), wal(1, 257, '2026-11-21T10:40:00Z')], SEG);
  assert.equal(w.backups[0]!.reachesWal, segmentName(1, 257, SEG));
  assert.equal(w.latest, '2026-11-21T10:40:00.000Z');
});
