// Decoding stored objects into a buffer the caller reuses (the WAL prefetcher:
// decodeBufferInto in src/pipeline/object-format.ts): one buffer serves object after object,
// content that does not fit still comes back whole, other codecs are copied in, and a damaged
// frame fails instead of leaving earlier content in the buffer looking decoded.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { decodeBufferInto, type ReusedDecoding } from '../../src/pipeline/object-format.ts';
import { zstdFrame, ZstdFrameSequence } from '../../src/pipeline/zstd-frames.ts';

const SEGMENT = 1 << 20;

/** A stored object's body as a store hands it out: in several chunks. */
function body(stored: Buffer): Readable {
  const chunks: Buffer[] = [];
  for (let at = 0; at < stored.length; at += 100_000) chunks.push(Buffer.from(stored.subarray(at, at + 100_000)));
  return Readable.from(chunks);
}

function segment(seed: number): Buffer {
  return Buffer.concat([randomBytes(200_000), Buffer.alloc(SEGMENT - 200_000, seed)]);
}

test('zstd objects decode one after another into the same buffer, from a reused compressed buffer that grows', async () => {
  const output = Buffer.allocUnsafeSlow(SEGMENT + 1);
  const reused: ReusedDecoding = { frames: new ZstdFrameSequence(64 * 1024), compressed: Buffer.allocUnsafeSlow(1024) };
  try {
    for (const seed of [1, 2, 3]) {
      const content = segment(seed);
      const decoded = await decodeBufferInto(body(await zstdFrame(content, 3)), 'x.zst', [], output, reused);
      assert.equal(decoded.buffer, output.buffer, 'decoded into the caller buffer');
      assert.ok(decoded.equals(content));
    }
    assert.ok(reused.compressed.length >= 200_000);
  } finally {
    reused.frames.close();
  }
});

test('content larger than the buffer comes back whole; gzip and none are copied in', async () => {
  const output = Buffer.allocUnsafeSlow(SEGMENT + 1);
  const reused: ReusedDecoding = { frames: new ZstdFrameSequence(64 * 1024), compressed: Buffer.allocUnsafeSlow(1024) };
  try {
    const large = Buffer.concat([segment(4), segment(5)]);
    assert.ok((await decodeBufferInto(body(await zstdFrame(large, 3)), 'x.zst', [], output, reused)).equals(large));
    const content = segment(6);
    const fromZstd = await decodeBufferInto(body(await zstdFrame(content, 3)), 'x.zst', [], output, reused);
    assert.ok(fromZstd.equals(content), 'the context still works after an overflow');
    const forGzip = segment(7);
    const gzipped = await decodeBufferInto(body(gzipSync(forGzip)), 'x.gz', [], output, reused);
    assert.equal(gzipped.buffer, output.buffer);
    assert.ok(gzipped.equals(forGzip));
    const plain = segment(8);
    assert.ok((await decodeBufferInto(body(plain), 'x', [], output, reused)).equals(plain));
  } finally {
    reused.frames.close();
  }
});

test('a damaged frame fails', async () => {
  const output = Buffer.allocUnsafeSlow(SEGMENT + 1);
  const reused: ReusedDecoding = { frames: new ZstdFrameSequence(64 * 1024), compressed: Buffer.allocUnsafeSlow(1024) };
  try {
    const frame = await zstdFrame(segment(9), 3);
    frame[Math.floor(frame.length / 2)]! ^= 0xff;
    await assert.rejects(decodeBufferInto(body(frame), 'x.zst', [], output, reused));
    const cut = (await zstdFrame(segment(10), 3)).subarray(0, 5000);
    const fresh: ReusedDecoding = { frames: new ZstdFrameSequence(64 * 1024), compressed: Buffer.allocUnsafeSlow(1024) };
    try {
      await assert.rejects(decodeBufferInto(body(Buffer.from(cut)), 'x.zst', [], output, fresh), /not a whole zstd frame/);
    } finally {
      fresh.frames.close();
    }
  } finally {
    reused.frames.close();
  }
});
