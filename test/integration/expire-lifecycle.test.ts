// Cost controls on RGW: `pgark lifecycle` prints rules that never expire objects by age,
// `--apply` puts them on the bucket next to other rules (kept) and is idempotent; a non-S3
// repository gets one clear line. `pgark expire` aborts multipart uploads open for over a day
// (the day measured against PGARK_TEST_NOW) and leaves younger ones alone; on a file repository
// it removes the temporary files of SIGKILLed writers last written over a day ago (listed by a dry
// run), and leaves younger ones alone.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CreateMultipartUploadCommand, GetBucketLifecycleConfigurationCommand, PutBucketLifecycleConfigurationCommand, type LifecycleRule } from '@aws-sdk/client-s3';
import { createPrimary, oneErrorLine, takeBackup } from '../support/backup.ts';
import { runExpire } from '../support/expire.ts';
import { listOpenMultipartUploads } from '../support/objstores.ts';
import { NODE_BIN } from '../support/cli.ts';
import { createCluster, spawnAsTestUser } from '../support/postgres.ts';
import { chownTestUser, createWalRepo, parseJsonOutput, PGARK, pgarkEnv, waitFor } from '../support/wal.ts';

test('pgark lifecycle prints and applies rules that never delete what a backup needs (RGW)', { timeout: 300_000 }, async (t) => {
  const repo = await createWalRepo({ kind: 's3', name: 'exlife', prefix: 'db1', settings: { 'lifecycle-noncurrent-days': 3 } });
  t.after(() => repo.cleanup());
  const { client, name: bucket } = repo.bucket!;

  const printed = await repo.pgark(['lifecycle']);
  assert.equal(printed.code, 0, printed.stderr);
  const config = JSON.parse(printed.stdout) as { Rules: LifecycleRule[] };
  const ids = config.Rules.map((r) => r.ID);
  assert.deepEqual(ids, ['pgark db1/ abort-incomplete-uploads', 'pgark db1/ noncurrent-versions']);
  for (const rule of config.Rules) {
    assert.equal(rule.Filter?.Prefix, 'db1/', 'only the repository prefix');
    assert.equal(rule.Expiration, undefined, `${rule.ID}: no expiration of current objects`);
  }
  assert.equal(config.Rules[0]!.AbortIncompleteMultipartUpload?.DaysAfterInitiation, 1);
  assert.equal(config.Rules[1]!.NoncurrentVersionExpiration?.NoncurrentDays, 3);
  assert.match(printed.stderr, /no expiration by age on purpose/);

  const refused = await repo.pgark(['lifecycle', '--lifecycle-transition-class', 'GLACIER']);
  assert.equal(refused.code, 2);
  assert.match(oneErrorLine(refused), /GLACIER is not readable without a restore request/);
  const withTransition = parseJsonOutput<{ Rules: LifecycleRule[] }>(await repo.pgark(['lifecycle', '--json', '--lifecycle-transition-class', 'STANDARD_IA', '--lifecycle-transition-days', '45']), 'lifecycle');
  assert.deepEqual(withTransition.Rules.slice(2).map((r) => [r.Filter?.Prefix, r.Transitions?.[0]?.Days, r.Transitions?.[0]?.StorageClass]), [['db1/wal/', 45, 'STANDARD_IA'], ['db1/packs/', 45, 'STANDARD_IA']]);

  // --apply keeps the bucket's other rules, twice without duplicates
  await client.send(new PutBucketLifecycleConfigurationCommand({ Bucket: bucket, LifecycleConfiguration: { Rules: [{ ID: 'someone else', Status: 'Enabled', Filter: { Prefix: 'tmp/' }, Expiration: { Days: 7 } }] } }));
  for (let i = 0; i < 2; i++) {
    const applied = await repo.pgark(['lifecycle', '--apply', '--json']);
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal(parseJsonOutput<{ otherRulesKept: number }>(applied, 'lifecycle --apply').otherRulesKept, 1);
    const stored = await client.send(new GetBucketLifecycleConfigurationCommand({ Bucket: bucket }));
    assert.deepEqual((stored.Rules ?? []).map((r) => r.ID).sort(), ['pgark db1/ abort-incomplete-uploads', 'pgark db1/ noncurrent-versions', 'someone else']);
    const noncurrent = stored.Rules!.find((r) => r.ID === 'pgark db1/ noncurrent-versions')!;
    assert.equal(noncurrent.NoncurrentVersionExpiration?.NoncurrentDays, 3, 'RGW stored the rule as given');
  }

  const fileRepo = await createWalRepo({ kind: 'file', name: 'exlifef' });
  t.after(() => fileRepo.cleanup());
  const notS3 = await fileRepo.pgark(['lifecycle']);
  assert.equal(notS3.code, 2);
  assert.match(oneErrorLine(notS3), /lifecycle rules are an S3 feature/);
});

test('expire aborts multipart uploads open for over a day, and only those (RGW)', { timeout: 300_000 }, async (t) => {
  const { repo } = await createPrimary(t, { kind: 's3', name: 'exmpu' });
  await takeBackup(repo);
  const { client, name: bucket } = repo.bucket!;
  const upload = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `${repo.prefix}packs/ab/ab0000000000000000000000.zst` }));
  assert.ok(upload.UploadId);
  const open = async () => (await listOpenMultipartUploads(client, bucket, repo.prefix)).length;
  assert.equal(await open(), 1);
  const today = await runExpire(repo, ['--retain', '1']);
  assert.equal(today.report.abortedUploads, 0, 'an upload started now is left alone');
  assert.equal(await open(), 1);
  const later = await runExpire(repo, ['--retain', '1'], { PGARK_TEST_NOW: new Date(Date.now() + 25 * 3600_000).toISOString() });
  assert.equal(later.report.abortedUploads, 1);
  assert.equal(await open(), 0);
});

test('expire removes temporary files of killed writers last written over a day ago, and only those (file)', { timeout: 300_000 }, async (t) => {
  // A repository without archiving (a wal-push's own short-lived temporary file would count too)
  // and without backups: expire then deletes nothing else.
  const repo = await createWalRepo({ kind: 'file', name: 'extmp' });
  t.after(() => repo.cleanup());
  const cluster = await createCluster();
  t.after(() => cluster.destroy());
  await repo.init(cluster);
  const temps = () => readdirSync(repo.repoDir!, { recursive: true, encoding: 'utf8' }).filter((p) => p.split('/').at(-1)!.startsWith('.pgark-tmp-')).sort();
  assert.deepEqual(temps(), [], 'no temporary file before the test');

  // A real writer, SIGKILLed while it writes: `pgark put` of a stream that never ends.
  const writer = spawnAsTestUser(NODE_BIN, [PGARK, 'put', 'dump1', '--config', repo.configPath], { env: pgarkEnv({ HOME: repo.dir }), cwd: repo.dir, stdio: ['pipe', 'ignore', 'ignore'] });
  const exited = new Promise<void>((resolve) => writer.on('close', () => resolve()));
  writer.stdin!.on('error', () => {}); // EPIPE once it is killed with the write still pending
  writer.stdin!.write(Buffer.alloc(4 << 20, 7));
  const [killed = ''] = await waitFor('the writer\'s temporary file', () => (temps().length > 0 ? temps() : undefined), 60_000);
  assert.match(killed, /^streams\/dump1\//);
  writer.kill('SIGKILL');
  await exited;
  assert.deepEqual(temps(), [killed], 'the killed writer left its temporary file');
  // One written an hour before the simulated "now" below: too young to go.
  const young = join('streams', '.pgark-tmp-00000000000000aa');
  writeFileSync(join(repo.repoDir!, young), 'partial');
  chownTestUser(join(repo.repoDir!, young));
  const later = new Date(Date.now() + 25 * 3600_000);
  utimesSync(join(repo.repoDir!, young), new Date(later.getTime() - 3600_000), new Date(later.getTime() - 3600_000));

  const today = await runExpire(repo, ['--retain', '1']);
  assert.equal(today.report.tempFiles.count, 0, 'a temporary file written now is left alone');
  assert.deepEqual(temps(), [killed, young].sort(), 'both temporary files are still there');
  const env = { PGARK_TEST_NOW: later.toISOString() };
  const dry = await runExpire(repo, ['--dry-run', '--retain', '1'], env);
  assert.deepEqual(dry.report.tempFiles.keys, [killed], 'the dry run lists the killed writer\'s file, not the young one');
  assert.ok(dry.report.tempFiles.bytes > 0);
  const text = await repo.pgark(['expire', '--dry-run', '--retain', '1'], { env });
  assert.match(text.stdout, /temporary files of killed writers \(last written over a day ago\): would remove 1 /);
  assert.ok(text.stdout.includes(`  ${killed}\n`), text.stdout);
  assert.deepEqual(temps(), [killed, young].sort(), 'a dry run removes nothing');
  const done = await runExpire(repo, ['--retain', '1'], env);
  assert.deepEqual(done.report.tempFiles.keys, [killed]);
  assert.deepEqual(temps(), [young]);
  assert.ok(!existsSync(join(repo.repoDir!, killed)));
});
