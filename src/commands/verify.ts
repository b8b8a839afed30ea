/**
 * pgark verify: can every backup still be restored, and to which points in time? Checks what
 * every manifest references and the WAL archive (src/repo/verify.ts), remembers what it found
 * intact in the repository (verify-state.ts) so the next run reads only what is new, and
 * reports each broken backup and the time ranges no longer recoverable. Exit 2 on any problem.
 */
import type { CommandContext } from '../cli/context.ts';
import { PgarkError } from '../errors.ts';
import { RepositoryLock } from '../repo/lock.ts';
import { Repository } from '../repo/repository.ts';
import { verifyRepository, type VerifyMode, type VerifyReport } from '../repo/verify.ts';
import { newRunId, readLatestState, writeState } from '../repo/verify-state.ts';
import { log } from '../util/log.ts';
import { createProgress } from '../util/progress.ts';
import { formatBytes, formatDuration } from '../util/units.ts';

export async function run(ctx: CommandContext): Promise<number> {
  if (ctx.options.quick && ctx.options.full) throw new PgarkError('USAGE', 'give --quick or --full, not both');
  const mode: VerifyMode = ctx.options.quick ? 'quick' : ctx.options.full ? 'full' : 'incremental';
  const started = new Date();
  const { config } = ctx.loaded;
  const repo = await Repository.open(ctx.loaded, { requireInit: true });
  let lock: RepositoryLock | undefined;
  try {
    // Shared, like a backup: expire must not delete packs or WAL while they are being checked.
    lock = await RepositoryLock.acquire(repo, 'shared', 'pgark verify', { leaseMs: config['lock-lease'], waitMs: config['lock-wait'], signal: ctx.signal });
    const previous = mode === 'incremental' ? await readLatestState(repo) : undefined;
    const progress = createProgress('verify');
    const report = await verifyRepository(repo, {
      mode,
      concurrency: ctx.loaded.config['process-max'],
      previous: previous?.state,
      signal: ctx.signal,
      onBytes: (n) => progress.add(n),
    });
    progress.done();
    const durationMs = Date.now() - started.getTime();

    // Remember what is intact, unless nothing changed since the last record.
    let stateKey: string | undefined;
    if (report.state) {
      const unchanged = previous !== undefined && sameKeys(previous.state.packs, report.state.packs) && sameKeys(previous.state.wal, report.state.wal);
      if (!unchanged) {
        stateKey = await writeState(repo, { format: 1, run: newRunId(started), startedAt: started.toISOString(), finishedAt: new Date().toISOString(), ...report.state });
      }
    }
    const dataBytes = report.read.packs.bytes + report.read.wal.bytes;
    const rate = (dataBytes / Math.max(durationMs, 1)) * 1000;
    log.info(`verified ${report.backups.length} backup(s) and ${report.wal.files} WAL file(s)`, {
      mode, ok: report.ok, read: formatBytes(dataBytes), duration: formatDuration(durationMs), rate: `${formatBytes(rate)}/s`,
      skipped: report.read.packs.skipped + report.read.wal.skipped,
    });

    if (ctx.json) {
      const { state: _state, ...rest } = report;
      process.stdout.write(JSON.stringify({
        ...rest,
        repository: repo.description,
        startedAt: started.toISOString(),
        durationMs,
        bytesPerSecond: Math.round(rate),
        state: { previous: previous?.key ?? null, written: stateKey ?? null },
      }) + '\n');
    } else {
      process.stdout.write(textReport(report, durationMs, rate));
    }
    return report.ok ? 0 : 2;
  } finally {
    await lock?.release();
    await repo.close();
  }
}

function sameKeys(a: Record<string, number>, b: Record<string, number>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => b[k] === a[k]);
}

function textReport(report: VerifyReport, durationMs: number, rate: number): string {
  const out: string[] = [];
  for (const b of report.backups) {
    const state = !b.intact ? 'BROKEN' : !b.restorable ? 'NOT RESTORABLE (WAL missing)' : `ok, recovers up to ${b.reachesTime}`;
    out.push(`backup ${b.id}${b.type ? ` ${b.type}` : ''}: ${state}`);
  }
  if (report.backups.length === 0) out.push('no backups');
  for (const p of report.problems) out.push(`PROBLEM ${p.message}${p.backups.length ? ` (backups: ${p.backups.join(', ')})` : ''}`);
  for (const w of report.warnings) out.push(`warning: ${w}`);
  for (const r of report.recoverable) out.push(`recoverable: ${r.from} .. ${r.to}`);
  if (report.recoverable.length === 0 && report.backups.length > 0) out.push('recoverable: nothing');
  for (const r of report.lost) out.push(`NO LONGER RECOVERABLE: ${r.from} .. ${r.to}`);
  const { manifests, packs, wal } = report.read;
  const skipped = report.mode === 'incremental' ? `; skipped as verified before: ${packs.skipped} pack(s), ${wal.skipped} WAL file(s)` : '';
  out.push(`read: ${manifests.objects} manifest(s) ${formatBytes(manifests.bytes)}, ${packs.objects} pack(s) ${formatBytes(packs.bytes)}, ${wal.objects} WAL file(s) ${formatBytes(wal.bytes)}${skipped}`);
  out.push(`${report.ok ? 'ok' : 'problems found'} (${report.mode}, ${formatDuration(durationMs)}${report.mode === 'quick' ? '' : `, ${formatBytes(rate)}/s`})`);
  return out.join('\n') + '\n';
}
