/**
 * Mistakes a user makes, and what pgark answers: for each, a non-zero exit, exactly one
 * `pgark <cmd>: error: ...` line (plus at most one hint line) on stderr, no stack trace, and
 * nothing written — the repository directory, bucket or working directory is as before.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NODE_BIN, PGARK_BIN, pgark, SAFE_BASE_ENV, type CliOptions, type CliResult } from '../support/cli.ts';
import { assertCleanFailure, azureSettings, keygen, limiter, pgarkOk, s3Settings, snapshotTree, tempDir } from '../support/cli-checks.ts';
import { azureEnv, createTestBucket, listKeys, listOpenMultipartUploads, s3Env, skipServers, type TestBucket } from '../support/objstores.ts';
import { createCluster, freePort, type Cluster } from '../support/postgres.ts';

const run = limiter(4);
const cli = (args: string[], options: CliOptions = {}): Promise<CliResult> => run(() => pgark(args, options));

const root = tempDir({ after }, 'pgark-bad-input-');
let seq = 0;
/** A fresh, empty working directory and a repository path inside it that does not exist yet. */
function workspace(): { cwd: string; repoDir: string; repo: string } {
  const cwd = join(root, `ws-${++seq}`);
  mkdirSync(cwd);
  const repoDir = join(cwd, 'repo');
  return { cwd, repoDir, repo: `file://${repoDir}` };
}

/** Runs `args` in a fresh workspace; asserts a clean failure and that the workspace stayed empty. */
async function failsCleanly(command: string | undefined, args: (repo: string, cwd: string) => string[], expected: RegExp, options: CliOptions = {}) {
  const { cwd, repo } = workspace();
  const result = await cli(args(repo, cwd), { stdin: 'some input\n', ...options, cwd });
  const lines = assertCleanFailure(result, command, expected);
  assert.deepEqual(snapshotTree(cwd).filter((l) => !l.startsWith('pgark.yaml ')), [], 'nothing written');
  assert.equal(result.stdout.length, 0, 'nothing on stdout');
  return { ...lines, result };
}

function writeConfig(dir: string, text: string): string {
  const path = join(dir, 'pgark.yaml');
  writeFileSync(path, text);
  return path;
}

describe('bad input: one clear error line, nothing written', { concurrency: true }, () => {
  describe('malformed repository URLs', { concurrency: true }, () => {
    const cases: [string, RegExp][] = [
      ['/var/lib/pgark', /a bare path is not a URL/],
      ['file://var/lib/pgark', /file URLs need an absolute path/],
      ['var/lib/pgark', /no scheme/],
      ['s3://My_Bucket/prefix', /"My_Bucket" is not a valid bucket name/],
      ['s3://ab', /"ab" is not a valid bucket name/],
      ['s3:///prefix-only', /"" is not a valid bucket name/],
      ['s3://good-bucket/a/../b', /the prefix may not contain "\." or "\.\." segments/],
      ['azure://Container/x', /"Container" is not a valid container name/],
      ['azure://my--container/x', /"my--container" is not a valid container name/],
      ['ftp://host/dir', /unknown scheme "ftp"/],
      ['gs://bucket/prefix', /Google Cloud Storage is reached through its S3-compatible API/],
    ];
    for (const [url, why] of cases) {
      test(`--repo ${url}`, async () => {
        const { error, hint } = await failsCleanly('put', () => ['put', 'backup1', '--repo', url], new RegExp(`invalid repository URL "${url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}": ${why.source}`));
        assert.ok(hint, `a hint says what a repository URL looks like: ${error}`);
      });
    }
    test('PGARK_REPO=s3://UPPER (from the environment)', async () => {
      await failsCleanly('ls', () => ['ls'], /invalid repository URL "s3:\/\/UPPER"/, { env: { PGARK_REPO: 's3://UPPER' } });
    });
  });

  test('unknown key in the YAML config file: names the file and the key, suggests the right one', async () => {
    const { cwd, repo } = workspace();
    const config = writeConfig(cwd, `repo: ${repo}\ncompresion: zstd\n`);
    const result = await cli(['put', 'backup1', '--config', config], { cwd, stdin: 'x' });
    const { hint } = assertCleanFailure(result, 'put', new RegExp(`config file ${config.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: unknown setting "compresion"`));
    assert.match(hint ?? '', /did you mean "compression"/);
    assert.deepEqual(snapshotTree(cwd).map((l) => l.split(' ')[0]), ['pgark.yaml']);
  });

  test('config file that is not YAML key/values', async () => {
    const { cwd, repo } = workspace();
    const config = writeConfig(cwd, `repo: ${repo}\n  part-size: [8MiB\n`);
    const result = await cli(['ls', '--config', config], { cwd });
    assertCleanFailure(result, 'ls', /config file .*pgark\.yaml: invalid YAML at line \d+/);
  });

  test('config file that does not exist (PGARK_CONFIG)', async () => {
    await failsCleanly('ls', () => ['ls'], /cannot read config file .*nope\.yaml: no such file/, { env: { PGARK_CONFIG: join(root, 'nope.yaml') } });
  });

  test('unknown PGARK_ environment variable: named, with a suggestion', async () => {
    const { hint } = await failsCleanly('put', (repo) => ['put', 'backup1', '--repo', repo], /environment: unknown setting "PGARK_COMPRESSON"/, { env: { PGARK_COMPRESSON: 'zstd' } });
    assert.match(hint ?? '', /did you mean "compression"/);
  });

  describe('values of the wrong type', { concurrency: true }, () => {
    const cases: [string, string[], Record<string, string>, string | undefined, RegExp][] = [
      ['--process-max lots', ['--process-max', 'lots'], {}, undefined, /flag --process-max: process-max must be an integer from 1 to 64 \(got "lots"\)/],
      ['--part-size 512 (below the minimum)', ['--part-size', '512'], {}, undefined, /flag --part-size: part-size must be a size such as 8MiB or 1G \(at least 1024 bytes\) \(got "512"\)/],
      ['--compression brotli', ['--compression', 'brotli'], {}, undefined, /flag --compression: compression must be one of zstd, lz4, gzip, none/],
      ['--request-timeout soon', ['--request-timeout', 'soon'], {}, undefined, /flag --request-timeout: request-timeout must be a duration/],
      ['PGARK_RETRY_MAX=0', [], { PGARK_RETRY_MAX: '0' }, undefined, /environment PGARK_RETRY_MAX: retry-max must be an integer from 1 to 50 \(got "0"\)/],
      ['PGARK_S3_FORCE_PATH_STYLE=maybe', [], { PGARK_S3_FORCE_PATH_STYLE: 'maybe' }, undefined, /environment PGARK_S3_FORCE_PATH_STYLE: s3-force-path-style must be true or false/],
      ['part-size: [1, 2] in the config file', [], {}, 'part-size: [1, 2]\n', /config file .*pgark\.yaml: part-size must be a size/],
      ['process-max: 0 in the config file', [], {}, 'process-max: 0\n', /config file .*pgark\.yaml: process-max must be an integer from 1 to 64 \(got 0\)/],
    ];
    for (const [label, flags, env, configLine, expected] of cases) {
      test(label, async () => {
        await failsCleanly('put', (repo, cwd) => {
          const config = configLine === undefined ? [] : ['--config', writeConfig(cwd, `repo: ${repo}\n${configLine}`)];
          return ['put', 'backup1', '--repo', repo, ...config, ...flags];
        }, expected, { env });
      });
    }
  });

  describe('object stores', { concurrency: true, skip: skipServers() }, () => {
    let bucket: TestBucket;
    before(async () => {
      bucket = await createTestBucket('rgw', { prefix: 'bad-input' });
    });
    after(() => bucket?.cleanup());
    const unchanged = async () => {
      assert.deepEqual(await listKeys(bucket.client, bucket.name), [], 'bucket unchanged');
      assert.deepEqual(await listOpenMultipartUploads(bucket.client, bucket.name), [], 'no upload started');
    };

    test('S3 without any credentials (no env, no profile, no instance metadata)', async () => {
      const { cwd } = workspace();
      const started = Date.now();
      const result = await cli(['put', 'backup1', '--repo', `s3://${bucket.name}/r`, '--s3-endpoint', s3Env('rgw').endpoint], {
        cwd,
        stdin: 'data',
        cleanEnv: true, // PATH and HOME only, plus SAFE_BASE_ENV: AWS_EC2_METADATA_DISABLED=true
        env: { HOME: cwd, AWS_CONFIG_FILE: join(cwd, 'no-aws-config'), AWS_SHARED_CREDENTIALS_FILE: join(cwd, 'no-aws-credentials') },
      });
      const { hint } = assertCleanFailure(result, 'put', /no S3 credentials found for s3:\/\//);
      assert.match(hint ?? '', /AWS_ACCESS_KEY_ID/);
      assert.ok(Date.now() - started < 60_000, 'fails without waiting on a metadata service');
      assert.deepEqual(snapshotTree(cwd), []);
      await unchanged();
    });

    test('S3 endpoint nobody listens on (--retry-max 2)', async () => {
      const port = await freePort();
      const started = Date.now();
      await failsCleanly('put', () => ['put', 'backup1', '--repo', `s3://${bucket.name}/r`, '--retry-max', '2'],
        new RegExp(`cannot reach http://127\\.0\\.0\\.1:${port} to download pgark\\.json after 2 attempts \\(ECONNREFUSED\\)`),
        { env: { ...s3Settings(s3Env('rgw')), PGARK_S3_ENDPOINT: `http://127.0.0.1:${port}` } });
      assert.ok(Date.now() - started < 60_000, `bounded: ${Date.now() - started} ms`);
      await unchanged();
    });

    test('Azure endpoint nobody listens on (--retry-max 2)', async () => {
      const port = await freePort();
      const { account, key } = azureEnv();
      const connectionString = `DefaultEndpointsProtocol=http;AccountName=${account};AccountKey=${key};BlobEndpoint=http://127.0.0.1:${port}/${account};`;
      const started = Date.now();
      await failsCleanly('put', () => ['put', 'backup1', '--repo', 'azure://some-container/r', '--retry-max', '2'],
        new RegExp(`cannot reach azure://some-container/r/ at http://127\\.0\\.0\\.1:${port}/${account} to download pgark\\.json after 2 attempts`),
        { env: { PGARK_AZURE_CONNECTION_STRING: connectionString } });
      assert.ok(Date.now() - started < 60_000, `bounded: ${Date.now() - started} ms`);
    });

    test('S3 bucket that does not exist', async () => {
      await failsCleanly('put', () => ['put', 'backup1', '--repo', `s3://${bucket.name}-missing/r`], /bucket ".*-missing" does not exist/, { env: s3Settings(s3Env('rgw')) });
    });

    test('get of a stream that does not exist in an S3 repository: exit 1', async () => {
      const { result } = await failsCleanly('get', () => ['get', 'nosuch', '--repo', `s3://${bucket.name}/r`], /no stream named "nosuch" in s3:\/\//, { env: s3Settings(s3Env('rgw')) });
      assert.equal(result.code, 1);
      await unchanged();
    });

    test('Azure container that does not exist', async () => {
      await failsCleanly('ls', () => ['ls', '--repo', 'azure://pgark-no-such-container/r'], /container "pgark-no-such-container" does not exist/, { env: azureSettings(azureEnv()) });
    });
  });

  test('identity file readable by others (mode 0644) is refused; nothing written', async () => {
    const { cwd, repoDir, repo } = workspace();
    const key = await keygen(cwd);
    await cli(['put', 'secret-stream', '--repo', repo, '--recipient', key.recipient], { stdin: 'confidential' }).then((r) => assert.equal(r.code, 0, r.stderr));
    chmodSync(key.file, 0o644);
    const before = snapshotTree(repoDir);
    const result = await cli(['get', 'secret-stream', '--repo', repo, '--identity', key.file]);
    const { hint } = assertCleanFailure(result, 'get', new RegExp(`identity file ${key.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is accessible by others \\(mode 0644\\)`));
    assert.match(hint ?? '', /chmod 600/);
    assert.equal(result.stdout.length, 0, 'not a byte of the stream is written');
    assert.deepEqual(snapshotTree(repoDir), before);
  });

  test('encrypted stream and no identity configured', async () => {
    const { cwd, repoDir, repo } = workspace();
    const key = await keygen(cwd);
    await cli(['put', 's', '--repo', repo, '--recipient', key.recipient], { stdin: 'confidential' }).then((r) => assert.equal(r.code, 0, r.stderr));
    const before = snapshotTree(repoDir);
    const result = await cli(['get', 's', '--repo', repo]);
    assertCleanFailure(result, 'get', /stream "s" is encrypted and no identity is configured/);
    assert.equal(result.stdout.length, 0);
    assert.deepEqual(snapshotTree(repoDir), before);
  });

  test('a recipient that is not an age recipient', async () => {
    await failsCleanly('put', (repo) => ['put', 'backup1', '--repo', repo, '--recipient', 'age1notarecipient'], /flag --recipient: /);
  });

  test('a repository of another cluster: init refuses (REPO_MISMATCH), pgark.json unchanged', async () => {
    const [a, b] = await Promise.all([createCluster(), createCluster()]) as [Cluster, Cluster];
    try {
      const { repoDir, repo } = workspace();
      const pg = (c: Cluster) => ['--pg-host', '127.0.0.1', '--pg-port', String(c.port), '--pg-user', 'postgres'];
      await pgarkOk(['init', '--repo', repo, ...pg(a)]);
      const before = snapshotTree(repoDir);
      assert.deepEqual(before.map((l) => l.split(' ')[0]), ['pgark.json']);
      const [sysA, sysB] = await Promise.all([a.sql('SELECT system_identifier FROM pg_control_system()'), b.sql('SELECT system_identifier FROM pg_control_system()')]);
      const result = await cli(['init', '--repo', repo, ...pg(b)]);
      const { hint } = assertCleanFailure(result, 'init', new RegExp(`belongs to another cluster \\(system identifier ${sysA}, PostgreSQL 15\\); this one is ${sysB}`));
      assert.match(hint ?? '', /separate repository/);
      assert.deepEqual(snapshotTree(repoDir), before, 'pgark.json unchanged');
    } finally {
      await Promise.all([a.destroy(), b.destroy()]);
    }
  });

  test('unknown command', async () => {
    const { hint } = await failsCleanly(undefined, () => ['lss', '--repo', 'file:///nonexistent'], /unknown command "lss"/);
    assert.match(hint ?? '', /did you mean `pgark ls`/);
  });

  test('unknown flag', async () => {
    const { hint } = await failsCleanly('put', (repo) => ['put', 'backup1', '--repo', repo, '--compresion', 'zstd'], /unknown option '--compresion'/);
    assert.match(hint ?? '', /pgark put --help/);
  });

  test('missing argument', async () => {
    const { hint } = await failsCleanly('put', (repo) => ['put', '--repo', repo], /missing argument/);
    assert.match(hint ?? '', /usage: .*pgark put NAME/);
  });

  test('unexpected argument', async () => {
    await failsCleanly('ls', (repo) => ['ls', 'extra', '--repo', repo], /unexpected argument "extra"/);
  });

  test('a flag without its value', async () => {
    await failsCleanly('put', () => ['put', 'backup1', '--repo'], /option '--repo <value>' argument missing/);
  });

  test('invalid stream name', async () => {
    await failsCleanly('put', (repo) => ['put', '../etc', '--repo', repo], /invalid stream name "\.\.\/etc"/);
  });

  test('no repository configured at all', async () => {
    const { hint } = await failsCleanly('ls', () => ['ls'], /missing setting repo/);
    assert.match(hint ?? '', /--repo/);
  });

  test('get of a stream that does not exist: exit 1, nothing written', async () => {
    const { repoDir, repo } = workspace();
    await pgarkOk(['put', 'exists', '--repo', repo], { stdin: 'x' });
    const before = snapshotTree(repoDir);
    const result = await cli(['get', 'nosuch', '--repo', repo]);
    const { hint } = assertCleanFailure(result, 'get', /no stream named "nosuch" in file:\/\//);
    assert.equal(result.code, 1, 'not found is exit status 1');
    assert.match(hint ?? '', /pgark ls/);
    assert.equal(result.stdout.length, 0);
    assert.deepEqual(snapshotTree(repoDir), before);
  });
});

test('a full local disk is a clear error with a hint, not an internal error (pgark get > /dev/full)', async () => {
  const { cwd, repo } = workspace();
  await pgarkOk(['put', 's1', '--repo', repo], { cwd, stdin: Buffer.alloc(3 << 20, 7) });
  const full = openSync('/dev/full', 'w');
  try {
    const r = spawnSync(NODE_BIN, [PGARK_BIN, 'get', 's1', '--repo', repo], { cwd, env: { ...process.env, ...SAFE_BASE_ENV }, stdio: ['ignore', full, 'pipe'], encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 2, r.stderr);
    const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('{'));
    assert.match(lines[0]!, /^pgark get: error: ENOSPC/);
    assert.match(lines[1]!, /^pgark get: hint: a local disk is full/);
    assert.ok(!/internal error/.test(r.stderr));
  } finally {
    closeSync(full);
  }
});
