/**
 * No secret ever reaches stdout or stderr — not in error messages, not in logs, not in the
 * stack traces of --debug: S3 secret keys and session tokens, SSE-C keys, Azure account keys,
 * connection strings and SAS tokens, the PostgreSQL password, and the content of age identity
 * files. Each secret is used in commands that succeed and in commands that fail (wrong secret,
 * malformed secret, secret given where something else was expected), with `--debug
 * --log-level debug` where the command allows it, and all output is searched for it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AccountSASPermissions, AccountSASResourceTypes, AccountSASServices, generateAccountSASQueryParameters, SASProtocol, StorageSharedKeyCredential } from '@azure/storage-blob';
import { pgark, type CliOptions, type CliResult } from '../support/cli.ts';
import { keygen, limiter, pgarkOk, s3Settings, tempDir } from '../support/cli-checks.ts';
import { azureEnv, createTestBucket, createTestContainer, s3Env, skipServers, type TestBucket, type TestContainer } from '../support/objstores.ts';
import { createCluster, type Cluster } from '../support/postgres.ts';

const run = limiter(4);
const DEBUG = ['--debug', '--log-level', 'debug'];
const root = tempDir({ after }, 'pgark-secrets-');

/** Runs pgark and asserts that none of `secrets` (nor a URL-encoded form) is in its output. */
async function noLeak(secrets: string[], args: string[], options: CliOptions = {}, expectCode?: 'ok' | 'fail'): Promise<CliResult> {
  const result = await run(() => pgark(args, options));
  const output = `${result.stdout.toString('latin1')}\n${result.stderr}`;
  for (const secret of secrets) {
    assert.ok(secret.length >= 8, 'a secret worth looking for');
    for (const form of new Set([secret, encodeURIComponent(secret)])) {
      const lines = output.split('\n').filter((line) => line.includes(form));
      assert.deepEqual(lines, [], `pgark ${args[0]} printed a secret (${form.slice(0, 6)}…)`);
    }
  }
  if (expectCode === 'ok') assert.equal(result.code, 0, `pgark ${args.join(' ')} should succeed:\n${result.stderr}`);
  if (expectCode === 'fail') {
    assert.notEqual(result.code, 0, `pgark ${args.join(' ')} should fail`);
    assert.match(result.stderr, /^pgark [a-z-]+: error: .+/m, 'says why it failed');
  }
  return result;
}

describe('secrets never appear in the output', { concurrency: true }, () => {
  describe('S3', { concurrency: true, skip: skipServers() }, () => {
    let bucket: TestBucket;
    before(async () => { bucket = await createTestBucket('rgw', { prefix: 'secrets' }); });
    after(() => bucket?.cleanup());
    const repo = (prefix = 'keys') => ['--repo', `s3://${bucket.name}/${prefix}`];

    test('secret access key: right (put, get, ls with --debug) and wrong (flag, env, config file)', async () => {
      const env = s3Env('rgw');
      const real = env.secretAccessKey;
      const wrong = `wrong-${randomBytes(12).toString('hex')}`;
      const base = { PGARK_S3_ENDPOINT: env.endpoint, PGARK_S3_ACCESS_KEY_ID: env.accessKeyId };
      await noLeak([real], ['put', 'ok', ...repo(), ...DEBUG], { env: { ...base, PGARK_S3_SECRET_ACCESS_KEY: real }, stdin: 'hello' }, 'ok');
      await noLeak([real], ['get', 'ok', ...repo(), ...DEBUG], { env: { ...base, PGARK_S3_SECRET_ACCESS_KEY: real } }, 'ok');
      await noLeak([real], ['ls', ...repo(), ...DEBUG, '--s3-secret-access-key', real], { env: base }, 'ok');

      const denied = await noLeak([wrong, real], ['put', 'x', ...repo(), ...DEBUG, '--s3-secret-access-key', wrong], { env: base, stdin: 'x' }, 'fail');
      assert.match(denied.stderr, /access denied/);
      await noLeak([wrong, real], ['ls', ...repo(), ...DEBUG], { env: { ...base, PGARK_S3_SECRET_ACCESS_KEY: wrong } }, 'fail');
      const config = join(root, 's3-wrong.yaml');
      writeFileSync(config, `s3-secret-access-key: ${wrong}\n`, { mode: 0o600 });
      await noLeak([wrong, real], ['ls', ...repo(), ...DEBUG, '--config', config], { env: base }, 'fail');
      // a malformed value (a list) is reported without the value
      const listConfig = join(root, 's3-list.yaml');
      writeFileSync(listConfig, `s3-secret-access-key: [${wrong}, other-${wrong}]\n`, { mode: 0o600 });
      const malformed = await noLeak([wrong], ['ls', ...repo(), ...DEBUG, '--config', listConfig], { env: base }, 'fail');
      assert.match(malformed.stderr, /s3-secret-access-key must be a string/);
      // the key without its id
      await noLeak([wrong], ['ls', ...repo(), ...DEBUG, '--s3-secret-access-key', wrong], { env: { PGARK_S3_ENDPOINT: env.endpoint, AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined } }, 'fail');
    });

    test('session token', async () => {
      const env = s3Env('rgw');
      const token = `FwoGZXIvYXdzE${randomBytes(24).toString('base64url')}`;
      await noLeak([token, env.secretAccessKey], ['ls', ...repo('token'), ...DEBUG, '--s3-session-token', token], { env: s3Settings(env) });
      await noLeak([token], ['ls', ...repo('token'), ...DEBUG], { env: { ...s3Settings(env), PGARK_S3_SESSION_TOKEN: token } });
    });

    test('SSE-C key: put and get with it, get with a wrong one, get without, a malformed one', async () => {
      const env = s3Settings(s3Env('rgw'));
      const key = randomBytes(32).toString('base64');
      const other = randomBytes(32).toString('base64');
      const sse = (k: string) => ['--s3-sse', 'sse-c', '--s3-sse-c-key', k];
      const data = randomBytes(6 * 1024 * 1024);
      await noLeak([key], ['put', 'ssec', ...repo('ssec'), ...DEBUG, ...sse(key), '--part-size', '5MiB', '--compression', 'none'], { env, stdin: data }, 'ok');
      const got = await noLeak([key], ['get', 'ssec', ...repo('ssec'), ...DEBUG, ...sse(key)], { env }, 'ok');
      assert.ok(got.stdout.equals(data));
      await noLeak([key, other], ['get', 'ssec', ...repo('ssec'), ...DEBUG, ...sse(other)], { env }, 'fail');
      await noLeak([key], ['get', 'ssec', ...repo('ssec'), ...DEBUG], { env }, 'fail');
      const short = randomBytes(16).toString('base64');
      const bad = await noLeak([short], ['ls', ...repo('ssec'), ...DEBUG, ...sse(short)], { env }, 'fail');
      assert.match(bad.stderr, /s3-sse-c-key must be the base64 encoding of 32 random bytes/);
      await noLeak([other], ['ls', ...repo('ssec'), ...DEBUG, '--s3-sse', 'sse-c'], { env: { ...env, PGARK_S3_SSE_C_KEY: `${other}!!` } }, 'fail');
    });
  });

  describe('Azure', { concurrency: true, skip: skipServers() }, () => {
    let container: TestContainer;
    before(async () => { container = await createTestContainer({ prefix: 'secrets' }); });
    after(() => container?.cleanup());
    const repo = () => ['--repo', `azure://${container.name}/r`];

    test('account key: right and wrong', async () => {
      const { account, key, blobEndpoint } = azureEnv();
      const wrong = randomBytes(64).toString('base64');
      const common = ['--azure-account', account, '--azure-endpoint', blobEndpoint];
      const clean = { AZURE_STORAGE_CONNECTION_STRING: undefined, AZURE_STORAGE_KEY: undefined };
      await noLeak([key], ['put', 'k', ...repo(), ...DEBUG, ...common, '--azure-key', key], { env: clean, stdin: 'hello' }, 'ok');
      await noLeak([key], ['get', 'k', ...repo(), ...DEBUG, ...common], { env: { ...clean, PGARK_AZURE_KEY: key } }, 'ok');
      const denied = await noLeak([wrong, key], ['ls', ...repo(), ...DEBUG, ...common, '--azure-key', wrong], { env: clean }, 'fail');
      assert.match(denied.stderr, /access denied/);
      await noLeak([wrong, key], ['put', 'k2', ...repo(), ...DEBUG, ...common], { env: { ...clean, PGARK_AZURE_KEY: wrong }, stdin: 'x' }, 'fail');
    });

    test('connection string: right, with a wrong key, malformed', async () => {
      const { account, key, blobEndpoint, connectionString } = azureEnv();
      const wrongKey = randomBytes(64).toString('base64');
      const wrong = `DefaultEndpointsProtocol=http;AccountName=${account};AccountKey=${wrongKey};BlobEndpoint=${blobEndpoint};`;
      const clean = { AZURE_STORAGE_CONNECTION_STRING: undefined, AZURE_STORAGE_KEY: undefined };
      await noLeak([key, connectionString], ['put', 'cs', ...repo(), ...DEBUG, '--azure-connection-string', connectionString], { env: clean, stdin: 'hello' }, 'ok');
      await noLeak([key, connectionString], ['ls', ...repo(), ...DEBUG], { env: { ...clean, PGARK_AZURE_CONNECTION_STRING: connectionString } }, 'ok');
      await noLeak([wrongKey, wrong, key], ['ls', ...repo(), ...DEBUG, '--azure-connection-string', wrong], { env: clean }, 'fail');
      const malformedSecret = randomBytes(40).toString('base64');
      const malformed = `AccountKey=${malformedSecret};this is not a connection string`;
      const result = await noLeak([malformedSecret, malformed], ['ls', ...repo(), ...DEBUG], { env: { ...clean, PGARK_AZURE_CONNECTION_STRING: malformed } }, 'fail');
      assert.match(result.stderr, /not a valid Azure Storage connection string/);
    });

    test('SAS token: right and tampered', async () => {
      const { account, key, blobEndpoint } = azureEnv();
      const sas = generateAccountSASQueryParameters({
        expiresOn: new Date(Date.now() + 3600_000),
        permissions: AccountSASPermissions.parse('rwdlac'),
        resourceTypes: AccountSASResourceTypes.parse('sco').toString(),
        services: AccountSASServices.parse('b').toString(),
        protocol: SASProtocol.HttpsAndHttp,
      }, new StorageSharedKeyCredential(account, key)).toString();
      const sig = decodeURIComponent(/(?:^|&)sig=([^&]+)/.exec(sas)![1]!);
      const tamperedSig = Buffer.from(randomBytes(32)).toString('base64');
      const tampered = sas.replace(/(^|&)sig=[^&]+/, `$1sig=${encodeURIComponent(tamperedSig)}`);
      const common = ['--azure-account', account, '--azure-endpoint', blobEndpoint];
      const clean = { AZURE_STORAGE_CONNECTION_STRING: undefined, AZURE_STORAGE_KEY: undefined };
      await noLeak([sig, key], ['put', 'sas', ...repo(), ...DEBUG, ...common, '--azure-sas', sas], { env: clean, stdin: 'hello' }, 'ok');
      await noLeak([sig, key], ['get', 'sas', ...repo(), ...DEBUG, ...common], { env: { ...clean, PGARK_AZURE_SAS: `?${sas}` } }, 'ok');
      const denied = await noLeak([tamperedSig, sig, key], ['ls', ...repo(), ...DEBUG, ...common, '--azure-sas', tampered], { env: clean }, 'fail');
      assert.match(denied.stderr, /access denied/);
      await noLeak([tamperedSig, sig], ['get', 'sas', ...repo(), ...DEBUG, ...common, '--azure-sas', tampered], { env: clean }, 'fail');
      // a connection string with a SAS instead of the account key
      await noLeak([sig, key], ['ls', ...repo(), ...DEBUG, '--azure-connection-string', `BlobEndpoint=${blobEndpoint};SharedAccessSignature=${sas}`], { env: clean }, 'ok');
      await noLeak([tamperedSig, sig, key], ['get', 'sas', ...repo(), ...DEBUG], { env: { ...clean, PGARK_AZURE_CONNECTION_STRING: `BlobEndpoint=${blobEndpoint};SharedAccessSignature=${tampered}` } }, 'fail');
    });
  });

  test('PostgreSQL password: right and wrong (check, init)', async () => {
    const cluster: Cluster = await createCluster();
    try {
      const password = `pw-${randomBytes(12).toString('hex')}`;
      const wrong = `wrong-${randomBytes(12).toString('hex')}`;
      await cluster.sql(`CREATE ROLE archiver LOGIN SUPERUSER PASSWORD '${password}'`);
      const hba = join(cluster.dataDir, 'pg_hba.conf');
      writeFileSync(hba, `host all archiver 127.0.0.1/32 scram-sha-256\n${readFileSync(hba, 'utf8')}`);
      await cluster.reload();
      const repoDir = join(root, 'pg-repo');
      const pg = ['--repo', `file://${repoDir}`, '--pg-host', '127.0.0.1', '--pg-port', String(cluster.port), '--pg-user', 'archiver'];
      const refused = await noLeak([wrong, password], ['check', ...pg, ...DEBUG, '--pg-password', wrong], {});
      assert.match(refused.stdout.toString(), /FAIL\s+database connection: .*password authentication failed/);
      await noLeak([wrong, password], ['init', ...pg, ...DEBUG], { env: { PGARK_PG_PASSWORD: wrong } }, 'fail');
      await noLeak([password], ['init', ...pg, ...DEBUG, '--pg-password', password], {}, 'ok');
      const ok = await noLeak([password], ['check', '--json', ...pg, ...DEBUG], { env: { PGARK_PG_PASSWORD: password } });
      const report = JSON.parse(ok.stdout.toString()) as { checks: { name: string; ok: boolean }[] };
      assert.equal(report.checks.find((c) => c.name === 'database connection')?.ok, true, 'connected with the password');
    } finally {
      await cluster.destroy();
    }
  });

  test('age identity file content (AGE-SECRET-KEY-1...): get, wrong identity, corrupt file, key given as a setting', async () => {
    const dir = join(root, 'age');
    mkdirSync(dir);
    const key = await keygen(dir, 'key.txt');
    const other = await keygen(dir, 'other.txt');
    const repo = ['--repo', `file://${join(dir, 'repo')}`];
    const secrets = [key.secret, other.secret, key.secret.slice('AGE-SECRET-KEY-1'.length)];
    await noLeak(secrets, ['put', 's', ...repo, ...DEBUG, '--recipient', key.recipient], { stdin: 'confidential' }, 'ok');
    const got = await noLeak(secrets, ['get', 's', ...repo, ...DEBUG, '--identity', key.file], {}, 'ok');
    assert.equal(got.stdout.toString(), 'confidential');
    await noLeak(secrets, ['get', 's', ...repo, ...DEBUG, '--identity', other.file], {}, 'fail');

    // one character of the key changed: bad checksum
    const corrupt = join(dir, 'corrupt.txt');
    const last = key.secret.at(-1) === 'Q' ? 'P' : 'Q';
    writeFileSync(corrupt, readFileSync(key.file, 'utf8').replace(key.secret, key.secret.slice(0, -1) + last), { mode: 0o600 });
    await noLeak([...secrets, key.secret.slice(0, -1)], ['get', 's', ...repo, ...DEBUG, '--identity', corrupt], {}, 'fail');

    // the secret key pasted where a recipient or the identity file's path belongs
    const asRecipient = await noLeak(secrets, ['put', 's2', ...repo, ...DEBUG, '--recipient', key.secret], { stdin: 'x' }, 'fail');
    assert.match(asRecipient.stderr, /SECRET identity, not a recipient/);
    await noLeak(secrets, ['put', 's3', ...repo, ...DEBUG], { env: { PGARK_RECIPIENT: key.secret }, stdin: 'x' }, 'fail');
    const pasted = await noLeak(secrets, ['get', 's', ...repo, ...DEBUG, '--identity', key.secret], {}, 'fail');
    assert.match(pasted.stderr, /the identity setting holds a secret key itself/);
    await noLeak(secrets, ['get', 's', ...repo, ...DEBUG], { env: { PGARK_IDENTITY: key.secret } }, 'fail');
    const check = await noLeak(secrets, ['check', '--no-postgres', ...repo, ...DEBUG, '--recipient', key.recipient, '--identity', key.secret]);
    assert.equal(check.code, 2);
    assert.match(check.stdout.toString(), /^FAIL\s+encryption: the identity setting holds a secret key itself/m);
  });

  test('keygen prints the recipient, never the secret (unless asked to write the key to stdout)', async () => {
    const dir = join(root, 'keygen');
    mkdirSync(dir);
    const result = await pgarkOk(['keygen', '--output', join(dir, 'k.txt')]);
    const secret = /^AGE-SECRET-KEY-1[0-9A-Z]+$/m.exec(readFileSync(join(dir, 'k.txt'), 'utf8'))![0];
    assert.ok(!result.stdout.toString().includes(secret) && !result.stderr.includes(secret));
  });
});
