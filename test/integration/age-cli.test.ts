/**
 * Interop with the reference `age` / `age-keygen` CLIs (Debian package `age`): whatever pgark
 * encrypts must be recoverable with stock tools, and vice versa.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, describe, test } from 'node:test';
import { isPgarkError } from '../../src/errors.ts';
import {
  createAgeDecryptStream,
  createAgeEncryptStream,
  formatIdentityFile,
  generateIdentity,
  parseIdentityFile,
  recipientFromIdentity,
} from '../../src/pipeline/age.ts';

const ageAvailable = spawnSync('age', ['--version']).error === undefined;
const skip = ageAvailable ? false : 'the `age` CLI is not on PATH (install it with `apt-get install -y age`)';

const SIZES = [0, 1, 64 * 1024, 5 * 1024 * 1024];
const dir = mkdtempSync(join(tmpdir(), 'pgark-age-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function cli(command: string, args: string[], input?: Buffer): Buffer {
  const result = spawnSync(command, args, { input, maxBuffer: 64 * 1024 * 1024 });
  if (result.error) throw result.error;
  assert.equal(result.status, 0, `${command} ${args.join(' ')} failed: ${result.stderr.toString()}`);
  return result.stdout;
}

async function run(transform: Transform, data: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  // Feed in 100 KiB pieces so chunk boundaries never line up with age's 64 KiB chunks.
  const pieces: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += 100_000) pieces.push(data.subarray(offset, offset + 100_000));
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

describe('age CLI interop', { skip }, () => {
  const ours = generateIdentity();
  const ourKeyFile = join(dir, 'pgark-key.txt');
  writeFileSync(ourKeyFile, formatIdentityFile(ours.identity, ours.recipient, new Date()));

  // An identity file written by age-keygen itself.
  const theirKeyFile = join(dir, 'age-keygen-key.txt');
  if (ageAvailable) cli('age-keygen', ['-o', theirKeyFile]);

  test('age-keygen identity files parse, and give the same recipient as age-keygen -y', () => {
    const text = readFileSync(theirKeyFile, 'utf8');
    assert.match(text, /^# created: /);
    const identities = parseIdentityFile(text);
    assert.equal(identities.length, 1);
    const expected = cli('age-keygen', ['-y', theirKeyFile]).toString().trim();
    assert.equal(recipientFromIdentity(identities[0]!), expected);
    assert.ok(text.includes(`# public key: ${expected}\n`));
  });

  test('formatIdentityFile output is accepted by age-keygen -y', () => {
    assert.equal(cli('age-keygen', ['-y', ourKeyFile]).toString().trim(), ours.recipient);
  });

  for (const size of SIZES) {
    test(`pgark encrypts ${size} bytes, age -d decrypts (with our key file and an age-keygen one)`, async () => {
      const plaintext = randomBytes(size);
      const theirRecipient = cli('age-keygen', ['-y', theirKeyFile]).toString().trim();
      const file = join(dir, `ours-${size}.age`);
      writeFileSync(file, await run(createAgeEncryptStream([ours.recipient, theirRecipient]), plaintext));
      assert.ok(cli('age', ['-d', '-i', ourKeyFile, file]).equals(plaintext));
      assert.ok(cli('age', ['-d', '-i', theirKeyFile, file]).equals(plaintext));
    });

    test(`age -r encrypts ${size} bytes, pgark decrypts`, async () => {
      const plaintext = randomBytes(size);
      const other = generateIdentity();
      const encrypted = cli('age', ['-r', other.recipient, '-r', ours.recipient], plaintext);
      assert.ok((await run(createAgeDecryptStream([ours.identity]), encrypted)).equals(plaintext));
    });
  }

  test('age -r with an age-keygen key, pgark decrypts with the parsed key file', async () => {
    const plaintext = randomBytes(300_000);
    const theirRecipient = cli('age-keygen', ['-y', theirKeyFile]).toString().trim();
    const encrypted = cli('age', ['-r', theirRecipient], plaintext);
    const identities = parseIdentityFile(readFileSync(theirKeyFile, 'utf8'));
    assert.ok((await run(createAgeDecryptStream(identities), encrypted)).equals(plaintext));
  });

  test('tampering with an age CLI file is detected', async () => {
    const encrypted = cli('age', ['-r', ours.recipient], randomBytes(200_000));
    encrypted[encrypted.length - 100]! ^= 1;
    await assert.rejects(run(createAgeDecryptStream([ours.identity]), encrypted), (error: unknown) => isPgarkError(error, 'INTEGRITY'));
  });

  test('armored age output is refused with a hint', async () => {
    const armored = cli('age', ['-a', '-r', ours.recipient], Buffer.from('hello'));
    await assert.rejects(run(createAgeDecryptStream([ours.identity]), armored), (error: unknown) => {
      assert.ok(isPgarkError(error, 'CRYPTO'));
      assert.match(error.hint ?? '', /armor/i);
      return true;
    });
  });
});
