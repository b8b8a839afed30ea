import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig, requireSetting } from '../../src/config/load.ts';
import { PgarkError } from '../../src/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'pgark-config-'));
function file(text: string): string {
  const path = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(path, text);
  return path;
}

function configError(fn: () => unknown): PgarkError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof PgarkError, `expected a PgarkError, got ${String(error)}`);
    assert.equal(error.code, 'CONFIG');
    assert.ok(!error.message.includes('\n'), 'error is one line');
    return error;
  }
  assert.fail('expected an error');
}

test('defaults apply without any source', () => {
  const { config } = loadConfig({ env: {}, flags: {}, configPath: file('') });
  assert.equal(config.compression, 'zstd');
  assert.equal(config['process-max'], 4);
  assert.equal(config['part-size'], 8 * 1024 * 1024);
  assert.equal(config['request-timeout'], 60_000);
  assert.equal(config.repo, undefined);
});

test('precedence: flag over environment over file', () => {
  const path = file('repo: file:///from/file\ncompression: gzip\nprocess-max: 3\n');
  const both = loadConfig({ configPath: path, env: { PGARK_REPO: 'file:///from/env', PGARK_PROCESS_MAX: '5' }, flags: { repo: 'file:///from/flag' } });
  assert.equal(both.config.repo, 'file:///from/flag');
  assert.equal(both.origin.get('repo'), 'flag --repo');
  assert.equal(both.config['process-max'], 5);
  assert.equal(both.origin.get('process-max'), 'environment PGARK_PROCESS_MAX');
  assert.equal(both.config.compression, 'gzip');
  assert.equal(both.origin.get('compression'), `config file ${path}`);
});

test('typed values are parsed from text and YAML', () => {
  const { config } = loadConfig({
    configPath: file('part-size: 16MiB\nrecipient: [age1a, age1b]\ns3-force-path-style: yes\n'),
    env: { PGARK_BANDWIDTH_LIMIT: '10M', PGARK_CONNECT_TIMEOUT: '250ms' },
    flags: { 'retry-max': '3' },
  });
  assert.equal(config['part-size'], 16 * 1024 * 1024);
  assert.deepEqual(config.recipient, ['age1a', 'age1b']);
  assert.equal(config['s3-force-path-style'], true);
  assert.equal(config['bandwidth-limit'], 10 * 1024 * 1024);
  assert.equal(config['connect-timeout'], 250);
  assert.equal(config['retry-max'], 3);
  const env = loadConfig({ configPath: file(''), env: { PGARK_RECIPIENT: 'age1x, age1y' }, flags: {} });
  assert.deepEqual(env.config.recipient, ['age1x', 'age1y']);
});

test('unknown key in the file names the file and suggests the right key', () => {
  const path = file('s3-endpont: http://x\n');
  const error = configError(() => loadConfig({ configPath: path, env: {}, flags: {} }));
  assert.match(error.message, new RegExp(`config file ${path}: unknown setting "s3-endpont"`));
  assert.match(error.hint ?? '', /s3-endpoint/);
});

test('unknown PGARK_ environment variable is reported; reserved ones are not', () => {
  const error = configError(() => loadConfig({ configPath: file(''), env: { PGARK_REOP: 'x' }, flags: {} }));
  assert.match(error.message, /environment: unknown setting "PGARK_REOP"/);
  assert.match(error.hint ?? '', /"repo"/);
  loadConfig({ configPath: file(''), env: { PGARK_CONFIG: '/x', PGARK_TEST_HOME: '/y', PGARK_DEBUG: '1' }, flags: {} });
});

test('wrong types name the key, the source and the expected type', () => {
  let error = configError(() => loadConfig({ configPath: file('process-max: many\n'), env: {}, flags: {} }));
  assert.match(error.message, /process-max must be an integer from 1 to 64 \(got "many"\)/);
  error = configError(() => loadConfig({ configPath: file(''), env: { PGARK_COMPRESSION: 'brotli' }, flags: {} }));
  assert.match(error.message, /^environment PGARK_COMPRESSION: compression must be one of zstd, lz4, gzip, none/);
  error = configError(() => loadConfig({ configPath: file(''), env: {}, flags: { 'part-size': '12 parsecs' } }));
  assert.match(error.message, /^flag --part-size: part-size must be a size/);
});

test('a malformed secret is reported without echoing it', () => {
  const error = configError(() => loadConfig({ configPath: file('s3-secret-access-key: [a, b]\n'), env: {}, flags: {} }));
  assert.match(error.message, /s3-secret-access-key must be a string$/);
});

test('invalid YAML and a missing explicit file are clear errors; a missing default file is fine', () => {
  let error = configError(() => loadConfig({ configPath: file('repo: [unclosed\n'), env: {}, flags: {} }));
  assert.match(error.message, /invalid YAML at line/);
  error = configError(() => loadConfig({ configPath: join(dir, 'nope.yaml'), env: {}, flags: {} }));
  assert.match(error.message, /cannot read config file .*nope\.yaml: no such file/);
  const viaEnv = configError(() => loadConfig({ env: { PGARK_CONFIG: join(dir, 'nope2.yaml') }, flags: {} }));
  assert.match(viaEnv.message, /nope2\.yaml/);
});

test('requireSetting says how to set a missing setting', () => {
  const loaded = loadConfig({ configPath: file(''), env: {}, flags: {} });
  const error = configError(() => requireSetting(loaded, 'repo', 'where is the repository?'));
  assert.match(error.message, /missing setting repo/);
  assert.match(error.hint ?? '', /--repo.*PGARK_REPO/);
});
