// Data checksums of many pages at once (WebAssembly SIMD, src/postgres/page-checksums.ts) agree
// with the scalar implementation of PostgreSQL's algorithm (page.ts) page by page.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { badChecksumPages } from '../../src/postgres/page-checksums.ts';
import { pageChecksum, storedChecksum } from '../../src/postgres/page.ts';
import { alignedBuffers } from '../../src/util/direct-io.ts';

function scalarBadPages(buffer: Buffer, bytes: number, blockSize: number, firstBlock: number): number[] {
  const bad: number[] = [];
  for (let i = 0; i < Math.floor(bytes / blockSize); i++) {
    const page = buffer.subarray(i * blockSize, (i + 1) * blockSize);
    if (page.readUInt16LE(14) !== 0 && pageChecksum(page, firstBlock + i) !== storedChecksum(page)) bad.push(i);
  }
  return bad;
}

test('badChecksumPages finds exactly the pages whose stored checksum is wrong', () => {
  for (const blockSize of [8192, 16384, 4096]) {
    const pages = 64;
    const buffer = randomBytes(pages * blockSize + 100); // a partial page at the end is ignored
    for (let i = 0; i < pages; i++) {
      const page = buffer.subarray(i * blockSize, (i + 1) * blockSize);
      if (i % 7 === 0) page.writeUInt16LE(0, 14); // new page: no checksum
      else if (i % 3 !== 0) page.writeUInt16LE(pageChecksum(page, 131072 * 2 + i), 8); // correct
    }
    const bad = badChecksumPages(buffer, buffer.length, blockSize, 131072 * 2);
    assert.deepEqual(bad, scalarBadPages(buffer, buffer.length, blockSize, 131072 * 2));
    assert.ok(bad.length > 10 && bad.every((i) => i % 3 === 0 && i % 7 !== 0));
    // the caller's pages are not changed (pd_checksum is zeroed only in the module's copy)
    const copy = Buffer.from(buffer);
    badChecksumPages(buffer, buffer.length, blockSize, 0);
    assert.ok(copy.equals(buffer));
  }
});

test('pages in WebAssembly-memory buffers (backup read buffers) are checked in place, unchanged', () => {
  for (const blockSize of [8192, 16384]) {
    const pages = 64;
    const source = randomBytes(pages * blockSize);
    for (let i = 0; i < pages; i++) {
      const page = source.subarray(i * blockSize, (i + 1) * blockSize);
      if (i % 7 === 0) page.writeUInt16LE(0, 14);
      else if (i % 3 !== 0) page.writeUInt16LE(pageChecksum(page, 500 + i), 8);
    }
    // the second of three buffers of one memory: its pages start at a non-zero offset there
    const buffer = alignedBuffers(3, source.length)[1]!;
    source.copy(buffer);
    const bad = badChecksumPages(buffer, buffer.length, blockSize, 500);
    assert.deepEqual(bad, scalarBadPages(source, source.length, blockSize, 500));
    assert.ok(bad.length > 10);
    assert.ok(source.equals(buffer), 'pd_checksum is read as zero, not written');
  }
});
