/**
 * A repository stays readable without pgark: the data object of a stream (streams/NAME/data-*)
 * in a file:// repository decrypts with stock `age -d -i KEYFILE` (the file `pgark keygen`
 * wrote) and decompresses with stock `zstd -d`, `lz4 -d` or `gzip -d` to the exact bytes that
 * were put — with and without encryption, for every codec.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { keygen, limiter, MiB, mixedData, pgarkOk, sha256, tempDir } from '../support/cli-checks.ts';

const TOOLS = ['age', 'zstd', 'lz4', 'gzip'] as const;
const missing = TOOLS.filter((tool) => spawnSync(tool, ['--version']).error !== undefined);
const skip = missing.length > 0 ? `stock tools missing: ${missing.join(', ')} (apt-get install -y ${missing.join(' ')})` : false;

const DECOMPRESS: Record<string, string[] | null> = { zstd: ['zstd', '-d', '-c'], lz4: ['lz4', '-d', '-c'], gzip: ['gzip', '-d', '-c'], none: null };
const SUFFIX: Record<string, string> = { zstd: '.zst', lz4: '.lz4', gzip: '.gz', none: '' };

const dir = tempDir({ after }, 'pgark-stock-');
const repoDir = join(dir, 'repo');
const repo = `file://${repoDir}`;
const run = limiter(4);
let key: { file: string; recipient: string };

before(async () => {
  key = await keygen(dir);
});

/** Runs a stock tool on `input`; asserts it succeeded. */
function tool(argv: string[], input: Buffer): Buffer {
  const result = spawnSync(argv[0]!, argv.slice(1), { input, maxBuffer: 256 * MiB });
  if (result.error) throw result.error;
  assert.equal(result.status, 0, `${argv.join(' ')} failed: ${result.stderr.toString()}`);
  return result.stdout;
}

/** The one data object of stream `name`, read straight from the repository directory. */
function dataObject(name: string): { file: string; bytes: Buffer } {
  const streamDir = join(repoDir, 'streams', name);
  const files = readdirSync(streamDir).filter((f) => f.startsWith('data-'));
  assert.equal(files.length, 1, `one data object in ${streamDir}: ${files.join(', ')}`);
  return { file: files[0]!, bytes: readFileSync(join(streamDir, files[0]!)) };
}

describe('stream objects read back with age, zstd, lz4 and gzip', { skip, concurrency: true }, () => {
  const samples: [string, Buffer][] = [['3MiB', mixedData(3 * MiB + 12_345)], ['empty', Buffer.alloc(0)]];
  for (const codec of ['zstd', 'lz4', 'gzip', 'none'] as const) {
    for (const encrypted of [true, false]) {
      for (const [label, data] of samples) {
        const name = `${codec}-${encrypted ? 'age' : 'plain'}-${label}`;
        const how = [encrypted ? `age -d -i KEYFILE` : '', DECOMPRESS[codec]?.slice(0, 2).join(' ') ?? ''].filter(Boolean).join(' | ') || 'cat';
        test(`${name}: ${how} gives the original bytes`, async () => {
          await run(() => pgarkOk(['put', name, '--repo', repo, '--compression', codec, ...(encrypted ? ['--recipient', key.recipient] : [])], { stdin: data }));
          const { file, bytes } = dataObject(name);
          assert.ok(file.endsWith(SUFFIX[codec] + (encrypted ? '.age' : '')), `${file} names its codec${encrypted ? ' and encryption' : ''}`);

          let stored = bytes;
          if (encrypted) {
            assert.equal(bytes.subarray(0, 22).toString('latin1'), 'age-encryption.org/v1\n');
            stored = tool(['age', '-d', '-i', key.file], bytes);
          }
          const decompress = DECOMPRESS[codec];
          const content = decompress ? tool(decompress, stored) : stored;
          assert.equal(content.length, data.length);
          assert.equal(sha256(content), sha256(data), `${how} restores the content of ${name}`);
        });
      }
    }
  }
});
