/**
 * `pgark init` and `pgark check` against real PostgreSQL clusters: init records the cluster's
 * system identifier, major version and WAL segment size and the encryption recipients in
 * pgark.json, and running it again changes nothing; check passes when archiving is set up
 * (archive_mode=on, archive_command calling pgark wal-push) and fails with a clear line when
 * archiving is off or calls something else, when the repository is not writable (a directory
 * the PostgreSQL OS user may not write) or the S3 credentials are wrong. `--json` parses.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NODE_BIN, PGARK_BIN, pgark } from '../support/cli.ts';
import { assertCleanFailure, keygen, pgarkOk, snapshotTree, tempDir } from '../support/cli-checks.ts';
import { createTestBucket, listKeys, s3Env, skipServers } from '../support/objstores.ts';
import { createCluster, testUser, type Cluster } from '../support/postgres.ts';

interface CheckReport { ok: boolean; checks: { name: string; ok: boolean; detail: string; hint?: string }[] }

const root = tempDir({ after }, 'pgark-init-check-');
chmodSync(root, 0o755); // the cluster's OS user runs pgark in one case

let archiving: Cluster; // archive_mode=on, archive_command = pgark wal-push
let plain: Cluster; // 32 MiB WAL segments, archive_mode off
let key: { file: string; recipient: string };

before(async () => {
  [archiving, plain, key] = await Promise.all([
    createCluster({ settings: { archive_mode: 'on', archive_command: 'pgark wal-push %p' } }),
    createCluster({ walSegmentSizeMB: 32 }),
    keygen(root),
  ]);
});
after(async () => {
  await Promise.all([archiving?.destroy(), plain?.destroy()]);
});

const pgArgs = (c: Cluster) => ['--pg-host', '127.0.0.1', '--pg-port', String(c.port), '--pg-user', 'postgres'];
const systemIdentifier = async (c: Cluster) => c.sql('SELECT system_identifier FROM pg_control_system()');

function checkLines(stdout: Buffer): string[] {
  return stdout.toString().trimEnd().split('\n');
}

describe('init and check', { concurrency: true }, () => {
  test('init writes pgark.json for the cluster; again it is a no-op; other recipients are refused', async () => {
    const repoDir = join(root, 'repo-archiving');
    const repo = ['--repo', `file://${repoDir}`];
    const first = await pgarkOk(['init', '--json', ...repo, ...pgArgs(archiving), '--recipient', key.recipient]);
    const written = readFileSync(join(repoDir, 'pgark.json'), 'utf8');
    const description = JSON.parse(written) as { format: number; createdBy: string; postgres: Record<string, unknown>; encryption: { recipients: string[] } };
    assert.deepEqual(JSON.parse(first.stdout.toString()), description, '--json prints what was written');
    assert.equal(description.format, 1);
    assert.match(description.createdBy, /^pgark /);
    assert.deepEqual(description.postgres, { systemIdentifier: await systemIdentifier(archiving), majorVersion: archiving.major, walSegmentSize: 16 * 1024 * 1024 });
    assert.deepEqual(description.encryption.recipients, [key.recipient]);
    assert.match(first.stderr, /"msg":"initialised repository"/);

    const before = snapshotTree(repoDir);
    const again = await pgarkOk(['init', ...repo, ...pgArgs(archiving), '--recipient', key.recipient]);
    assert.match(again.stderr, /already initialised for this cluster/);
    const withoutRecipient = await pgarkOk(['init', ...repo, ...pgArgs(archiving)]);
    assert.match(withoutRecipient.stderr, /already initialised for this cluster/);
    assert.deepEqual(snapshotTree(repoDir), before, 'pgark.json unchanged, nothing added');

    const other = await keygen(join(root), 'other-key.txt');
    const conflict = await pgark(['init', ...repo, ...pgArgs(archiving), '--recipient', other.recipient]);
    assertCleanFailure(conflict, 'init', /already initialised with other encryption recipients/);
    assert.deepEqual(snapshotTree(repoDir), before);

    // a stream put without --recipient is encrypted to the recorded recipient
    await pgarkOk(['put', 's', ...repo], { stdin: 'data' });
    const [entry] = JSON.parse((await pgarkOk(['ls', '--json', ...repo])).stdout.toString()) as { encrypted: boolean }[];
    assert.equal(entry?.encrypted, true);
  });

  test('init records the WAL segment size and major version of another cluster (32 MiB segments)', async () => {
    const repoDir = join(root, 'repo-plain');
    await pgarkOk(['init', '--repo', `file://${repoDir}`, ...pgArgs(plain)]);
    const description = JSON.parse(readFileSync(join(repoDir, 'pgark.json'), 'utf8')) as { postgres: Record<string, unknown>; encryption: { recipients: string[] } };
    assert.deepEqual(description.postgres, { systemIdentifier: await systemIdentifier(plain), majorVersion: plain.major, walSegmentSize: 32 * 1024 * 1024 });
    assert.deepEqual(description.encryption.recipients, []);

    // archive_mode is off: check fails on archiving, says how to fix it
    const check = await pgark(['check', '--repo', `file://${repoDir}`, ...pgArgs(plain)]);
    assert.equal(check.code, 2);
    const lines = checkLines(check.stdout);
    assert.ok(lines.includes('FAIL  archiving: archive_mode is off'), check.stdout.toString());
    assert.ok(lines.some((l) => /^ {6}hint: set archive_mode = on and archive_command = 'pgark wal-push %p'/.test(l)));
    assert.equal(lines.at(-1), '1 check(s) failed');
  });

  test('check passes with archiving set up, and fails when archive_command is something else', async () => {
    const repoDir = join(root, 'repo-check');
    const repo = ['--repo', `file://${repoDir}`];
    await pgarkOk(['init', ...repo, ...pgArgs(archiving), '--recipient', key.recipient]);
    const before = snapshotTree(repoDir).filter((l) => !l.endsWith('/'));

    const ok = await pgarkOk(['check', ...repo, ...pgArgs(archiving), '--identity', key.file]);
    const lines = checkLines(ok.stdout);
    assert.equal(lines.at(-1), 'all checks passed');
    for (const name of ['configuration', 'repository reachable', 'repository writable', 'encryption', 'database connection', 'repository matches cluster', 'archiving']) {
      assert.ok(lines.some((l) => l.startsWith(`ok    ${name}: `)), `"${name}" passed:\n${ok.stdout}`);
    }
    assert.ok(lines.includes('ok    archiving: archive_mode=on, archive_command calls pgark wal-push'));
    const json = JSON.parse((await pgarkOk(['check', '--json', ...repo, ...pgArgs(archiving)])).stdout.toString()) as CheckReport;
    assert.equal(json.ok, true);
    assert.equal(json.checks.length, 7);
    assert.ok(json.checks.every((c) => c.ok && typeof c.detail === 'string'));
    assert.deepEqual(snapshotTree(repoDir).filter((l) => !l.endsWith('/')), before, 'the write probe was removed');

    // a cluster whose archive_command is not pgark (set at run time, reloaded)
    const other = await createCluster({ settings: { archive_mode: 'on', archive_command: 'cp %p /var/lib/wal-archive/%f' } });
    try {
      const otherRepo = ['--repo', `file://${join(root, 'repo-cp')}`];
      await pgarkOk(['init', ...otherRepo, ...pgArgs(other)]);
      const failed = await pgark(['check', ...otherRepo, ...pgArgs(other)]);
      assert.equal(failed.code, 2, failed.stderr);
      const failedLines = checkLines(failed.stdout);
      assert.ok(failedLines.includes('FAIL  archiving: archive_command does not call pgark wal-push (it is "cp %p /var/lib/wal-archive/%f")'), failed.stdout.toString());
      assert.ok(failedLines.includes("      hint: set archive_command = 'pgark wal-push %p' and reload PostgreSQL"));
      assert.equal(failedLines.at(-1), '1 check(s) failed');
      const report = JSON.parse((await pgark(['check', '--json', ...otherRepo, ...pgArgs(other)])).stdout.toString()) as CheckReport;
      assert.equal(report.ok, false);
      assert.deepEqual(report.checks.filter((c) => !c.ok).map((c) => c.name), ['archiving']);

      // fixed and reloaded: passes
      other.setSettings({ archive_command: `${NODE_BIN} ${PGARK_BIN} wal-push %p` });
      await other.reload();
      await pgarkOk(['check', ...otherRepo, ...pgArgs(other)]);
    } finally {
      await other.destroy();
    }
  });

  test('check against a repository of another cluster fails on "repository matches cluster"', async () => {
    const repo = ['--repo', `file://${join(root, 'repo-mismatch')}`];
    await pgarkOk(['init', ...repo, ...pgArgs(plain)]);
    const check = await pgark(['check', '--json', ...repo, ...pgArgs(archiving)]);
    assert.equal(check.code, 2);
    const report = JSON.parse(check.stdout.toString()) as CheckReport;
    const mismatch = report.checks.find((c) => c.name === 'repository matches cluster');
    assert.equal(mismatch?.ok, false);
    assert.match(mismatch.detail, new RegExp(`repository belongs to system ${await systemIdentifier(plain)}, the database is ${await systemIdentifier(archiving)}`));
  });

  test('check fails when the PostgreSQL OS user cannot write the repository directory', { skip: testUser() ? false : 'needs root (a directory the test user cannot write)' }, async () => {
    const repoDir = join(root, 'repo-readonly');
    await pgarkOk(['init', '--repo', `file://${repoDir}`, ...pgArgs(archiving)]);
    chmodSync(join(repoDir, 'pgark.json'), 0o644);
    chmodSync(repoDir, 0o555); // owned by root: readable, not writable, by the cluster's OS user
    const before = snapshotTree(repoDir);
    const args = [PGARK_BIN, 'check', '--repo', `file://${repoDir}`, ...pgArgs(archiving)];
    const env = { PGARK_LOG_FORMAT: 'json' };
    const result = await archiving.run(NODE_BIN, args, { env, timeoutMs: 120_000 });
    assert.equal(result.code, 2, `${result.stdout}${result.stderr}`);
    const lines = result.stdout.trimEnd().split('\n');
    assert.ok(lines.includes(`ok    repository reachable: file://${repoDir}`), result.stdout);
    assert.ok(lines.some((l) => l.startsWith(`FAIL  repository writable: permission denied to write check/`) && l.endsWith(`in file://${repoDir}`)), result.stdout);
    assert.ok(lines.some((l) => /^ {6}hint: check the owner and mode of the repository directory/.test(l)));
    assert.ok(lines.includes('ok    archiving: archive_mode=on, archive_command calls pgark wal-push'), 'the other checks still ran');
    assert.equal(lines.at(-1), '1 check(s) failed');
    assert.equal(result.stderr, '', 'check reports on stdout only');
    const json = await archiving.run(NODE_BIN, [...args.slice(0, 2), '--json', ...args.slice(2)], { env, timeoutMs: 120_000 });
    const report = JSON.parse(json.stdout) as CheckReport;
    assert.equal(report.ok, false);
    assert.deepEqual(report.checks.filter((c) => !c.ok).map((c) => c.name), ['repository writable']);
    assert.deepEqual(snapshotTree(repoDir), before);
    chmodSync(repoDir, 0o755);
  });

  test('check fails when the S3 credentials are wrong', { skip: skipServers() }, async (t) => {
    const bucket = await createTestBucket('rgw', { prefix: 'check-auth', t });
    const env = s3Env('rgw');
    const args = ['check', '--repo', `s3://${bucket.name}/r`, ...pgArgs(archiving)];
    const s3 = { PGARK_S3_ENDPOINT: env.endpoint, PGARK_S3_ACCESS_KEY_ID: env.accessKeyId, PGARK_S3_SECRET_ACCESS_KEY: 'not-the-secret-key' };
    const result = await pgark(args, { env: s3 });
    assert.equal(result.code, 2, result.stderr);
    const lines = checkLines(result.stdout);
    assert.ok(lines.some((l) => /^FAIL {2}repository reachable: access denied: download pgark\.json in s3:\/\/.* \(SignatureDoesNotMatch\)$/.test(l)), result.stdout.toString());
    assert.ok(lines.some((l) => /^ {6}hint: check the credentials/.test(l)));
    assert.ok(lines.includes('ok    archiving: archive_mode=on, archive_command calls pgark wal-push'));
    assert.equal(lines.at(-1), '1 check(s) failed');
    const report = JSON.parse((await pgark([args[0]!, '--json', ...args.slice(1)], { env: s3 })).stdout.toString()) as CheckReport;
    assert.equal(report.ok, false);
    assert.deepEqual(report.checks.filter((c) => !c.ok).map((c) => c.name), ['repository reachable']);
    assert.deepEqual(await listKeys(bucket.client, bucket.name), []);
    // with the right secret it passes (not initialised yet is fine for check)
    await pgarkOk(args, { env: { ...s3, PGARK_S3_SECRET_ACCESS_KEY: env.secretAccessKey } });
    assert.deepEqual(await listKeys(bucket.client, bucket.name), [], 'the write probe was removed');
  });
});
