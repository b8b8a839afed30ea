/**
 * The LZ4 frame stage: round trips at block-boundary sizes, fed in random chunk sizes;
 * frame layout details; every frame feature the reader must accept; corrupt input failing
 * with INTEGRITY; bounded buffering. Interop with the `lz4` CLI is in
 * test/integration/lz4-cli.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { isPgarkError } from '../../src/errors.ts';
import { createLz4CompressStream, createLz4DecompressStream, Xxh32, xxh32 } from '../../src/pipeline/lz4.ts';

const MiB = 1024 * 1024;
const BLOCK = 256 * 1024; // the default block size

/** A deterministic PRNG (xorshift32), so failures reproduce. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/**
 * PostgreSQL-like heap data: 8 KiB pages with a header, line pointers, zeroed free space and
 * tuples packed from the end; some pages empty, some half full, most full.
 */
function pgLikeData(size: number, seed = 1): Buffer {
  const random = prng(seed);
  const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel'];
  const out = Buffer.alloc(size);
  const page = Buffer.alloc(8192);
  const tuple = Buffer.alloc(128);
  let id = 1;
  for (let offset = 0; offset < size; offset += 8192) {
    page.fill(0);
    const kind = random() % 10;
    if (kind !== 0) {
      const fill = kind >= 4 ? 1 : (random() % 100) / 100;
      page.writeUInt32LE(random(), 0); // LSN
      page.writeUInt32LE(offset >>> 13, 4);
      page.writeUInt16LE(0x2004, 18);
      let lower = 24;
      let upper = 8192;
      for (;;) {
        const text = `${words[random() & 7]} ${words[random() & 7]} customer ${id}`;
        const length = 49 + text.length;
        const aligned = (length + 7) & ~7;
        if (upper - aligned < lower + 4 || (upper - lower) / 8192 < 1 - fill) break;
        upper -= aligned;
        tuple.fill(0);
        tuple.writeUInt32LE(0x2a0 + (id >>> 10), 0); // xmin
        tuple.writeUInt16LE(0x0902, 20);
        tuple[22] = 24;
        tuple.writeUInt32LE(id, 24);
        tuple.writeUInt32LE(id % 97, 32);
        tuple.writeUInt32LE(1_700_000_000 + id * 3 + (random() & 3), 40);
        tuple[48] = (text.length + 1) * 2 + 1;
        tuple.write(text, 49, 'latin1');
        tuple.copy(page, upper, 0, length);
        page.writeUInt32LE(upper | (1 << 15) | (length << 17), lower);
        lower += 4;
        id++;
      }
      page.writeUInt16LE(lower, 12);
      page.writeUInt16LE(upper, 14);
    }
    page.copy(out, offset, 0, Math.min(8192, size - offset));
  }
  return out;
}

/** Cuts data into pieces of random sizes (1 byte to maxPiece), some of them empty. */
function randomPieces(data: Buffer, seed: number, maxPiece = 300_000): Buffer[] {
  const random = prng(seed);
  const pieces: Buffer[] = [];
  let offset = 0;
  while (offset < data.length) {
    const r = random();
    // Mostly large pieces, sometimes tiny ones (so headers and block sizes get split).
    const size = r % 4 === 0 ? (r >>> 8) % 8 : (r >>> 8) % maxPiece;
    pieces.push(data.subarray(offset, offset + size));
    offset += size;
  }
  return pieces;
}

async function run(transform: Transform, pieces: Buffer[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(pieces),
    transform,
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        out.push(chunk);
        callback();
      },
    }),
  );
  return Buffer.concat(out);
}

const compress = (data: Buffer, seed = 1, options?: Parameters<typeof createLz4CompressStream>[0]) =>
  run(createLz4CompressStream(options), randomPieces(data, seed));
const decompress = (data: Buffer, seed = 2) => run(createLz4DecompressStream(), randomPieces(data, seed));

async function assertIntegrityError(data: Buffer, pattern: RegExp): Promise<void> {
  await assert.rejects(decompress(data), (error: unknown) => {
    assert.ok(isPgarkError(error, 'INTEGRITY'), `expected PgarkError INTEGRITY, got ${String(error)}`);
    assert.match(error.message, pattern);
    return true;
  });
}

/** A frame header for the given FLG and BD bytes (with content size / dict ID fields). */
function header(flg: number, bd: number, extra: Buffer = Buffer.alloc(0)): Buffer {
  const descriptor = Buffer.concat([Buffer.from([flg, bd]), extra]);
  return Buffer.concat([
    Buffer.from([0x04, 0x22, 0x4d, 0x18]),
    descriptor,
    Buffer.from([(xxh32(descriptor) >>> 8) & 0xff]),
  ]);
}

function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  return b;
}

describe('xxHash32', () => {
  test('matches the reference vectors', () => {
    assert.equal(xxh32(Buffer.from('')), 0x02cc5d05);
    assert.equal(xxh32(Buffer.from('a')), 0x550d7456);
    assert.equal(xxh32(Buffer.from('abc')), 0x32d153ff);
    assert.equal(xxh32(Buffer.from('Nobody inspects the spammish repetition')), 0xe2293b2f);
  });

  test('incremental updates equal one-shot hashing, whatever the split', () => {
    const data = randomBytes(100_003);
    const expected = xxh32(data);
    for (const seed of [1, 2, 3]) {
      const hash = new Xxh32();
      for (const piece of randomPieces(data, seed, 40)) hash.update(piece);
      assert.equal(hash.digest(), expected);
    }
    // Unaligned views into a larger buffer.
    assert.equal(xxh32(Buffer.concat([Buffer.alloc(3), data]).subarray(3)), expected);
  });
});

describe('LZ4 frame round trips', () => {
  const sizes = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 13 * MiB];
  const pg = pgLikeData(13 * MiB);

  for (const size of sizes) {
    test(`PostgreSQL-like data, ${size} bytes`, async () => {
      const data = pg.subarray(0, size);
      const compressed = await compress(data, size);
      if (size >= BLOCK) assert.ok(compressed.length < data.length / 2, `ratio too low: ${compressed.length}`);
      assert.ok((await decompress(compressed, size + 1)).equals(data));
    });
  }

  for (const size of [1, 1000, BLOCK - 1, BLOCK + 1, 9 * MiB]) {
    test(`incompressible random data, ${size} bytes`, async () => {
      const data = randomBytes(size);
      const compressed = await compress(data, size);
      // Blocks that don't shrink are stored: the overhead is headers and checksums only.
      const blocks = Math.ceil(size / BLOCK);
      assert.equal(compressed.length, 7 + size + 8 * blocks + 4);
      assert.ok((await decompress(compressed, size + 1)).equals(data));
    });
  }

  test('every block size, with and without block and content checksums', async () => {
    const data = Buffer.concat([pgLikeData(700_000, 5), randomBytes(300_000), pgLikeData(400_000, 6)]);
    for (const blockSize of [65536, 262144, 1048576, 4194304] as const) {
      for (const [blockChecksum, contentChecksum] of [[true, false], [false, true], [true, true], [false, false]]) {
        const options = { blockSize, blockChecksum, contentChecksum, concurrency: blockChecksum ? 1 : 3 };
        const compressed = await compress(data, blockSize, options);
        assert.equal(compressed[5], { 65536: 4, 262144: 5, 1048576: 6, 4194304: 7 }[blockSize] << 4);
        assert.equal((compressed[4]! & 0x10) !== 0, blockChecksum);
        assert.equal((compressed[4]! & 0x04) !== 0, contentChecksum);
        assert.ok((await decompress(compressed)).equals(data), JSON.stringify(options));
      }
    }
  });

  test('writes the header lz4 expects: version 01, independent blocks, block checksums, 256 KiB blocks', async () => {
    const compressed = await compress(Buffer.alloc(0));
    const HC = (xxh32(Buffer.from([0x70, 0x50])) >>> 8) & 0xff;
    assert.deepEqual([...compressed], [0x04, 0x22, 0x4d, 0x18, 0x70, 0x50, HC, 0, 0, 0, 0]);
    const withContentChecksum = await compress(Buffer.alloc(0), 1, { contentChecksum: true });
    assert.deepEqual([...withContentChecksum.subarray(4, 7)], [0x74, 0x50, (xxh32(Buffer.from([0x74, 0x50])) >>> 8) & 0xff]);
    assert.deepEqual([...withContentChecksum.subarray(7)], [0, 0, 0, 0, 0x05, 0x5d, 0xcc, 0x02]);
  });

  test('concatenated frames and skippable frames', async () => {
    const a = pgLikeData(5 * MiB, 3);
    const b = randomBytes(100_000);
    const skippable = Buffer.concat([u32(0x184d2a5f), u32(10), Buffer.alloc(10, 0xaa)]);
    const emptySkippable = Buffer.concat([u32(0x184d2a50), u32(0)]);
    const stream = Buffer.concat([
      skippable,
      await compress(a),
      emptySkippable,
      await compress(Buffer.alloc(0)),
      await compress(b, 4, { contentChecksum: false }),
      skippable,
    ]);
    assert.ok((await decompress(stream)).equals(Buffer.concat([a, b])));
    // Fed one byte at a time too (the header parser must wait for every field).
    const small = Buffer.concat([skippable, await compress(b.subarray(0, 3000)), emptySkippable]);
    const bytes = [...small].map((byte) => Buffer.from([byte]));
    assert.ok((await run(createLz4DecompressStream(), bytes)).equals(b.subarray(0, 3000)));
  });

  test('reads what it does not write: block checksums, content size, uncompressed blocks', async () => {
    const payload = Buffer.from('hello, hello, hello, hello lz4 frame');
    // Uncompressed block with a block checksum, in a frame with content size and no content checksum.
    const contentSize = Buffer.alloc(8);
    contentSize.writeBigUInt64LE(BigInt(payload.length * 2));
    const frame = Buffer.concat([
      header(0x40 | 0x20 | 0x10 | 0x08, 0x40, contentSize),
      u32(payload.length | 0x80000000),
      payload,
      u32(xxh32(payload)),
      u32(payload.length | 0x80000000),
      payload,
      u32(xxh32(payload)),
      u32(0),
    ]);
    assert.ok((await decompress(frame)).equals(Buffer.concat([payload, payload])));
  });

  test('linked blocks: matches reaching into earlier blocks', async () => {
    // Block 1 stores "abcdefgh" uncompressed; block 2 is one sequence: 0 literals, then a
    // 12-byte match at offset 8 (into block 1), ending with the 5 mandatory literals.
    const block2 = Buffer.from([0x08, 0x08, 0x00, 0x50, ...Buffer.from('XYZWV')]);
    const linked = Buffer.concat([
      header(0x40 | 0x04, 0x40),
      u32(8 | 0x80000000),
      Buffer.from('abcdefgh'),
      u32(block2.length),
      block2,
      u32(0),
      u32(xxh32(Buffer.from('abcdefghabcdefghabcdXYZWV'))),
    ]);
    assert.equal((await decompress(linked)).toString(), 'abcdefghabcdefghabcdXYZWV');
    // The same block in an independent frame reaches before its block: corrupt.
    const independent = Buffer.from(linked);
    independent[4] = 0x40 | 0x20 | 0x04;
    independent[6] = (xxh32(independent.subarray(4, 6)) >>> 8) & 0xff;
    await assertIntegrityError(independent, /block 2 of frame 1 is corrupt/);
  });
});

describe('LZ4 corrupt input', () => {
  const data = pgLikeData(6 * MiB, 9);
  let good: Buffer;
  const compressed = async () => (good ??= await compress(data));

  test('a flipped byte in compressed data fails the content checksum or the block decoder', async () => {
    const good = await compressed();
    for (const position of [100, 1000, Math.floor(good.length / 2), good.length - 100]) {
      const bad = Buffer.from(good);
      bad[position]! ^= 0x10;
      await assertIntegrityError(bad, /LZ4/);
    }
  });

  test('a damaged block fails before any of its output is passed on', async () => {
    const good = await compressed();
    // Damage the second block: at most the first block's output comes out, nothing after.
    const firstBlockLength = good.readUInt32LE(7) & 0x7fffffff;
    const bad = Buffer.from(good);
    bad[7 + 4 + firstBlockLength + 4 + 4 + 1000]! ^= 0x01;
    const received: Buffer[] = [];
    await assert.rejects(
      pipeline(
        Readable.from(randomPieces(bad, 3)),
        createLz4DecompressStream(),
        new Writable({
          write(chunk: Buffer, _encoding, callback) {
            received.push(chunk);
            callback();
          },
        }),
      ),
      (error: unknown) => isPgarkError(error, 'INTEGRITY') && /block 2 of frame 1 fails its checksum/.test(error.message),
    );
    const output = Buffer.concat(received);
    assert.ok(output.length <= BLOCK && output.equals(data.subarray(0, output.length)), `${output.length} bytes came out`);
  });

  test('truncation anywhere fails', async () => {
    const good = await compressed();
    for (const length of [0, 3, 6, 7, 10, 5000, good.length - 5, good.length - 1]) {
      await assertIntegrityError(good.subarray(0, length), /truncated|empty/);
    }
  });

  test('not LZ4, legacy format, trailing garbage', async () => {
    await assertIntegrityError(Buffer.from('PGDMP this is not lz4'), /bad magic number 0x4d444750/);
    await assertIntegrityError(Buffer.concat([u32(0x184c2102), u32(0)]), /legacy/);
    const good = await compressed();
    await assertIntegrityError(Buffer.concat([good, Buffer.from('garbage!')]), /bad magic number/);
    await assertIntegrityError(Buffer.concat([good, Buffer.alloc(2)]), /truncated/);
  });

  test('header errors: checksum, version, reserved bits, block size, dictionary', async () => {
    const bad = Buffer.from(await compressed());
    bad[6]! ^= 1;
    await assertIntegrityError(bad, /header checksum/);
    await assertIntegrityError(header(0x80 | 0x20, 0x70), /version/);
    await assertIntegrityError(header(0x40 | 0x02, 0x70), /reserved/);
    await assertIntegrityError(header(0x40, 0x71), /reserved/);
    await assertIntegrityError(header(0x40, 0x30), /block size code 3/);
    await assertIntegrityError(header(0x40 | 0x01, 0x70, u32(7)), /dictionary/);
  });

  test('block errors: oversized block, block checksum, bad match offset, output over the block size', async () => {
    await assertIntegrityError(Buffer.concat([header(0x60, 0x40), u32(65537)]), /over the frame's block size/);
    const payload = Buffer.from('payload');
    await assertIntegrityError(
      Buffer.concat([header(0x70, 0x40), u32(payload.length | 0x80000000), payload, u32(xxh32(payload) ^ 1), u32(0)]),
      /fails its checksum/,
    );
    // First sequence: no literals, match at offset 16 into nothing.
    await assertIntegrityError(
      Buffer.concat([header(0x60, 0x40), u32(9), Buffer.from([0x00, 0x10, 0x00, 0x50, 1, 2, 3, 4, 5]), u32(0)]),
      /block 1 of frame 1 is corrupt/,
    );
    // A block that would decode to more than 64 KiB: 1 literal, then a 70,000-byte run.
    const run = [0x1f, 0x41, 0x01, 0x00];
    let length = 70_000 - 4 - 15;
    for (; length >= 255; length -= 255) run.push(255);
    run.push(length, 0x50, 1, 2, 3, 4, 5);
    await assertIntegrityError(Buffer.concat([header(0x60, 0x40), u32(run.length), Buffer.from(run), u32(0)]), /corrupt/);
  });

  test('random damage never escapes as anything but INTEGRITY (fuzz)', async () => {
    // Without checksums, damaged blocks reach the block decoder itself.
    const sample = pgLikeData(300_000, 11);
    const frames = [
      await compress(sample, 1, { blockSize: 65536, blockChecksum: false }),
      await compress(sample, 2, { blockSize: 65536 }),
      await compress(sample, 3, { blockSize: 65536, blockChecksum: false, contentChecksum: true }),
    ];
    const random = prng(42);
    let failures = 0;
    for (let i = 0; i < 300; i++) {
      const bad = Buffer.from(frames[i % frames.length]!);
      for (let flips = 1 + (random() % 3); flips > 0; flips--) bad[random() % bad.length]! ^= 1 << random() % 8;
      const input = random() % 4 === 0 ? bad.subarray(0, random() % bad.length) : bad;
      try {
        await run(createLz4DecompressStream(), [input]);
      } catch (error) {
        assert.ok(isPgarkError(error, 'INTEGRITY'), `case ${i}: ${String(error)}`);
        failures++;
      }
    }
    assert.ok(failures > 200, `only ${failures} of 300 damaged inputs were refused`);
  });

  test('content size and content checksum mismatches', async () => {
    const payload = Buffer.from('0123456789');
    const size = Buffer.alloc(8);
    size.writeBigUInt64LE(11n);
    await assertIntegrityError(
      Buffer.concat([header(0x68, 0x40, size), u32(10 | 0x80000000), payload, u32(0)]),
      /decoded to 10 bytes but its header says 11/,
    );
    await assertIntegrityError(
      Buffer.concat([header(0x64, 0x40), u32(10 | 0x80000000), payload, u32(0), u32(xxh32(payload) ^ 0x100)]),
      /content checksum/,
    );
  });
});

describe('LZ4 memory stays bounded', () => {
  test('a huge, highly compressible input written as one chunk does not pile up output', async () => {
    const zeros = Buffer.alloc(64 * MiB);
    let maxBuffered = 0;
    const compressor = createLz4CompressStream();
    const compressed = await run(compressor, [zeros]);
    assert.ok(compressed.length < 400 * 1024, `zeros compressed to ${compressed.length}`);

    // 64 MiB of output from one ~260 KiB input chunk, read slowly.
    const decompressor = createLz4DecompressStream();
    let total = 0;
    await pipeline(
      Readable.from([compressed]),
      decompressor,
      new Writable({
        highWaterMark: 1,
        write(chunk: Buffer, _encoding, callback) {
          maxBuffered = Math.max(maxBuffered, decompressor.readableLength);
          total += chunk.length;
          assert.ok(chunk.equals(zeros.subarray(0, chunk.length)));
          setImmediate(callback);
        },
      }),
    );
    assert.equal(total, zeros.length);
    // One block waiting in the readable buffer plus the ones in flight: far below 64 MiB.
    assert.ok(maxBuffered <= 3 * BLOCK, `decompressor buffered ${maxBuffered} bytes`);
  });

  test('the compressor waits for a slow reader too', async () => {
    const data = randomBytes(40 * MiB); // stored blocks: output as large as input
    const compressor = createLz4CompressStream();
    let maxBuffered = 0;
    const out: Buffer[] = [];
    await pipeline(
      Readable.from([data]),
      compressor,
      new Writable({
        highWaterMark: 1,
        write(chunk: Buffer, _encoding, callback) {
          maxBuffered = Math.max(maxBuffered, compressor.readableLength);
          out.push(chunk);
          setTimeout(callback, 1);
        },
      }),
    );
    assert.ok(maxBuffered <= 2 * BLOCK, `compressor buffered ${maxBuffered} bytes`);
    assert.ok((await decompress(Buffer.concat(out))).equals(data));
  });
});
