// The pure parts of `pgark verify`: time-range arithmetic for "no longer recoverable", the
// CRC-32 of blobs without a check of their own, and extents keeping that CRC when sliced.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sliceExtents } from '../../src/repo/backup-files.ts';
import type { Extent } from '../../src/repo/backup-manifest.ts';
import { blobChecksum, decodeBlob, needsBlobChecksum } from '../../src/repo/blob-check.ts';
import { mergeRanges, subtractRanges } from '../../src/repo/verify.ts';
import { isPgarkError } from '../../src/errors.ts';

const r = (from: string, to: string) => ({ from, to });

test('mergeRanges sorts and merges overlapping ranges', () => {
  assert.deepEqual(mergeRanges([r('05', '07'), r('01', '03'), r('02', '04'), r('07', '08')]), [r('01', '04'), r('05', '08')]);
  assert.deepEqual(mergeRanges([]), []);
});

test('subtractRanges leaves what the second set does not cover', () => {
  assert.deepEqual(subtractRanges([r('01', '10')], [r('03', '05')]), [r('01', '03'), r('05', '10')]);
  assert.deepEqual(subtractRanges([r('01', '10')], [r('01', '10')]), []);
  assert.deepEqual(subtractRanges([r('01', '10')], []), [r('01', '10')]);
  assert.deepEqual(subtractRanges([r('01', '10')], [r('00', '04'), r('08', '12')]), [r('04', '08')]);
});

test('blobs of compression none, unencrypted, carry a CRC-32 that decodeBlob checks', async () => {
  assert.equal(needsBlobChecksum({ codec: 'none', recipients: [] }), true);
  assert.equal(needsBlobChecksum({ codec: 'zstd', recipients: [] }), false);
  assert.equal(needsBlobChecksum({ codec: 'none', recipients: ['age1x'] }), false);
  const blob = Buffer.from('some blocks'.repeat(100));
  const checksum = blobChecksum(blob);
  assert.match(checksum, /^[0-9a-f]{8}$/);
  assert.deepEqual(await decodeBlob(blob, 'packs/ab/abababababababababababab', { packId: 'p', offset: 0, checksum }, []), blob);
  const damaged = Buffer.from(blob);
  damaged[10] = damaged[10]! ^ 1;
  await assert.rejects(decodeBlob(damaged, 'packs/ab/abababababababababababab', { packId: 'p', offset: 7, checksum }, []),
    (e) => isPgarkError(e, 'INTEGRITY') && /pack p \(offset 7\) is damaged: CRC-32 mismatch/.test(e.message));
});

test('sliceExtents keeps the CRC-32 of the blob', () => {
  const extents: Extent[] = [[0, 128, 'p', 0, 100, 0, 'deadbeef'], [128, 10, 'q', 0, 50, 0]];
  assert.deepEqual(sliceExtents(extents, 100, 30), [[100, 28, 'p', 0, 100, 100, 'deadbeef'], [128, 2, 'q', 0, 50, 0]]);
});
