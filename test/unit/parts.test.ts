import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { capacityOf, forEachPart, partSizeFor, readParts } from '../../src/storage/parts.ts';

const MiB = 1024 * 1024;

test('10,000 S3 parts reach 5 TiB from any legal first part size, with parts of at most 5 GiB', () => {
  for (const initial of [5 * MiB, 8 * MiB, 16 * MiB, 64 * MiB]) {
    const schedule = { initialPartSize: initial, maxPartSize: 5 * 1024 * MiB, maxParts: 10_000 };
    assert.ok(capacityOf(schedule) >= 5 * 1024 * 1024 * MiB, `capacity with ${initial / MiB} MiB first parts`);
    assert.ok(partSizeFor(9_999, schedule) <= 5 * 1024 * MiB);
  }
  // A fixed part size (the lib-storage way) would stop at 78 GiB with 8 MiB parts.
  assert.equal(8 * MiB * 10_000 < 80 * 1024 * MiB, true);
});

test('small streams use the first part size', () => {
  const schedule = { initialPartSize: 8 * MiB, maxPartSize: 5 * 1024 * MiB, maxParts: 10_000 };
  assert.equal(partSizeFor(0, schedule), 8 * MiB);
  assert.equal(partSizeFor(899, schedule), 8 * MiB);
  assert.equal(partSizeFor(900, schedule), 16 * MiB);
});

function randomChunks(total: number): Buffer[] {
  const data = Buffer.alloc(total);
  for (let i = 0; i < total; i++) data[i] = (i * 7 + 3) & 0xff;
  const chunks: Buffer[] = [];
  for (let offset = 0; offset < total; ) {
    const size = Math.min(total - offset, 1 + Math.floor(Math.random() * 5000));
    chunks.push(data.subarray(offset, offset + size));
    offset += size;
  }
  return chunks;
}

test('readParts cuts exact sizes and keeps every byte in order', async () => {
  for (const total of [0, 1, 999, 1000, 1001, 25_000]) {
    const chunks = randomChunks(total);
    const sizes: number[] = [];
    const out: Buffer[] = [];
    for await (const part of readParts(Readable.from(chunks), (i) => 1000 * (i < 3 ? 1 : 2))) {
      sizes.push(part.length);
      out.push(part);
    }
    assert.deepEqual(Buffer.concat(out), Buffer.concat(chunks));
    assert.ok(sizes.length >= 1);
    sizes.slice(0, -1).forEach((size, i) => assert.equal(size, 1000 * (i < 3 ? 1 : 2)));
    if (total > 0) assert.ok(sizes.at(-1)! > 0);
  }
});

test('forEachPart keeps order, bounds concurrency and reports the first failure after settling', async () => {
  let running = 0;
  let peak = 0;
  const parts = Readable.from(Array.from({ length: 20 }, (_, i) => Buffer.alloc(10, i)));
  const results = await forEachPart(parts, { concurrency: 3, maxBytesInFlight: 1000 }, async (part, index) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, Math.random() * 5));
    running--;
    return `${index}:${part[0]}`;
  });
  assert.equal(peak, 3);
  assert.deepEqual(results, Array.from({ length: 20 }, (_, i) => `${i}:${i}`));

  let active = 0;
  await assert.rejects(
    forEachPart(Readable.from(Array.from({ length: 20 }, () => Buffer.alloc(10))), { concurrency: 4, maxBytesInFlight: 1000 }, async (_part, index) => {
      active++;
      await new Promise((r) => setTimeout(r, 2));
      active--;
      if (index === 5) throw new Error('boom');
    }),
    /boom/,
  );
  assert.equal(active, 0, 'no task still running after the rejection');
});

test('forEachPart limits bytes in flight as parts grow', async () => {
  let inFlight = 0;
  let peakBytes = 0;
  const parts = Readable.from([Buffer.alloc(100), Buffer.alloc(100), Buffer.alloc(400), Buffer.alloc(400), Buffer.alloc(400)]);
  await forEachPart(parts, { concurrency: 4, maxBytesInFlight: 400 }, async (part) => {
    inFlight += part.length;
    peakBytes = Math.max(peakBytes, inFlight);
    await new Promise((r) => setTimeout(r, 5));
    inFlight -= part.length;
  });
  assert.ok(peakBytes <= 500, `peak ${peakBytes}`); // one part may always run, even alone above the budget
});
