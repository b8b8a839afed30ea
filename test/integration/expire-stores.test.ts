// expire and the repository lock on the other stores: Swift's s3api (no conditional PUT; wants
// Content-MD5 on DeleteObjects) and Azure Blob (Azurite). Three backups, a crashed holder's lease
// blocks expire with one line naming it, then `expire --retain 1 --lock-wait` waits it out and
// leaves exactly the newest backup, whole (Swift: every referenced pack present, none left over).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { info, oneErrorLine, takeBackup } from '../support/backup.ts';
import { checkRepository, putRaw, runExpire } from '../support/expire.ts';
import { azureEnv, createTestBucket, createTestContainer } from '../support/objstores.ts';
import { createCluster } from '../support/postgres.ts';
import { createWalRepo, type WalRepo, type WalRepoOptions } from '../support/wal.ts';

async function primaryOn(t: { after(fn: () => unknown): void }, options: WalRepoOptions): Promise<{ repo: WalRepo; sql: (q: string) => Promise<string> }> {
  const repo = await createWalRepo({ ...options, settings: { 'archive-timeout': '120s', 'lock-lease': '5s', ...options.settings } });
  t.after(() => repo.cleanup());
  const primary = await createCluster({ walSegmentSizeMB: 1, settings: { archive_mode: 'on', archive_command: '', wal_level: 'replica', autovacuum: 'off' } });
  t.after(() => primary.destroy());
  await repo.init(primary);
  repo.updateSettings({ 'pg-host': primary.socketDir, 'pg-port': primary.port, 'pg-user': 'postgres' });
  primary.setSettings({ archive_command: repo.command('wal-push %p') });
  await primary.reload();
  return { repo, sql: (q) => primary.sql(q) };
}

async function scenario(repo: WalRepo, sql: (q: string) => Promise<string>, planted: (key: string, body: string) => Promise<void>): Promise<string> {
  await sql('CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g');
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    await sql(`UPDATE bulk SET v = md5(v) WHERE id % 3 = ${i}`);
    ids.push((await takeBackup(repo, i === 1 ? ['--full'] : [])).id);
  }
  await planted('locks/00000000deadbeef.shared.5.00000001.json', JSON.stringify({ host: 'elsewhere', pid: 99, command: 'pgark backup', since: '2026-11-21T10:00:00.000Z' }));
  const blocked = await repo.pgark(['expire', '--retain', '1']);
  assert.equal(blocked.code, 2, blocked.stderr);
  assert.match(oneErrorLine(blocked), /locked by pgark backup on elsewhere \(pid 99/);
  const { report } = await runExpire(repo, ['--retain', '1', '--lock-wait', '60s']);
  assert.deepEqual(report.retained.map((b) => b.id), [ids[2]]);
  assert.deepEqual((await info(repo)).backups.map((b) => b.id), [ids[2]]);
  return `expired ${report.expired.length}, deleted ${report.deleted.packs.count} pack(s), ${report.deleted.wal.count} WAL in ${report.durationMs} ms`;
}

test('expire and the lock on Swift s3api', { timeout: 600_000 }, async (t) => {
  const bucket = await createTestBucket('swift', { prefix: 'exswift', t });
  const { repo, sql } = await primaryOn(t, {
    kind: 's3', name: 'exswift', bucket, endpoint: bucket.env.endpoint,
    settings: { 's3-access-key-id': bucket.env.accessKeyId, 's3-secret-access-key': bucket.env.secretAccessKey, 's3-region': bucket.env.region },
  });
  t.diagnostic(await scenario(repo, sql, (key, body) => putRaw(repo, key, body)));
  await checkRepository(repo, 'swift');
});

test('expire and the lock on Azure Blob (Azurite)', { timeout: 600_000 }, async (t) => {
  const container = await createTestContainer({ prefix: 'exazure', t });
  const env = azureEnv();
  const { repo, sql } = await primaryOn(t, {
    kind: 'file', name: 'exazure',
    settings: { repo: `azure://${container.name}/db`, 'azure-connection-string': env.connectionString },
  });
  t.diagnostic(await scenario(repo, sql, async (key, body) => {
    await container.client.getBlockBlobClient(`db/${key}`).upload(body, Buffer.byteLength(body));
  }));
  const left: string[] = [];
  for await (const blob of container.client.listBlobsFlat({ prefix: 'db/locks/' })) left.push(blob.name);
  assert.deepEqual(left, [], 'no lease left');
});
