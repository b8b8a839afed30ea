/**
 * pgark restore: a backup into a data directory, with the recovery configuration that replays
 * the WAL archive to the latest state or to a target. The backup is chosen automatically for
 * the target (the newest one that ended before it) unless --set names one.
 *
 * Safety: the target directory must be empty (or absent) unless --delta; every manifest path
 * is checked to stay inside the target (no "..", no absolute paths, no writing through
 * symlinks); tablespace links may only be pg_tblspc/<oid>, and their locations must be empty.
 */
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import type { CommandContext } from '../cli/context.ts';
import { selfCommandLine } from '../cli/self-command.ts';
import { PgarkError } from '../errors.ts';
import { formatLsn, parseLsn } from '../postgres/wal.ts';
import { listBackups, readManifest, type BackupSummary, type ManifestEntry } from '../repo/backup-manifest.ts';
import { acquireReaderLease, type RepositoryLock } from '../repo/lock.ts';
import { checkTimeReachable } from '../repo/recoverability.ts';
import { Repository } from '../repo/repository.ts';
import { listWalObjects } from '../repo/wal-archive.ts';
import { DecoderPool, FETCH_AHEAD_BYTES, ReadAhead, restoreFiles, syncFilesystems, WINDOW_BLOCKS, type FileToRestore } from '../repo/restore-files.ts';
import { Semaphore } from '../util/concurrency.ts';
import { AlignedBufferPool, DirectIo, ReusableAlignedBuffers } from '../util/direct-io.ts';
import { log } from '../util/log.ts';
import { createProgress } from '../util/progress.ts';
import { formatBytes, formatDuration } from '../util/units.ts';

type FileEntry = Extract<ManifestEntry, { t: 'f' }>;

/** A restore batch closes at this many files or this many stored bytes. */
const BATCH_FILES = 256;
const BATCH_BYTES = 64 * 1024 * 1024;

export interface Target {
  kind: 'latest' | 'time' | 'lsn' | 'xid' | 'name' | 'immediate';
  value?: string;
}

export function targetOf(options: CommandContext['options']): Target {
  const given: Target[] = [];
  if (options['target-time']) given.push({ kind: 'time', value: options['target-time'] as string });
  if (options['target-lsn']) given.push({ kind: 'lsn', value: options['target-lsn'] as string });
  if (options['target-xid']) given.push({ kind: 'xid', value: options['target-xid'] as string });
  if (options['target-name']) given.push({ kind: 'name', value: options['target-name'] as string });
  if (options['target-immediate']) given.push({ kind: 'immediate' });
  if (given.length > 1) throw new PgarkError('USAGE', 'give at most one of --target-time, --target-lsn, --target-xid, --target-name, --target-immediate');
  const target = given[0] ?? { kind: 'latest' };
  if (target.kind === 'time' && Number.isNaN(Date.parse(target.value!))) {
    throw new PgarkError('USAGE', `--target-time "${target.value}" is not a time`, { hint: "use an ISO time with a zone, e.g. '2026-11-21 10:00:00+00'" });
  }
  // PostgreSQL checks recovery_target_time before it loads zone abbreviations: an ISO time
  // ending in "Z" (what toISOString() and many tools print) stops the server at start-up.
  if (target.kind === 'time') target.value = target.value!.replace(/(\d)[zZ]$/, '$1+00:00');
  if (target.kind === 'lsn') parseLsn(target.value!);
  if (target.kind === 'xid' && !/^\d+$/.test(target.value!)) throw new PgarkError('USAGE', `--target-xid "${target.value}" is not a transaction id`);
  return target;
}

/** The backup to restore for a target: the newest that was complete before it (and can reach it). */
export function chooseBackup(backups: readonly BackupSummary[], target: Target, set: string | undefined): BackupSummary {
  if (backups.length === 0) throw new PgarkError('NOT_FOUND', 'the repository has no backup', { hint: 'take one with `pgark backup`', exitCode: 2 });
  if (set) {
    const chosen = backups.find((b) => b.id === set);
    if (!chosen) throw new PgarkError('NOT_FOUND', `no backup ${set}`, { hint: '`pgark info` lists the backups', exitCode: 2 });
    return chosen;
  }
  let candidates = [...backups];
  if (target.kind === 'time') {
    const t = Date.parse(target.value!);
    candidates = candidates.filter((b) => Date.parse(b.stoppedAt) <= t);
    if (candidates.length === 0) {
      throw new PgarkError('NOT_FOUND', `no backup ended before ${target.value}; the earliest restorable time is ${backups[0]!.stoppedAt}`, { hint: '`pgark info` shows the recoverability window', exitCode: 2 });
    }
  } else if (target.kind === 'lsn') {
    const lsn = parseLsn(target.value!);
    candidates = candidates.filter((b) => parseLsn(b.stopLsn) <= lsn);
    if (candidates.length === 0) {
      throw new PgarkError('NOT_FOUND', `no backup ended before LSN ${target.value}; the earliest restorable LSN is ${backups[0]!.stopLsn}`, { exitCode: 2 });
    }
  }
  candidates.sort((a, b) => Date.parse(a.stoppedAt) - Date.parse(b.stoppedAt));
  if (target.kind === 'xid') {
    // The newest backup that started before the transaction could have committed; without
    // that record (older backups) only the oldest backup is sure to reach it.
    const reaching = candidates.filter((b) => b.startXmin !== undefined && xidAtOrAfter(target.value!, b.startXmin));
    if (reaching.length > 0) return reaching.at(-1)!;
    if (candidates.every((b) => b.startXmin !== undefined)) {
      throw new PgarkError('NOT_FOUND', `transaction ${target.value} ended before the oldest backup started`, { hint: '`pgark info` lists the backups; an older backup would be needed', exitCode: 2 });
    }
    return candidates[0]!;
  }
  // A restore point's place in the WAL is not known without reading it: the oldest backup
  // reaches every restore point made since (--set picks a newer one when you know better).
  if (target.kind === 'name') return candidates[0]!;
  return candidates.at(-1)!;
}

/** Whether transaction `xid` (32-bit, or 64-bit with epoch) is at or after the 64-bit `xmin`. */
function xidAtOrAfter(xid: string, xmin: string): boolean {
  const full = BigInt(xid);
  const floor = BigInt(xmin);
  if (full >= 1n << 32n) return full >= floor;
  // A 32-bit xid: in the epoch that puts it nearest to xmin (xids are compared modulo 2^32).
  let candidate = (floor & ~0xffffffffn) | full;
  if (candidate - floor > 1n << 31n) candidate -= 1n << 32n;
  else if (floor - candidate > 1n << 31n) candidate += 1n << 32n;
  return candidate >= floor;
}

/** A manifest path, checked: relative, no ".." or "." segments, no NUL. */
function safePath(path: string): string {
  if (path === '' || isAbsolute(path) || path.includes('\0') || path.includes('\\') || path.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw new PgarkError('INTEGRITY', `the backup manifest contains an unsafe path "${path}"; refusing to restore`, {
      hint: 'the repository has been tampered with or is damaged',
    });
  }
  return path;
}

function sqlString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

async function isEmptyOrAbsent(path: string): Promise<boolean> {
  try {
    return (await readdir(path)).length === 0;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw error;
  }
}

export async function run(ctx: CommandContext): Promise<number> {
  const started = Date.now();
  const { options, loaded } = ctx;
  const targetDir = resolve((options['target-dir'] as string | undefined) ?? loaded.config.pgdata ?? '');
  if (!options['target-dir'] && !loaded.config.pgdata) {
    throw new PgarkError('USAGE', 'where to restore to?', { hint: 'pass --target-dir DIR (an empty or new directory), or set pgdata' });
  }
  const target = targetOf(options);
  const action = (options['target-action'] as string | undefined) ?? (target.kind === 'latest' ? undefined : 'pause');
  if (action && !['pause', 'promote', 'shutdown'].includes(action)) throw new PgarkError('USAGE', `--target-action must be pause, promote or shutdown, not "${action}"`);
  const delta = Boolean(options.delta);
  const tablespaceMap = new Map<string, string>();
  for (const item of (options['tablespace-map'] as string[] | undefined) ?? []) {
    const [from, to] = item.split('=');
    if (!from || !to || !isAbsolute(to)) throw new PgarkError('USAGE', `--tablespace-map "${item}" must be OID=/new/path or /old/path=/new/path`);
    tablespaceMap.set(from, to);
  }

  if (delta) {
    if (existsSync(join(targetDir, 'postmaster.pid'))) {
      throw new PgarkError('USAGE', `${targetDir} has a postmaster.pid: stop PostgreSQL before a delta restore`, { hint: 'pg_ctl stop -D ' + targetDir });
    }
  } else if (!(await isEmptyOrAbsent(targetDir))) {
    throw new PgarkError('EXISTS', `${targetDir} is not empty`, { hint: 'restore into an empty or new directory, or pass --delta to reuse an existing data directory (PostgreSQL stopped)' });
  }

  const repo = await Repository.open(loaded, { requireInit: true });
  let lease: RepositoryLock | undefined;
  try {
    // Shared, like a backup: expire must not repack or delete the packs and the manifest
    // generation being read, however long the restore takes (see acquireReaderLease).
    lease = await acquireReaderLease(repo, 'pgark restore', { leaseMs: loaded.config['lock-lease'], waitMs: loaded.config['lock-wait'], signal: ctx.signal });
    const backups = await listBackups(repo);
    const backup = chooseBackup(backups, target, options.set as string | undefined);
    if (target.kind === 'time') checkTimeReachable(backup, target.value!, await listWalObjects(repo), repo.identity!.postgres.walSegmentSize);
    const identities = repo.identity!.encryption.recipients.length > 0 || backup.manifestKey.endsWith('.age') ? await repo.identities(`backup ${backup.id}`) : [];
    log.info(`restoring backup ${backup.id}`, { type: backup.type, stoppedAt: backup.stoppedAt, stopLsn: backup.stopLsn, target: target.kind === 'latest' ? 'latest' : `${target.kind} ${target.value ?? ''}`.trim(), into: targetDir });

    await mkdir(targetDir, { recursive: true, mode: 0o700 });
    await chmod(targetDir, 0o700);
    const progress = createProgress(`restore ${backup.id}`, backup.size);
    // Only a delta restore needs every path (to remove the others afterwards).
    const expected = new Set<string>();
    const tablespaceLocations: string[] = [];
    const running = new Set<Promise<void>>();
    let failure: { error: unknown } | undefined;
    let end: { backupLabel: string; tablespaceMap: string } | undefined;
    let written = 0;
    let filesRestored = 0;
    const fetchers = new Semaphore(loaded.config['process-max']);
    // Windows being assembled or written: one per batch running, plus writes in flight.
    const windows = new AlignedBufferPool(loaded.config['process-max'] + 2, WINDOW_BLOCKS * backup.blockSize);
    const direct = loaded.config['restore-direct-io'] && !delta ? new DirectIo() : undefined;
    const decoders = new DecoderPool(identities, loaded.config['process-max']);
    // Per restore, not per batch: process-max times FETCH_AHEAD_BYTES fetched (in ranges of up
    // to RANGE_MAX), and twice process-max windows' worth of decoded content (blobs still in
    // use, or being written from where they were decoded, included).
    const blobBuffers = new ReusableAlignedBuffers(WINDOW_BLOCKS * backup.blockSize + 1, 2 * loaded.config['process-max'] + 2);
    const readAhead = new ReadAhead({ fetchBytes: loaded.config['process-max'] * FETCH_AHEAD_BYTES, decodeBytes: loaded.config['process-max'] * 2 * WINDOW_BLOCKS * backup.blockSize });
    // Files go in batches whose blobs are fetched together (see restore-files.ts); batches run
    // concurrently, bounded by the fetchers, and their directories exist before they run.
    let batch: FileToRestore[] = [];
    let batchBytes = 0;
    const flushBatch = async () => {
      if (batch.length === 0) return;
      const files = batch;
      batch = [];
      batchBytes = 0;
      while (running.size >= 2) await Promise.race(running);
      const job = restoreFiles(repo, files, { blockSize: backup.blockSize, fetchers, processMax: loaded.config['process-max'], decoders, readAhead, blobBuffers, windows, delta, direct, onBytes: (n) => progress.add(n) })
        .then((result) => {
          written += result.written;
          filesRestored += files.length;
        })
        .catch((error: unknown) => { failure ??= { error }; })
        .finally(() => running.delete(job));
      running.add(job);
    };

    for await (const entry of readManifest(repo, backup)) {
      if (failure) break;
      if (entry.t === 'end') {
        end = entry;
        continue;
      }
      const path = safePath(entry.p);
      if (delta) expected.add(path);
      const absolute = join(targetDir, path);
      if (entry.t === 'd') {
        await mkdir(absolute, { recursive: true, mode: entry.m & 0o777 });
      } else if (entry.t === 'l') {
        tablespaceLocations.push(await restoreLink(path, entry.target, absolute, tablespaceMap, delta));
      } else {
        batch.push({ entry: entry as FileEntry, absolute });
        batchBytes += (entry as FileEntry).x.reduce((sum, extent) => sum + extent[4], 0);
        if (batch.length >= BATCH_FILES || batchBytes >= BATCH_BYTES) await flushBatch();
      }
    }
    await flushBatch();
    await Promise.all(running);
    if (failure) throw failure.error;
    await decoders.finish();
    if (!end) throw new PgarkError('INTEGRITY', `the manifest of backup ${backup.id} has no end record`);
    progress.done();

    if (delta) await removeUnexpected(targetDir, expected);
    await writeFile(join(targetDir, 'backup_label'), end.backupLabel, { mode: 0o600 });
    await writeRecoveryConfig(ctx, targetDir, target, action, backup);
    await syncFilesystems([targetDir, ...tablespaceLocations]);

    const ms = Date.now() - started;
    log.info(`restored backup ${backup.id}`, {
      files: filesRestored,
      size: formatBytes(backup.size),
      written: formatBytes(written),
      writtenDirect: formatBytes(direct?.bytesWritten ?? 0),
      duration: formatDuration(ms),
      rate: `${formatBytes((backup.size / Math.max(ms, 1)) * 1000)}/s`,
      peakRss: formatBytes(process.resourceUsage().maxRSS * 1024),
      next: `start PostgreSQL on ${targetDir}; it replays WAL from the archive${target.kind === 'latest' ? '' : ` to the ${target.kind} target`}`,
    });
    if (ctx.json) process.stdout.write(JSON.stringify({ backup: backup.id, targetDir, files: filesRestored, size: backup.size, written, writtenDirect: direct?.bytesWritten ?? 0, durationMs: ms }) + '\n');
    return 0;
  } finally {
    await lease?.release();
    await repo.close();
  }
}

/** Creates a tablespace link (remapped if asked); returns the location it points to. */
async function restoreLink(path: string, original: string, absolute: string, map: Map<string, string>, delta: boolean): Promise<string> {
  const match = /^pg_tblspc\/(\d+)$/.exec(path);
  if (!match) {
    throw new PgarkError('INTEGRITY', `the backup manifest has a link at "${path}"; only tablespace links (pg_tblspc/<oid>) are restored`, { hint: 'the repository has been tampered with or is damaged' });
  }
  const location = map.get(match[1]!) ?? map.get(original) ?? original;
  if (!isAbsolute(location)) throw new PgarkError('INTEGRITY', `tablespace ${match[1]} has a relative location "${location}"`);
  if (!delta && !(await isEmptyOrAbsent(location))) {
    throw new PgarkError('EXISTS', `tablespace ${match[1]} location ${location} is not empty`, { hint: `map it elsewhere: --tablespace-map ${match[1]}=/new/empty/dir` });
  }
  await mkdir(location, { recursive: true, mode: 0o700 });
  const existing = await lstat(absolute).catch(() => undefined);
  if (existing) await rm(absolute, { recursive: !existing.isSymbolicLink(), force: true });
  await symlink(location, absolute);
  log.info(`tablespace ${match[1]} restored to ${location}`);
  return location;
}

/**
 * Delta restore: files the backup does not have are removed (they would confuse recovery), also
 * inside tablespaces, through their pg_tblspc/<oid> links. At the top of a tablespace location
 * only this cluster's PG_<version>_<catalog> directory is ours: other entries there (another
 * major's directory, e.g. during pg_upgrade) are left alone.
 */
async function removeUnexpected(root: string, expected: Set<string>, relative = ''): Promise<void> {
  const tablespaceTop = /^pg_tblspc\/\d+$/.test(relative);
  for (const name of await readdir(join(root, relative))) {
    const path = relative ? `${relative}/${name}` : name;
    if (expected.has(path)) {
      const info = await lstat(join(root, path));
      if (info.isDirectory() || (info.isSymbolicLink() && /^pg_tblspc\/\d+$/.test(path))) await removeUnexpected(root, expected, path);
      continue;
    }
    if (tablespaceTop) continue;
    await rm(join(root, path), { recursive: true, force: true });
  }
}

async function writeRecoveryConfig(ctx: CommandContext, targetDir: string, target: Target, action: string | undefined, backup: BackupSummary): Promise<void> {
  const options = ctx.options;
  const restoreCommand = (options['restore-command'] as string | undefined)
    ?? selfCommandLine(['wal-fetch', '%f', '%p', ...ctx.forwardArgs]);
  if (!options['restore-command'] && Object.keys(ctx.forwardEnv).length > 0) {
    log.warn(`restore_command does not carry secret settings given as flags (${Object.keys(ctx.forwardEnv).join(', ')}): give them to PostgreSQL through the config file or its environment`);
  }
  const settings: [string, string][] = [['restore_command', restoreCommand]];
  switch (target.kind) {
    case 'time': settings.push(['recovery_target_time', target.value!]); break;
    case 'lsn': settings.push(['recovery_target_lsn', formatLsn(parseLsn(target.value!))]); break;
    case 'xid': settings.push(['recovery_target_xid', target.value!]); break;
    case 'name': settings.push(['recovery_target_name', target.value!]); break;
    case 'immediate': settings.push(['recovery_target', 'immediate']); break;
    case 'latest': break;
  }
  if (action) settings.push(['recovery_target_action', action]);
  if (options['target-timeline']) settings.push(['recovery_target_timeline', options['target-timeline'] as string]);
  if (options.standby && options['primary-conninfo']) settings.push(['primary_conninfo', options['primary-conninfo'] as string]);
  // The server's own archive_command would push the restored cluster's WAL into this same
  // repository as if it were the original's; keep archiving as configured but say so.
  const autoConf = join(targetDir, 'postgresql.auto.conf');
  const lines = [`# added by pgark restore of backup ${backup.id} at ${new Date().toISOString()}`, ...settings.map(([k, v]) => `${k} = ${sqlString(v)}`)];
  // A backup of a cluster that was itself restored carries that restore's settings (e.g.
  // recovery_target_time and promote): left in place, a latest restore would stop at the old
  // target, or fail with "multiple recovery targets". Disable them; ours follow.
  const previous = await readFile(autoConf, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return '';
    throw error;
  });
  const kept = previous.split('\n').map((line) => (/^\s*(restore_command|recovery_target\w*)\s*(=|\s|$)/.test(line) ? `# (disabled by pgark restore) ${line}` : line));
  await writeFile(autoConf, kept.join('\n').replace(/\n*$/, '\n') + '\n' + lines.join('\n') + '\n', { mode: 0o600 });
  const signal = options.standby ? 'standby.signal' : 'recovery.signal';
  await writeFile(join(targetDir, signal), '', { mode: 0o600 });
  const existing = await readFile(autoConf, 'utf8');
  if (!existing.includes('restore_command')) throw new PgarkError('INTERNAL', 'could not write the recovery configuration');
}
