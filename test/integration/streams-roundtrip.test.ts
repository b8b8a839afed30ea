/**
 * `pgark put NAME` / `pgark get NAME` / `pgark ls` as a user runs them, against every driver
 * (file://, s3:// on Ceph RGW, s3:// on Swift s3api, azure:// on Azurite) × every codec
 * (zstd, lz4, gzip, none) × without and with age encryption (pgark keygen → --recipient /
 * --identity), for 0 B, 1 B and 10 MiB (compressible and random mixed): what comes out of
 * `get` is byte-identical to what went into `put`, the stored objects carry the codec's
 * suffix, `ls` and `ls --json` show every stream with its size, and a second put under an
 * existing name is refused and changes nothing.
 *
 * Then a "large" stream that needs more than 10,000 parts at its first part size (1 KiB,
 * 10.1 MiB of random data): uploaded in ~3,300 growing parts on RGW and Azurite, which the
 * object's part count (the S3 ETag's "-N" suffix, Azure's committed block list) shows.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { partSizeFor } from '../../src/storage/parts.ts';
import { formatBytes } from '../../src/util/units.ts';
import { pgark } from '../support/cli.ts';
import {
  assertCleanFailure, azureSettings, keygen, KiB, limiter, MiB, mixedData, pgarkOk, s3Settings, sha256, snapshotTree, tempDir,
} from '../support/cli-checks.ts';
import {
  azureEnv, blobServiceClient, createTestBucket, createTestContainer, listBlobNames, listKeys, listOpenMultipartUploads, listUncommittedBlobs,
  s3Client, s3Env, skipServers, type AfterHook,
} from '../support/objstores.ts';

type DriverName = 'file' | 'rgw' | 'swift' | 'azure';
const CODECS = ['zstd', 'lz4', 'gzip', 'none'] as const;
const SUFFIX = { zstd: '.zst', lz4: '.lz4', gzip: '.gz', none: '' } as const;

const SIZES: [string, Buffer][] = [
  ['0B', Buffer.alloc(0)],
  ['1B', Buffer.from([0x42])],
  ['10MiB', mixedData(10 * MiB)],
];

/** CLI processes at a time for the matrix (the large uploads run beside them): the machine has 2 cores. */
const run = limiter(4);
/** Generous: the test machine is shared and at times many times slower than idle. */
const SLOW = { timeoutMs: 540_000 };

const keyDir = tempDir({ after }, 'pgark-roundtrip-keys-');
let keys: { file: string; recipient: string };
before(async () => {
  keys = await keygen(keyDir);
});

interface Repo {
  url: string;
  env: Record<string, string>;
  /** every stored key/blob/file under the repository, sorted */
  objects(): Promise<string[]>;
}

/** A new, empty repository on `driver`; `hook.after` removes it. */
async function openRepo(hook: AfterHook, driver: DriverName, label: string): Promise<Repo> {
  switch (driver) {
    case 'file': {
      const dir = join(tempDir(hook), 'repo');
      return { url: `file://${dir}`, env: {}, objects: async () => snapshotTree(dir).filter((l) => !l.endsWith('/')).map((l) => l.split(' ')[0]!) };
    }
    case 'rgw':
    case 'swift': {
      const bucket = await createTestBucket(driver, { prefix: label, t: hook });
      return {
        url: `s3://${bucket.name}/some/prefix`,
        env: s3Settings(s3Env(driver)),
        objects: async () => (await listKeys(bucket.client, bucket.name)).map((k) => k.replace(/^some\/prefix\//, '')).sort(),
      };
    }
    case 'azure': {
      const container = await createTestContainer({ prefix: label, t: hook });
      return {
        url: `azure://${container.name}/some/prefix`,
        env: azureSettings(azureEnv()),
        objects: async () => (await listBlobNames(container.client)).map((k) => k.replace(/^some\/prefix\//, '')).sort(),
      };
    }
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

interface LsEntry { name: string; createdAt: string; size: number; storedSize: number; sha256: string; encrypted: boolean }

/** Parts needed to store `size` bytes with parts growing from `initial` (S3's schedule). */
function expectedParts(size: number, initial: number): number {
  const schedule = { initialPartSize: initial, maxPartSize: 5 * 1024 * MiB, maxParts: 10_000 };
  let parts = 0;
  for (let covered = 0; covered < size; parts++) covered += partSizeFor(parts, schedule);
  return parts;
}

describe('streams', { concurrency: true, skip: skipServers() }, () => {
  // the large uploads first: they mostly wait on ~3,300 requests each and overlap well with the rest
  describe('a stream needing more than 10,000 parts at its first part size', { concurrency: true }, () => {
    const large = randomBytes(Math.round(10.1 * MiB));
    const PART = 1 * KiB;
  
    for (const driver of ['rgw', 'azure'] as const) {
      for (const encrypted of [true, false]) {
        const label = encrypted ? 'zstd + age' : 'no compression, no encryption';
        test(`${driver}, ${label}: 10.1 MiB with --part-size 1KiB goes up in growing parts, byte-identical`, async (t) => {
          const repo = await openRepo(t, driver, `large-${driver}`);
          const args = ['--repo', repo.url];
          const codec = encrypted ? ['--compression', 'zstd', '--recipient', keys.recipient] : ['--compression', 'none'];
          const put = await pgark(['put', 'big', ...args, ...codec, '--part-size', '1KiB', '--process-max', '16'], { env: repo.env, stdin: large, timeoutMs: 540_000 });
          assert.equal(put.code, 0, put.stderr);
          const [entry] = JSON.parse((await pgarkOk(['ls', '--json', ...args], { env: repo.env, ...SLOW })).stdout.toString()) as LsEntry[];
          assert.ok(entry);
          assert.equal(entry.size, large.length);
          assert.ok(Math.ceil(entry.storedSize / PART) > 10_000, `at a fixed 1 KiB it would take ${Math.ceil(entry.storedSize / PART)} parts`);
          const expected = expectedParts(entry.storedSize, PART);
          assert.ok(expected < 4_000);
  
          const dataKey = (await repo.objects()).find((k) => k.startsWith('streams/big/data-'))!;
          if (driver === 'rgw') {
            const bucket = /^s3:\/\/([^/]+)\//.exec(repo.url)![1]!;
            const client = s3Client(s3Env('rgw'));
            const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `some/prefix/${dataKey}` }));
            const parts = Number(/-(\d+)"?$/.exec(head.ETag ?? '')?.[1]);
            assert.equal(head.ContentLength, entry.storedSize);
            assert.equal(parts, expected, `multipart ETag ${head.ETag}: ${expected} parts expected`);
            assert.ok(parts < 10_000);
            assert.deepEqual(await listOpenMultipartUploads(client, bucket), [], 'no upload left open');
            client.destroy();
          } else {
            const container = /^azure:\/\/([^/]+)\//.exec(repo.url)![1]!;
            const client = blobServiceClient().getContainerClient(container);
            const list = await client.getBlockBlobClient(`some/prefix/${dataKey}`).getBlockList('committed');
            const sizes = list.committedBlocks!.map((b) => b.size);
            assert.equal(sizes.length, expected, `committed blocks: ${expected} expected`);
            assert.deepEqual([sizes[0], sizes[899], sizes[900], sizes[1800], sizes[2700]], [PART, PART, 2 * PART, 4 * PART, 8 * PART], 'block sizes double every 900 blocks');
            assert.equal(sizes.reduce((a, b) => a + b, 0), entry.storedSize);
            assert.deepEqual(await listUncommittedBlobs(client), [], 'no uncommitted blocks left');
          }
  
          const get = await pgark(['get', 'big', ...args, ...(encrypted ? ['--identity', keys.file] : [])], { env: repo.env, ...SLOW });
          assert.equal(get.code, 0, get.stderr);
          assert.equal(sha256(get.stdout), sha256(large), 'byte-identical');
        });
      }
    }
  });

  describe('put, get and ls through every driver, codec and encryption', { concurrency: true }, () => {
    const cases = CODECS.flatMap((codec) => [false, true].flatMap((encrypted) => SIZES.map(([sizeLabel, data]) => ({
      codec, encrypted, data, name: `${codec}-${encrypted ? 'age' : 'plain'}-${sizeLabel}`,
    }))));

    for (const driver of ['file', 'rgw', 'swift', 'azure'] as const) {
      // per driver: the codecs concurrently, then ls and the refused overwrite over all 24 streams
      describe(driver, { concurrency: false }, () => {
        let repo: Repo;
        const hooks: (() => unknown)[] = [];
        before(async () => { repo = await openRepo({ after: (fn) => hooks.push(fn) }, driver, `rt-${driver}`); });
        after(async () => { for (const fn of hooks) await fn(); });

        describe('round trips', { concurrency: true }, () => {
          for (const codec of CODECS) {
            test(`${driver}, ${codec}: plain and encrypted, 0 B, 1 B and 10 MiB come back byte-identical`, async () => {
              await Promise.all(cases.filter((c) => c.codec === codec).map(async ({ encrypted, data, name }) => {
                const base = ['--repo', repo.url];
                const put = await run(() => pgark(['put', name, ...base, '--compression', codec, ...(encrypted ? ['--recipient', keys.recipient] : [])], { env: repo.env, stdin: data, ...SLOW }));
                assert.equal(put.code, 0, `put ${name} on ${driver}: ${put.stderr}`);
                assert.equal(put.stdout.length, 0, 'put writes nothing to stdout');
                const stored = JSON.parse(put.stderr.split('\n').find((l) => l.includes('"stored stream'))!) as { encrypted: boolean };
                assert.equal(stored.encrypted, encrypted, `put ${name} logs whether it encrypted`);

                const get = await run(() => pgark(['get', name, ...base, ...(encrypted ? ['--identity', keys.file] : [])], { env: repo.env, ...SLOW }));
                assert.equal(get.code, 0, `get ${name} on ${driver}: ${get.stderr}`);
                assert.equal(get.stdout.length, data.length, `get ${name}: length`);
                assert.ok(get.stdout.equals(data), `get ${name} on ${driver} returns the very bytes put`);
              }));
            });
          }
        });

        test(`${driver}: the stored objects, ls and ls --json show every stream; a second put of a name is refused`, async () => {
          const base = ['--repo', repo.url];
          // One manifest and one data object per stream, suffix = codec (+ .age).
          const objects = await repo.objects();
          for (const { codec, encrypted, name } of cases) {
            const data = objects.filter((k) => k.startsWith(`streams/${name}/data-`));
            assert.equal(data.length, 1, `one data object for ${name}: ${objects.join(', ')}`);
            assert.match(data[0]!, new RegExp(`^streams/${escapeRegExp(name)}/data-[^/.]+${escapeRegExp(SUFFIX[codec] + (encrypted ? '.age' : ''))}$`));
            assert.ok(objects.includes(`streams/${name}/manifest.json`));
          }
          assert.equal(objects.length, cases.length * 2, `nothing else was stored: ${objects.join(', ')}`);

          // ls --json: every stream with its exact size, digest and encryption.
          const lsJson = await run(() => pgarkOk(['ls', '--json', ...base], { env: repo.env, ...SLOW }));
          const entries = JSON.parse(lsJson.stdout.toString()) as LsEntry[];
          assert.deepEqual(entries.map((e) => e.name).sort(), cases.map((c) => c.name).sort());
          for (const { name, data, encrypted, codec } of cases) {
            const entry = entries.find((e) => e.name === name)!;
            assert.equal(entry.size, data.length, `${name}: size`);
            assert.equal(entry.sha256, sha256(data), `${name}: sha256`);
            assert.equal(entry.encrypted, encrypted, `${name}: encrypted`);
            assert.ok(Number.isFinite(Date.parse(entry.createdAt)), `${name}: createdAt`);
            if (codec === 'none' && !encrypted) assert.equal(entry.storedSize, data.length, `${name}: stored as is`);
            else assert.ok(entry.storedSize > 0, `${name}: a codec frame or age header is stored even for no content`);
            if (data.length === 10 * MiB && codec !== 'none') assert.ok(entry.storedSize < data.length * 0.75, `${name}: ${codec} compressed the text half (${entry.storedSize})`);
          }

          // ls: a table with a header and one row per stream, sizes human-readable.
          const ls = await run(() => pgarkOk(['ls', ...base], { env: repo.env, ...SLOW }));
          const rows = ls.stdout.toString().trimEnd().split('\n');
          assert.match(rows[0]!, /^NAME\s+SIZE\s+STORED\s+CREATED \(UTC\)\s+ENCRYPTED$/);
          assert.equal(rows.length, cases.length + 1);
          for (const { name, data, encrypted } of cases) {
            const entry = entries.find((e) => e.name === name)!;
            const row = rows.find((r) => r.startsWith(`${name} `));
            assert.ok(row, `ls lists ${name}:\n${ls.stdout}`);
            assert.match(row, new RegExp(`^${escapeRegExp(name)}\\s+${escapeRegExp(formatBytes(data.length))}\\s+${escapeRegExp(formatBytes(entry.storedSize))}\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\s+${encrypted ? 'yes' : 'no'}$`));
          }

          // A second put under an existing name: refused, and nothing changes.
          const before = await repo.objects();
          const again = await run(() => pgark(['put', 'zstd-age-1B', ...base, '--recipient', keys.recipient], { env: repo.env, stdin: randomBytes(64 * KiB), ...SLOW }));
          const { error } = assertCleanFailure(again, 'put', /stream "zstd-age-1B" already exists/);
          assert.ok(!error.includes(keys.recipient));
          assert.deepEqual(await repo.objects(), before, 'the refused put stored nothing');
          const still = await run(() => pgarkOk(['get', 'zstd-age-1B', ...base, '--identity', keys.file], { env: repo.env, ...SLOW }));
          assert.ok(still.stdout.equals(Buffer.from([0x42])), 'the stored stream still has its first content');
          const manifest = entries.find((e) => e.name === 'zstd-age-1B')!;
          const lsAfter = JSON.parse((await run(() => pgarkOk(['ls', '--json', ...base], { env: repo.env, ...SLOW }))).stdout.toString()) as LsEntry[];
          assert.deepEqual(lsAfter.find((e) => e.name === 'zstd-age-1B'), manifest, 'its manifest is unchanged');

          if (driver === 'file') {
            // Encrypted objects are age files; plain ones are frames of their codec.
            const dir = repo.url.slice('file://'.length);
            const head = (name: string) => {
              const d = join(dir, 'streams', name);
              return readFileSync(join(d, readdirSync(d).find((f) => f.startsWith('data-'))!)).subarray(0, 22);
            };
            assert.equal(head('zstd-age-1B').toString('latin1'), 'age-encryption.org/v1\n');
            assert.equal(head('zstd-plain-1B').readUInt32LE(0), 0xfd2fb528, 'zstd magic');
            assert.deepEqual([...head('gzip-plain-1B').subarray(0, 2)], [0x1f, 0x8b], 'gzip magic');
            assert.equal(head('lz4-plain-1B').readUInt32LE(0), 0x184d2204, 'lz4 frame magic');
          }
        });
      });
    }
  });
});
