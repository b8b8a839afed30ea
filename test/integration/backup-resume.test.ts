// An interrupted backup is resumed by the next one, which does not upload again what the
// interrupted one stored (its checkpoints: backups/<id>/partial-*.jsonl), in a plain file
// repository and an encrypted one on RGW:
//   - a backup slowed down by bandwidth-limit is killed with SIGKILL after its second
//     checkpoint; it is not listed as a backup;
//   - the next backup names it in resumedFrom, references what it stored (blocksReferenced,
//     though it is a full backup: there is no complete one to base it on) and stores fewer
//     blocks than a backup from scratch; the interrupted backup's records are gone afterwards;
//   - a restore of the resumed backup, replayed to the end of the archive, equals the primary;
//   - `backup --full` after another interruption does not resume (stands alone).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPrimary, fingerprint, info, restoreAndStart, secs, switchAndArchive, takeBackup } from '../support/backup.ts';
import { NODE_BIN } from '../support/cli.ts';
import { spawnAsTestUser } from '../support/postgres.ts';
import { PGARK, pgarkEnv, waitFor, type RepoKind, type WalRepo } from '../support/wal.ts';
import { skipServers } from '../support/objstores.ts';

const CHECKPOINT = /^backups\/(\d{8}T\d{6}[FI])\/partial-(\d{6})\.jsonl/;

/**
 * Starts a throttled backup, kills it once it wrote `checkpoints` checkpoints and ran at least
 * `minMs` (so that it stored a good part of the data); returns its id.
 */
async function killAfterCheckpoints(repo: WalRepo, checkpoints: number, minMs: number, args: string[] = []): Promise<string> {
  const t0 = Date.now();
  const child = spawnAsTestUser(NODE_BIN, [PGARK, 'backup', '--config', repo.configPath, '--bandwidth-limit', '3MiB', ...args], { env: pgarkEnv({ HOME: repo.dir }), cwd: repo.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  try {
    const id = await waitFor(`backup checkpoint ${checkpoints}`, async () => {
      if (child.exitCode !== null) throw new Error(`the backup ended (exit ${child.exitCode}) before checkpoint ${checkpoints}:\n${stderr}`);
      for (const key of await repo.keys()) {
        const match = CHECKPOINT.exec(key);
        if (match && Number(match[2]) >= checkpoints && Date.now() - t0 >= minMs) return match[1];
      }
      return undefined;
    }, 120_000);
    return id;
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

for (const [kind, encrypted] of [['file', false], ['s3', true]] as [RepoKind, boolean][]) {
  test(`an interrupted backup is resumed without uploading again (${kind}${encrypted ? ', encrypted' : ''})`, { timeout: 600_000, skip: kind === 's3' && skipServers() }, async (t) => {
    const { repo, primary: p } = await createPrimary(t, { kind, encrypted, name: `bkresume-${kind}`, repoSettings: { 'backup-checkpoint-interval': '300ms' } });
    // ~60 MB of hex text (zstd ~2:1) in 20 tables: checkpoints record whole files, and at
    // 3 MiB/s the backup takes several seconds. (With 10 tables a walk no longer slowed by one
    // lstat at a time often read everything before its second checkpoint was due.)
    const tables = Array.from({ length: 20 }, (_, i) => `t${i}`);
    for (const table of tables) {
      await p.sql(`CREATE TABLE ${table} (id bigint PRIMARY KEY, v text)`);
      await p.sql(`INSERT INTO ${table} SELECT g, md5(g::text || random()::text) || md5(random()::text) || md5(random()::text) FROM generate_series(1, 25000) g`);
    }
    await p.sql('CHECKPOINT');

    const killed = await killAfterCheckpoints(repo, 2, 4000);
    assert.deepEqual((await info(repo)).backups.map((b) => b.id), [], 'the killed backup is not listed');
    // (a file repository may also hold the killed manifest upload's temporary file)
    const stored = (await repo.keys()).filter((k) => k.startsWith(`backups/${killed}/`));
    t.diagnostic(`killed ${killed}; it left ${stored.length} records: ${stored.join(', ')}`);

    await p.sql("UPDATE t3 SET v = 'changed after the kill' WHERE id % 1000 = 0");
    const resumed = await takeBackup(repo);
    assert.equal(resumed.type, 'full');
    assert.equal((resumed as { resumedFrom?: string }).resumedFrom, killed);
    assert.ok(resumed.blocksReferenced > 0, `blocks stored by the killed backup are referenced (${resumed.blocksReferenced})`);
    t.diagnostic(`resumed backup ${resumed.id} in ${secs(resumed.ms)}: ${resumed.blocksStored} blocks stored, ${resumed.blocksReferenced} reused from ${killed}`);
    // (the killed manifest upload's temporary file in a file repository is not a record: it is
    // invisible to pgark, and expire removes stale ones)
    const left = (await repo.keys()).filter((k) => !k.includes('/.pgark-tmp-') && (k.startsWith(`backups/${killed}/`) || k === `backups/${resumed.id}/start.json` || CHECKPOINT.test(k)));
    assert.deepEqual(left, [], 'no start record or checkpoint is left once the backup completed');

    // A backup from scratch of the same data stores every block: the resumed one stored fewer.
    const scratch = await takeBackup(repo, ['--full']);
    assert.equal((scratch as { resumedFrom?: string }).resumedFrom, undefined);
    assert.equal(scratch.blocksReferenced, 0);
    assert.ok(resumed.blocksStored < scratch.blocksStored && resumed.storedBytes < scratch.storedBytes, `resumed stored ${resumed.blocksStored} blocks, ${resumed.storedBytes} bytes; from scratch ${scratch.blocksStored} blocks, ${scratch.storedBytes} bytes`);
    t.diagnostic(`stored: resumed ${resumed.storedBytes} bytes, from scratch ${scratch.storedBytes}`);

    // --full after an interruption does not resume it.
    await p.sql("UPDATE t7 SET v = 'changed again' WHERE id % 997 = 0");
    const killed2 = await killAfterCheckpoints(repo, 1, 0, ['--full']);
    const standalone = await takeBackup(repo, ['--full']);
    assert.equal((standalone as { resumedFrom?: string }).resumedFrom, undefined, `--full does not resume ${killed2}`);
    assert.equal(standalone.blocksReferenced, 0);

    // The resumed backup restores (replaying to the end of the archive) to the primary's data.
    await p.sql("INSERT INTO t0 VALUES (-1, 'after the last backup')");
    const expected = await fingerprint(p, tables);
    await switchAndArchive(p);
    const r = await restoreAndStart(t, repo, ['--set', resumed.id]);
    assert.equal(await fingerprint(r.cluster, tables), expected);
    t.diagnostic(`restore of the resumed backup: ${secs(r.restoreMs)}, replay ${secs(r.startMs)}`);
  });
}
