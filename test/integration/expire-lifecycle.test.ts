// Cost controls on RGW: `pgark lifecycle` prints rules that never expire objects by age,
// `--apply` puts them on the bucket next to other rules (kept) and is idempotent; a non-S3
// repository gets one clear line. `pgark expire` aborts multipart uploads open for over a day
// (the day measured against PGARK_TEST_NOW) and leaves younger ones alone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CreateMultipartUploadCommand, GetBucketLifecycleConfigurationCommand, PutBucketLifecycleConfigurationCommand, type LifecycleRule } from '@aws-sdk/client-s3';
import { createPrimary, oneErrorLine, takeBackup } from '../support/backup.ts';
import { runExpire } from '../support/expire.ts';
import { listOpenMultipartUploads } from '../support/objstores.ts';
import { createWalRepo, parseJsonOutput } from '../support/wal.ts';

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
