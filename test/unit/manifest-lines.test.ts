// A manifest line written in pieces (a fragmented segment's runs to MBs) is exactly the line
// JSON.stringify makes, for short and long extent lists, with and without a hash and checksums.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { manifestLinePieces, type Extent, type ManifestEntry } from '../../src/repo/backup-manifest.ts';

function extents(count: number, checksum: boolean): Extent[] {
  return Array.from({ length: count }, (_, i): Extent => {
    const extent: Extent = [i * 2, 1, `pack${i % 7}.zst`, i * 100, 90, i % 128];
    if (checksum) extent.push((i * 7919).toString(16).padStart(8, '0'));
    return extent;
  });
}

test('manifest lines in pieces join to exactly the JSON line', () => {
  const entries: ManifestEntry[] = [
    { t: 'd', p: 'base', m: 0o700 },
    { t: 'l', p: 'pg_tblspc/16385', target: '/tmp/"x"\\' },
    { t: 'f', p: 'PG_VERSION', m: 0o600, s: 3, mt: 1, h: 'ab'.repeat(32), x: [[0, 1, 'p.zst', 0, 12, 0]] },
    { t: 'f', p: 'empty', m: 0o600, s: 0, mt: 1, x: [] },
  ];
  for (const count of [1023, 1024, 1025, 2048, 70_001]) {
    for (const checksum of [false, true]) {
      entries.push({ t: 'f', p: `base/5/"16396".1\\u0000extents`, m: 0o600, s: count * 16384, mt: 1_700_000_000_000, x: extents(count, checksum) });
      entries.push({ t: 'f', p: 'global/pg_control', m: 0o600, s: count * 16384, mt: 2, h: 'cd'.repeat(32), x: extents(count, checksum) });
    }
  }
  for (const entry of entries) {
    const pieces = [...manifestLinePieces(entry)];
    assert.equal(Buffer.concat(pieces).toString(), JSON.stringify(entry) + '\n');
    assert.deepEqual(JSON.parse(Buffer.concat(pieces).toString()), entry);
    if (entry.t === 'f' && entry.x.length > 2048) assert.ok(pieces.length > 2 && pieces.every((piece) => piece.length < 200_000), 'a long line comes in pieces');
  }
  const end = { t: 'end' as const, backupLabel: 'START WAL LOCATION: 0/2000028\n', tablespaceMap: '' };
  assert.equal(Buffer.concat([...manifestLinePieces(end)]).toString(), JSON.stringify(end) + '\n');
});
