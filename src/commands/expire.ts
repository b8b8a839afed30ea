/** pgark expire: delete what the retention policy no longer needs (src/repo/expire.ts). */
import type { CommandContext } from '../cli/context.ts';
import type { Config } from '../config/load.ts';
import { PgarkError } from '../errors.ts';
import { expire, type ExpireOptions, type ExpireReport } from '../repo/expire.ts';
import { Repository } from '../repo/repository.ts';
import type { RetentionPolicy } from '../repo/retention.ts';
import { log } from '../util/log.ts';
import { formatBytes, formatDuration } from '../util/units.ts';

export function policyOf(config: Config): RetentionPolicy {
  return { retain: config.retain, retainFull: config['retain-full'], windowMs: config['retain-window'] };
}

/**
 * "Now" for the recovery window. PGARK_TEST_NOW (an ISO time) replaces the clock, for tests that
 * script weeks of history in minutes; it changes nothing else (locks use the store's clock).
 */
export function expireNow(): Date {
  const text = process.env.PGARK_TEST_NOW;
  if (!text) return new Date();
  const at = new Date(text);
  if (Number.isNaN(at.getTime())) throw new PgarkError('CONFIG', `PGARK_TEST_NOW "${text}" is not a time`, { hint: 'unset it, or give an ISO time such as 2026-11-21T10:00:00Z' });
  return at;
}

export function expireOptionsOf(config: Config, dryRun: boolean, signal?: AbortSignal): ExpireOptions {
  return {
    policy: policyOf(config),
    dryRun,
    now: expireNow(),
    lock: { leaseMs: config['lock-lease'], waitMs: config['lock-wait'], signal },
    concurrency: config['process-max'],
    repackThreshold: config['repack-threshold'],
  };
}

export function formatReport(report: ExpireReport): string {
  const verb = report.dryRun ? 'would delete' : 'deleted';
  const out: string[] = [];
  if (report.windowStart) out.push(`recovery window from ${report.windowStart} (now ${report.now})`);
  for (const b of report.retained) out.push(`  keep    ${b.id}  ${b.type.padEnd(11)} ended ${b.stoppedAt}  (${b.reasons.join(', ')})`);
  for (const b of report.expired) out.push(`  expire  ${b.id}  ${b.type.padEnd(11)} ended ${b.stoppedAt}`);
  if (report.incomplete.deleted.length > 0) out.push(`unfinished backups: ${verb} ${report.incomplete.deleted.join(', ')}`);
  if (report.incomplete.kept) out.push(`unfinished backup ${report.incomplete.kept} kept (newer than every complete backup: may be resumed)`);
  const { deleted, remaining } = report;
  out.push(`backup objects: ${verb} ${deleted.backupObjects.count} (${formatBytes(deleted.backupObjects.bytes)})`);
  out.push(`packs: ${verb} ${deleted.packs.count} (${formatBytes(deleted.packs.bytes)}), ${remaining.packs.count} remain (${formatBytes(remaining.packs.bytes)})`);
  out.push(`WAL: ${verb} ${deleted.wal.count} file(s) (${formatBytes(deleted.wal.bytes)}) and ${deleted.walBlockMaps.count} block map(s) (${formatBytes(deleted.walBlockMaps.bytes)}), ${remaining.wal.count} remain (${formatBytes(remaining.wal.bytes)})`);
  if (deleted.keepMarkers > 0) out.push(`keep markers: ${verb} ${deleted.keepMarkers}`);
  const { repack } = report;
  if (repack.packs > 0) {
    out.push(`repack: ${report.dryRun ? 'would copy' : 'copied'} ${formatBytes(repack.liveBytes)} of live blobs out of ${repack.packs} pack(s) (${formatBytes(repack.bytes)})${report.dryRun ? '' : ` into ${repack.newPacks} new pack(s)`}; ${repack.backups} backup(s) ${report.dryRun ? 'would get' : 'got'} a new manifest generation; ${formatBytes(repack.savedBytes)} ${report.dryRun ? 'would be' : 'will be'} freed when a later expire deletes the old packs (after 24 h)`);
  }
  if (report.abortedUploads > 0) out.push(`aborted ${report.abortedUploads} multipart upload(s) open for over a day`);
  if (report.tempFiles.count > 0) {
    out.push(`temporary files of killed writers (last written over a day ago): ${report.dryRun ? 'would remove' : 'removed'} ${report.tempFiles.count} (${formatBytes(report.tempFiles.bytes)})`);
    for (const key of report.tempFiles.keys) out.push(`  ${key}`);
  }
  out.push(`${report.dryRun ? 'dry run: nothing deleted; would free' : 'freed'} ${formatBytes(deleted.bytes)} in ${formatDuration(report.durationMs)}${report.requests !== null ? `, ${report.requests} requests` : ''}`);
  return out.join('\n') + '\n';
}

export async function run(ctx: CommandContext): Promise<number> {
  const repo = await Repository.open(ctx.loaded, { requireInit: true });
  try {
    const report = await expire(repo, expireOptionsOf(ctx.loaded.config, Boolean(ctx.options['dry-run']), ctx.signal));
    log.info(report.dryRun ? 'expire dry run complete' : 'expire complete', { expired: report.expired.length, retained: report.retained.length, freed: formatBytes(report.deleted.bytes), requests: report.requests ?? undefined });
    process.stdout.write(ctx.json ? JSON.stringify(report) + '\n' : formatReport(report));
    return 0;
  } finally {
    await repo.close();
  }
}
