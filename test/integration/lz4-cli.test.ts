/**
 * Interop with the reference `lz4` CLI (Debian package `lz4`): whatever pgark compresses,
 * `lz4 -d` restores byte for byte, and pgark restores what `lz4` writes with any of its
 * frame options (linked blocks, block checksums, content size, small blocks, several
 * frames in one stream).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, describe, test } from 'node:test';
import { isPgarkError } from '../../src/errors.ts';
import { createLz4CompressStream, createLz4DecompressStream } from '../../src/pipeline/lz4.ts';

const lz4Available = spawnSync('lz4', ['--version']).error === undefined;
const skip = lz4Available ? false : 'the `lz4` CLI is not on PATH (install it with `apt-get install -y lz4`)';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'pgark-lz4-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function cli(args: string[], input?: Buffer): Buffer {
  const result = spawnSync('lz4', args, { input, maxBuffer: 256 * MiB });
  if (result.error) throw result.error;
  assert.equal(result.status, 0, `lz4 ${args.join(' ')} failed: ${result.stderr.toString()}`);
  return result.stdout;
}

async function run(transform: Transform, data: Buffer, piece: number): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += piece) pieces.push(data.subarray(offset, offset + piece));
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

/** 8 KiB pages: a header, then zeros, then repeated tuple-like records at the end. */
function pageData(size: number): Buffer {
  const out = Buffer.alloc(Math.ceil(size / 8192) * 8192);
  for (let page = 0; page * 8192 < size; page++) {
    const base = page * 8192;
    if (page % 7 === 0) continue; // empty page
    out.writeUInt32LE(page * 40 + 1, base);
    const tuples = page % 3 === 0 ? 20 : 100;
    for (let t = 0; t < tuples; t++) {
      const record = `\u0001row ${page * 1000 + t} name customer-${(page * 7 + t) % 500} status active;`;
      out.write(record, base + 8192 - (t + 1) * 72, 'latin1');
    }
  }
  return out.subarray(0, size);
}

describe('lz4 CLI interop', { skip }, () => {
  const samples: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['1 byte', Buffer.from('x')],
    ['4 MiB + 1 of pages', pageData(4 * MiB + 1)],
    ['9 MiB of pages', pageData(9 * MiB)],
    ['5 MiB random', randomBytes(5 * MiB)],
    ['pages and random mixed', Buffer.concat([pageData(3 * MiB), randomBytes(MiB + 17), pageData(2 * MiB)])],
  ];

  for (const [name, data] of samples) {
    test(`lz4 -d restores our output: ${name}`, async () => {
      const compressed = await run(createLz4CompressStream(), data, 65_537);
      const restored = cli(['-d', '-c'], compressed);
      assert.ok(restored.equals(data), 'lz4 -d output differs');
      // And as a file, through `lz4 -t` (integrity test, checks the block checksums).
      const file = join(dir, 'ours.lz4');
      writeFileSync(file, compressed);
      cli(['-t', '-q', file]);
    });
  }

  test('lz4 -d restores our output with every block size and checksum choice', async () => {
    const data = Buffer.concat([pageData(MiB + 3), randomBytes(300_000)]);
    for (const blockSize of [65536, 262144, 1048576, 4194304] as const) {
      for (const [blockChecksum, contentChecksum] of [[true, false], [false, true], [true, true], [false, false]]) {
        const options = { blockSize, blockChecksum, contentChecksum };
        const compressed = await run(createLz4CompressStream(options), data, 1 << 20);
        assert.ok(cli(['-d', '-c'], compressed).equals(data), JSON.stringify(options));
      }
    }
  });

  test('lz4 -t notices a damaged block of ours (it checks our block checksums)', async () => {
    const compressed = await run(createLz4CompressStream(), pageData(2 * MiB), 65_536);
    compressed[compressed.length >> 1]! ^= 0x01;
    const file = join(dir, 'damaged.lz4');
    writeFileSync(file, compressed);
    const result = spawnSync('lz4', ['-t', file]);
    assert.notEqual(result.status, 0, 'lz4 -t accepted a damaged file');
    assert.match(result.stderr.toString(), /checksum|corrupt|error/i);
  });

  const data = Buffer.concat([pageData(6 * MiB), randomBytes(MiB), pageData(3 * MiB + 12_345)]);
  const input = join(dir, 'input.bin');
  writeFileSync(input, data);

  const variants: [string, string[]][] = [
    ['default options', []],
    ['linked blocks (-BD)', ['-BD']],
    ['--content-size', ['--content-size']],
    ['64 KiB blocks (-B4)', ['-B4']],
    ['linked 64 KiB blocks (-BD -B4)', ['-BD', '-B4']],
    ['256 KiB blocks (-B5)', ['-B5']],
    ['1 MiB blocks, linked, block checksums', ['-B6', '-BD', '-BX']],
    ['block checksums, no content checksum (-BX --no-frame-crc)', ['-BX', '--no-frame-crc']],
    ['high compression (-9) linked with content size', ['-9', '-BD', '--content-size']],
    ['fast mode (--fast=5)', ['--fast=5']],
  ];
  for (const [name, args] of variants) {
    test(`we restore lz4 output: ${name}`, async () => {
      const compressed = cli([...args, '-c', input]);
      for (const piece of [1_000_003, 4096, 777]) {
        const restored = await run(createLz4DecompressStream(), compressed, piece);
        assert.ok(restored.equals(data), `differs when fed in ${piece}-byte pieces`);
      }
    });
  }

  test('we restore lz4 output read from a pipe (no content size known)', async () => {
    const compressed = cli(['-BD', '-c'], data);
    assert.ok((await run(createLz4DecompressStream(), compressed, 100_000)).equals(data));
  });

  test('we restore two concatenated lz4 frames, and empty frames', async () => {
    const first = data.subarray(0, 5 * MiB + 1);
    const second = randomBytes(200_000);
    const stream = Buffer.concat([
      cli(['-c'], first),
      cli(['-c'], Buffer.alloc(0)),
      cli(['-BD', '-B4', '--content-size', '-c'], second),
    ]);
    // The CLI reads the same stream back as one output (a sanity check of the fixture).
    assert.ok(cli(['-d', '-c'], stream).equals(Buffer.concat([first, second])));
    assert.ok((await run(createLz4DecompressStream(), stream, 65_536)).equals(Buffer.concat([first, second])));
  });

  test('a damaged lz4 file fails with INTEGRITY', async () => {
    const compressed = Buffer.from(cli(['-c'], data.subarray(0, 2 * MiB)));
    compressed[compressed.length >> 1]! ^= 0x04;
    await assert.rejects(run(createLz4DecompressStream(), compressed, 65_536), (error: unknown) => {
      assert.ok(isPgarkError(error, 'INTEGRITY'), `expected INTEGRITY, got ${String(error)}`);
      return true;
    });
  });

  test('the legacy format (lz4 -l) is refused with INTEGRITY', async () => {
    const legacy = cli(['-l', '-c'], Buffer.from('legacy frame'));
    await assert.rejects(run(createLz4DecompressStream(), legacy, 1000), (error: unknown) => {
      assert.ok(isPgarkError(error, 'INTEGRITY'));
      assert.match((error as Error).message, /legacy/);
      return true;
    });
  });
});
