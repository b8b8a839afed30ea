/** pgark info: what the repository holds and what it can restore. */
import type { CommandContext } from '../cli/context.ts';
import { Repository } from '../repo/repository.ts';
import { listBackups } from '../repo/backup-manifest.ts';
import { isKept, readKeepMarkers } from '../repo/keep.ts';
import { recoverability } from '../repo/recoverability.ts';
import { listStreams } from '../repo/streams.ts';
import { listWalObjects } from '../repo/wal-archive.ts';
import { coverageOf } from '../repo/wal-ranges.ts';
import { formatBytes } from '../util/units.ts';

export async function run(ctx: CommandContext): Promise<number> {
  const repo = await Repository.open(ctx.loaded, { requireInit: false });
  try {
    const identity = repo.identity;
    const wal = await listWalObjects(repo);
    const coverage = identity ? coverageOf(wal, identity.postgres.walSegmentSize) : undefined;
    const streams = await listStreams(repo);
    const backups = identity ? await listBackups(repo) : [];
    const markers = await readKeepMarkers(repo);
    const window = identity ? recoverability(backups, wal, identity.postgres.walSegmentSize) : undefined;
    const walBytes = wal.reduce((sum, o) => sum + o.size, 0);
    const newest = wal.reduce<Date | undefined>((max, o) => (!max || o.lastModified > max ? o.lastModified : max), undefined);

    if (ctx.json) {
      process.stdout.write(JSON.stringify({
        repository: repo.description,
        identity: identity ?? null,
        backups: backups.map((b) => ({ ...b, keep: isKept(b, markers), recoverability: window?.backups.find((r) => r.id === b.id) })),
        recoverable: { earliest: window?.earliest ?? null, latest: window?.latest ?? null },
        wal: { files: wal.length, storedBytes: walBytes, newestArchivedAt: newest?.toISOString() ?? null, timelines: coverage?.timelines ?? [], conflicts: coverage?.conflicts ?? [] },
        streams: streams.map(({ name, size, storedSize, createdAt }) => ({ name, size, storedSize, createdAt })),
      }) + '\n');
      return 0;
    }
    const out: string[] = [`repository: ${repo.description}`];
    if (identity) {
      out.push(`cluster:    system identifier ${identity.postgres.systemIdentifier}, PostgreSQL ${identity.postgres.majorVersion}, WAL segments of ${formatBytes(identity.postgres.walSegmentSize)}`);
      out.push(`encryption: ${identity.encryption.recipients.length ? `age, ${identity.encryption.recipients.length} recipient(s)` : 'none'}`);
    } else {
      out.push('not initialised for a cluster (`pgark init`)');
    }
    out.push('', `backups: ${backups.length}`);
    for (const b of backups) {
      const r = window?.backups.find((x) => x.id === b.id);
      out.push(`  ${b.id}  ${b.type.padEnd(11)} ${b.startedAt.replace('T', ' ').slice(0, 19)} .. ${b.stoppedAt.replace('T', ' ').slice(11, 19)}  LSN ${b.startLsn}..${b.stopLsn}  TL ${b.timeline}  ${formatBytes(b.size)} logical, ${formatBytes(b.storedBytes)} new, ${(b.durationMs / 1000).toFixed(1)}s${b.base ? `  base ${b.base}` : ''}${isKept(b, markers) ? '  [keep]' : ''}${r && !r.consistent ? '  NOT RESTORABLE: WAL missing' : ''}`);
    }
    if (window?.earliest) out.push(`recoverable: from ${window.earliest} to ${window.latest}`);
    else if (backups.length > 0) out.push('recoverable: nothing (no backup has its WAL archived)');
    out.push('', `WAL archive: ${wal.length} file(s), ${formatBytes(walBytes)} stored${newest ? `, newest archived ${newest.toISOString()}` : ''}`);
    for (const t of coverage?.timelines ?? []) {
      out.push(`  timeline ${t.timeline}: ${t.runs.map((r) => (r.count === 1 ? r.first : `${r.first}..${r.last}`)).join(', ') || '(history only)'}`);
      for (const gap of t.gaps) out.push(`    gap: ${gap.first}..${gap.last} (${gap.count} missing)`);
    }
    for (const name of coverage?.conflicts ?? []) out.push(`  CONFLICT: ${name} archived with different contents`);
    out.push('', `streams: ${streams.length}${streams.length ? ` (${formatBytes(streams.reduce((s, x) => s + x.storedSize, 0))} stored; \`pgark ls\`)` : ''}`);
    process.stdout.write(out.join('\n') + '\n');
    return 0;
  } finally {
    await repo.close();
  }
}
