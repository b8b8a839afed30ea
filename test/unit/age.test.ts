import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { PgarkError, isPgarkError } from '../../src/errors.ts';
import {
  bech32Decode,
  bech32Encode,
  createAgeDecryptStream,
  createAgeEncryptStream,
  formatIdentityFile,
  generateIdentity,
  parseIdentityFile,
  parseRecipient,
  recipientFromIdentity,
} from '../../src/pipeline/age.ts';
import { prng } from '../support/random.ts';

const KiB64 = 64 * 1024;
const SIZES = [0, 1, KiB64 - 1, KiB64, KiB64 + 1, 3 * KiB64, 1024 * 1024 + 7];

/** Splits at random boundaries: mostly small pieces, sometimes single bytes or large runs. */
function randomSplit(data: Buffer, seed: number): Buffer[] {
  const random = prng(seed);
  const pieces: Buffer[] = [];
  let offset = 0;
  while (offset < data.length) {
    const kind = random();
    const max = kind < 0.2 ? 1 : kind < 0.7 ? 300 : kind < 0.9 ? 70_000 : 300_000;
    const size = 1 + Math.floor(random() * max);
    pieces.push(data.subarray(offset, offset + size));
    offset += size;
  }
  return pieces;
}

async function run(transform: Transform, pieces: Buffer[], received: Buffer[] = []): Promise<Buffer> {
  await pipeline(
    Readable.from(pieces),
    transform,
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        received.push(Buffer.from(chunk)); // copy: we keep it after the stream is done
        callback();
      },
    }),
  );
  return Buffer.concat(received);
}

const encrypt = (data: Buffer, recipients: string[], seed = 1) => run(createAgeEncryptStream(recipients), randomSplit(data, seed));
const decrypt = (data: Buffer, identities: string[], seed = 2) => run(createAgeDecryptStream(identities), randomSplit(data, seed));

/** Offset where the payload (16-byte nonce, then chunks) starts: just past the "--- MAC\n" line. */
function payloadStart(file: Buffer): number {
  const macLine = file.indexOf('\n---');
  return file.indexOf('\n', macLine + 1) + 1;
}

async function assertRejects(promise: Promise<unknown>, codes: string[] = ['INTEGRITY', 'CRYPTO']): Promise<PgarkError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof PgarkError, `expected PgarkError, got ${String(error)}`);
    assert.ok(codes.includes(error.code), `unexpected code ${error.code}: ${error.message}`);
    return error;
  }
  assert.fail('expected the stream to fail');
}

const alice = generateIdentity();
const bob = generateIdentity();

describe('age round trips', () => {
  for (const size of SIZES) {
    test(`size ${size}, random chunk boundaries`, async () => {
      const plaintext = randomBytes(size);
      for (const seed of [1, 2, 3]) {
        const file = await encrypt(plaintext, [alice.recipient], seed);
        // Payload = nonce + one tag per chunk; an exact multiple of 64 KiB has no extra empty chunk.
        const chunks = Math.max(1, Math.ceil(size / KiB64));
        assert.equal(file.length - payloadStart(file), 16 + size + 16 * chunks);
        const decrypted = await decrypt(file, [alice.identity], seed + 100);
        assert.ok(decrypted.equals(plaintext));
      }
    });
  }

  test('header split byte by byte', async () => {
    const plaintext = randomBytes(1000);
    const file = await encrypt(plaintext, [alice.recipient, bob.recipient]);
    const pieces: Buffer[] = [...file.subarray(0, payloadStart(file) + 20)].map((byte) => Buffer.from([byte]));
    pieces.push(file.subarray(payloadStart(file) + 20));
    const decrypted = await run(createAgeDecryptStream([bob.identity]), pieces);
    assert.ok(decrypted.equals(plaintext));
  });

  test('two recipients: each identity decrypts, also among other identities', async () => {
    const plaintext = randomBytes(200_000);
    const file = await encrypt(plaintext, [alice.recipient, bob.recipient]);
    assert.ok((await decrypt(file, [alice.identity])).equals(plaintext));
    assert.ok((await decrypt(file, [bob.identity])).equals(plaintext));
    assert.ok((await decrypt(file, [generateIdentity().identity, bob.identity])).equals(plaintext));
  });

  test('output streams before the input ends', async () => {
    const encryptor = createAgeEncryptStream([alice.recipient]);
    let out = 0;
    encryptor.on('data', (chunk: Buffer) => (out += chunk.length));
    for (let i = 0; i < 4; i++) encryptor.write(randomBytes(KiB64));
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(out > 3 * KiB64, `only ${out} bytes out after 4 chunks in`);
    encryptor.end();
    await new Promise((resolve) => encryptor.on('end', resolve));
  });
});

describe('age decryption failures', () => {
  test('wrong identity', async () => {
    const file = await encrypt(randomBytes(100), [alice.recipient]);
    const error = await assertRejects(decrypt(file, [bob.identity]), ['CRYPTO']);
    assert.ok(!`${error.message} ${error.hint}`.includes(bob.identity));
  });

  test('flipped byte anywhere in the header', async () => {
    const file = await encrypt(randomBytes(100), [alice.recipient]);
    const end = payloadStart(file);
    for (let offset = 0; offset < end; offset++) {
      const bad = Buffer.from(file);
      bad[offset]! ^= 0x01;
      await assertRejects(decrypt(bad, [alice.identity], offset));
    }
  });

  test('flipped byte in the payload: no plaintext from the bad chunk', async () => {
    const plaintext = randomBytes(3 * KiB64 + 10);
    const file = await encrypt(plaintext, [alice.recipient]);
    const chunk1 = payloadStart(file) + 16 + (KiB64 + 16);
    for (const offset of [payloadStart(file), chunk1 + 5, chunk1 + KiB64 + 15, file.length - 1]) {
      const bad = Buffer.from(file);
      bad[offset]! ^= 0x80;
      const received: Buffer[] = [];
      await assertRejects(run(createAgeDecryptStream([alice.identity]), randomSplit(bad, offset), received));
      const out = Buffer.concat(received);
      assert.ok(plaintext.subarray(0, out.length).equals(out), 'output is not a prefix of the plaintext');
      const badChunk = offset < chunk1 ? 0 : offset < chunk1 + KiB64 + 16 ? 1 : 3;
      assert.ok(out.length <= badChunk * KiB64, `emitted ${out.length} bytes, bad chunk is #${badChunk}`);
    }
  });

  test('truncation at any stage', async () => {
    const file = await encrypt(randomBytes(2 * KiB64 + 100), [alice.recipient]);
    const start = payloadStart(file);
    const cuts = [0, 10, start - 1, start, start + 8, start + 16, start + 16 + 100, start + 16 + KiB64 + 16, start + 16 + 2 * (KiB64 + 16), file.length - 1];
    for (const cut of cuts) await assertRejects(decrypt(file.subarray(0, cut), [alice.identity]), ['INTEGRITY']);
  });

  test('missing final chunk at an exact chunk boundary', async () => {
    // 2 full chunks; dropping the second leaves a full chunk that is not marked final.
    const file = await encrypt(randomBytes(2 * KiB64), [alice.recipient]);
    await assertRejects(decrypt(file.subarray(0, file.length - (KiB64 + 16)), [alice.identity]), ['INTEGRITY']);
  });

  test('trailing data', async () => {
    for (const size of [0, 10, KiB64]) {
      const file = await encrypt(randomBytes(size), [alice.recipient]);
      for (const extra of [1, 16, KiB64 + 16]) {
        await assertRejects(decrypt(Buffer.concat([file, randomBytes(extra)]), [alice.identity]), ['INTEGRITY']);
      }
    }
  });

  test('not an age file', async () => {
    const error = await assertRejects(decrypt(Buffer.from('PGDMP plain dump'), [alice.identity]), ['CRYPTO']);
    assert.match(error.message, /not age-encrypted/);
    await assertRejects(decrypt(Buffer.from('-----BEGIN AGE ENCRYPTED FILE-----\n'), [alice.identity]), ['CRYPTO']);
    await assertRejects(decrypt(Buffer.alloc(0), [alice.identity]), ['INTEGRITY']);
    const future = await assertRejects(decrypt(Buffer.from('age-encryption.org/v2\n-> X 1\n\n--- x\n'), [alice.identity]), ['CRYPTO']);
    assert.match(future.message, /version/);
  });
});

describe('keys and bech32', () => {
  test('bech32 round trip', () => {
    for (const length of [0, 1, 5, 31, 32, 33, 100]) {
      const data = randomBytes(length);
      for (const uppercase of [false, true]) {
        const text = bech32Encode('age', data, uppercase);
        const decoded = bech32Decode(text);
        assert.ok(decoded !== null);
        assert.equal(decoded.hrp, 'age');
        assert.ok(decoded.data.equals(data));
      }
    }
  });

  test('bech32 rejects corruption and mixed case', () => {
    const text = bech32Encode('age', randomBytes(32));
    for (let i = 4; i < text.length; i++) {
      const replacement = text[i] === 'q' ? 'p' : 'q';
      assert.equal(bech32Decode(text.slice(0, i) + replacement + text.slice(i + 1)), null, `position ${i}`);
    }
    assert.equal(bech32Decode(text.slice(0, 10) + text.slice(10).toUpperCase()), null);
    assert.equal(bech32Decode('age1'), null);
  });

  test('spec test vector: identity to recipient', () => {
    const identity = 'AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX';
    assert.equal(recipientFromIdentity(identity), 'age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj');
    assert.ok(bech32Decode(identity)!.data.equals(Buffer.alloc(32, 0x42)));
  });

  test('generated keys have the expected shape', () => {
    const { identity, recipient } = generateIdentity();
    assert.match(identity, /^AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}$/);
    assert.match(recipient, /^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$/);
    assert.equal(recipientFromIdentity(identity), recipient);
    assert.equal(parseRecipient(recipient).length, 32);
  });

  test('bad recipients give a PgarkError with a hint, without echoing secrets', () => {
    const valid = alice.recipient;
    const bad = [
      '',
      'hello',
      valid.slice(0, -1) + (valid.endsWith('q') ? 'p' : 'q'), // checksum
      valid.toUpperCase().slice(0, 10) + valid.slice(10), // mixed case
      bech32Encode('age', randomBytes(31)), // wrong length
      alice.identity, // a secret pasted by mistake
      'age1pq1' + 'q'.repeat(60),
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF',
    ];
    for (const text of bad) {
      assert.throws(() => parseRecipient(text), (error: unknown) => {
        assert.ok(isPgarkError(error, 'CRYPTO'));
        assert.ok(error.hint);
        assert.ok(!`${error.message} ${error.hint}`.includes(alice.identity));
        return true;
      });
    }
    assert.throws(() => createAgeEncryptStream(['nope']), (error: unknown) => isPgarkError(error, 'CRYPTO'));
    assert.throws(() => createAgeEncryptStream([]), (error: unknown) => isPgarkError(error, 'CRYPTO'));
    assert.throws(() => createAgeDecryptStream([alice.recipient]), (error: unknown) => isPgarkError(error, 'CRYPTO'));
  });

  test('identity files: format and parse', () => {
    const text = formatIdentityFile(alice.identity, alice.recipient, new Date('2026-11-21T10:00:00.123Z'));
    assert.equal(text, `# created: 2026-11-21T10:00:00Z\n# public key: ${alice.recipient}\n${alice.identity}\n`);
    assert.deepEqual(parseIdentityFile(text), [alice.identity]);
    const crlf = `# two keys\r\n\r\n${alice.identity}\r\n# another\r\n${bob.identity}\r\n`;
    assert.deepEqual(parseIdentityFile(crlf), [alice.identity, bob.identity]);
    assert.throws(() => formatIdentityFile(alice.identity, bob.recipient, new Date()), (error: unknown) => isPgarkError(error, 'CRYPTO'));
  });

  test('bad identity files name the line, not its content', () => {
    const broken = alice.identity.slice(0, -1) + (alice.identity.endsWith('Q') ? 'P' : 'Q');
    assert.throws(() => parseIdentityFile(`# key\n${broken}\n`), (error: unknown) => {
      assert.ok(isPgarkError(error, 'CRYPTO'));
      assert.match(error.message, /line 2/);
      assert.ok(!error.message.includes(broken.slice(16, 40)));
      return true;
    });
    assert.throws(() => parseIdentityFile('# only comments\n\n'), (error: unknown) => isPgarkError(error, 'CRYPTO'));
  });
});
