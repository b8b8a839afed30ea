// zstd blobs: frames made with pooled contexts, frame boundaries read from headers, and blobs
// of one ranged GET decoded in sequence with one context (src/pipeline/zstd-frames.ts).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import { zstdFrame, zstdFrameLength, ZstdFrameSequence } from '../../src/pipeline/zstd-frames.ts';

/** The frame zstd writes for empty content with a checksum: what zlib appended to some blobs. */
const EMPTY_FRAME = Buffer.from('28b52ffd240001000099e9d851', 'hex');

function contents(): Buffer[] {
  const page = Buffer.alloc(8192);
  page.write('a page with some text', 100);
  const mixed = Buffer.concat([randomBytes(300_000), Buffer.alloc(500_000, 7), randomBytes(248_576)]);
  return [Buffer.alloc(0), Buffer.from('x'), page, randomBytes(8192), mixed, Buffer.alloc(1 << 20)];
}

test('zstdFrameLength measures whole frames (with and without checksum and content size) and refuses cut ones', async () => {
  for (const content of contents()) {
    for (const frame of [await zstdFrame(content, 3), zstdCompressSync(content)]) {
      assert.equal(zstdFrameLength(frame), frame.length);
      const two = Buffer.concat([frame, EMPTY_FRAME]);
      assert.equal(zstdFrameLength(two), frame.length);
      assert.equal(zstdFrameLength(two, frame.length), EMPTY_FRAME.length);
      if (frame.length > 13) assert.equal(zstdFrameLength(frame.subarray(0, frame.length - 1)), undefined);
      assert.equal(zstdFrameLength(frame.subarray(0, 5)), undefined);
    }
  }
  assert.equal(zstdFrameLength(Buffer.from('not a zstd frame at all')), undefined);
});

test('zstdFrame output is exactly one frame that stock decoders read', async () => {
  // Many frames through the same pooled contexts, so zlib's output buffer fills up at frame ends too.
  for (let round = 0; round < 200; round++) {
    for (const content of contents().slice(0, 4)) {
      const frame = await zstdFrame(content, 3);
      assert.equal(zstdFrameLength(frame), frame.length);
      assert.ok(zstdDecompressSync(frame).equals(content));
    }
  }
});

test('ZstdFrameSequence decodes blobs in order, also blobs with a trailing empty frame', async () => {
  const sequence = new ZstdFrameSequence();
  try {
    for (const content of contents()) {
      const frame = await zstdFrame(content, 3);
      assert.ok((await sequence.decode(frame)).equals(content));
      assert.ok((await sequence.decode(Buffer.concat([frame, EMPTY_FRAME]))).equals(content));
      assert.ok((await sequence.decode(zstdCompressSync(content))).equals(content));
    }
    await sequence.finish();
  } finally {
    sequence.close();
  }
});

test('ZstdFrameSequence refuses a cut blob and a damaged one', async () => {
  const content = contents()[4]!;
  const frame = await zstdFrame(content, 3);
  const cut = new ZstdFrameSequence();
  await assert.rejects(cut.decode(frame.subarray(0, frame.length - 10)), /not a whole zstd frame/);
  cut.close();

  const damaged = Buffer.from(frame);
  damaged[Math.floor(damaged.length / 2)]! ^= 0x55;
  const sequence = new ZstdFrameSequence();
  await assert.rejects(async () => {
    await sequence.decode(damaged);
    await sequence.finish();
  });
  sequence.close();
});

test('ZstdFrameSequence decodes into a buffer the caller gives, the rest of a longer content after it, and never writes into it later', async () => {
  const sequence = new ZstdFrameSequence();
  try {
    const output = Buffer.alloc((1 << 20) + 1);
    for (const content of contents()) {
      output.fill(0xaa);
      const parts = await sequence.decodeParts(await zstdFrame(content, 3), output);
      assert.ok(Buffer.concat(parts).equals(content));
      if (content.length > 0) {
        assert.equal(parts[0]!.buffer, output.buffer, 'the content starts in the caller\'s buffer');
        assert.equal(parts[0]!.byteOffset, output.byteOffset);
      }
      assert.equal(parts.length, content.length === 0 ? 0 : 1);
      const kept = Buffer.from(output);
      // Other blobs decoded afterwards (with zlib's own buffers or another one) leave it alone.
      assert.ok((await sequence.decode(zstdCompressSync(randomBytes(200_000)))).length === 200_000);
      await sequence.decodeParts(await zstdFrame(randomBytes(5000), 3), Buffer.alloc(8192));
      assert.ok(output.equals(kept));
    }
    // Content longer than the buffer: the rest comes in parts of zlib's own.
    const long = contents()[4]!;
    const small = Buffer.alloc(100_000);
    const parts = await sequence.decodeParts(await zstdFrame(long, 3), small);
    assert.equal(parts[0]!.buffer, small.buffer);
    assert.equal(parts[0]!.length, small.length);
    assert.ok(parts.length > 1);
    assert.ok(Buffer.concat(parts).equals(long));
    await sequence.finish();
  } finally {
    sequence.close();
  }
});
