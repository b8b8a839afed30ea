// Peak memory of the heavy commands (issue #5: backup and restore must not need more memory with
// a larger cluster): a cluster of ~350 MB — a 1 GiB-segment-sized table is not needed, a few
// hundred MiB of data give every buffer, pack and extent list its steady-state size — is backed
// up in full, changed in 2 % of its rows at random (about half of its pages: a fragmented extent
// list), backed up incrementally and restored, once into a file repository and once into S3
// (Ceph RGW: the SDK, its sockets and ranged GETs come on top). Each command's peak RSS, as it
// reports it, stays under the bound of its repository kind: file 135 MiB (pgark measures
// 102–119 MiB here), S3 150 MiB (119–137 MiB; restore of the chain 153–170 MiB before it decoded
// into reused buffers with a read-ahead budget shared by its batches). The restored cluster must
// return the source's data.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPrimary, fingerprint, restoreAndStart, switchAndArchive, type BackupJson } from '../support/backup.ts';

/** Per repository kind: what pgark measures here plus ~10–20 MiB for a loaded machine. */
const LIMIT_MIB = { file: 135, s3: 150 } as const;

/** The peakRss field of the command's completion log line (JSON log format), in MiB. */
function peakRssMiB(stderr: string): number {
  for (const line of stderr.split('\n').reverse()) {
    if (!line.startsWith('{')) continue;
    const peak = (JSON.parse(line) as { peakRss?: string }).peakRss;
    if (!peak) continue;
    const [value, unit] = peak.split(' ');
    return Number(value) * ({ KiB: 1 / 1024, MiB: 1, GiB: 1024 } as Record<string, number>)[unit!]!;
  }
  throw new Error(`no peakRss in the output:\n${stderr.slice(-2000)}`);
}

for (const kind of ['file', 's3'] as const) {
  test(`full and incremental backups of a few hundred MB and the restore of the chain stay under ${LIMIT_MIB[kind]} MiB peak RSS (${kind} repository)`, { timeout: 900_000 }, async (t) => {
    const { repo, primary: p } = await createPrimary(t, { kind, name: `memory-${kind}`, repoSettings: { 'log-format': 'json' } });
    await p.sql('CREATE TABLE t (id bigint PRIMARY KEY, n int, v text)');
    // ~1.2 M rows of ~250 bytes, half of it incompressible (md5 digests), half repetitive.
    await p.sql("INSERT INTO t SELECT g, g % 1000, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) || repeat('x', 120) FROM generate_series(1, 1200000) g");
    await p.sql('CHECKPOINT');
    const size = Number(await p.sql('SELECT pg_database_size(current_database())'));
    t.diagnostic(`database: ${(size / 1e6).toFixed(0)} MB`);

    const peaks: Record<string, number> = {};
    const full = await repo.pgark(['backup', '--full', '--json'], { timeoutMs: 600_000 });
    assert.equal(full.code, 0, full.stderr.slice(-3000));
    peaks.full = peakRssMiB(full.stderr);

    await p.sql('UPDATE t SET n = n + 1 WHERE random() < 0.02');
    await p.sql('CHECKPOINT');
    const incrRun = await repo.pgark(['backup', '--json'], { timeoutMs: 600_000 });
    assert.equal(incrRun.code, 0, incrRun.stderr.slice(-3000));
    const incr = JSON.parse(incrRun.stdout.trim().split('\n').at(-1)!) as BackupJson;
    assert.equal(incr.type, 'incremental');
    assert.ok(incr.blocksReferenced > 0 && incr.blocksStored > 0, 'the incremental stores the changed blocks and references the others');
    peaks.incremental = peakRssMiB(incrRun.stderr);

    const expected = await fingerprint(p, ['t']);
    await switchAndArchive(p);
    const restored = await restoreAndStart(t, repo, ['--target-immediate', '--target-action', 'promote']);
    peaks.restore = peakRssMiB(restored.result.stderr);
    assert.equal(await fingerprint(restored.cluster, ['t']), expected, 'the restored cluster has the source data');

    t.diagnostic(`peak RSS MiB: ${Object.entries(peaks).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`);
    for (const command of ['full', 'incremental', 'restore']) {
      assert.ok(peaks[command]! < LIMIT_MIB[kind], `${command}: peak RSS ${peaks[command]!.toFixed(0)} MiB, over ${LIMIT_MIB[kind]} MiB`);
    }
  });
}
