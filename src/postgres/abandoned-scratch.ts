/**
 * Scratch directories of `pgark restore-test` runs that died without cleaning up (SIGKILL, OOM
 * killer, power loss of the pgark process alone): their PostgreSQL keeps running, a copy of
 * production data with trust authentication, and the directory keeps its disk space. Each run
 * writes a marker into its scratch directory (owner process id and start time); the next run
 * in the same parent directory stops the servers of runs whose owner is gone and removes their
 * directories.
 *
 * Safety: only a directory with a marker file owned by the current OS user, written on this
 * host, whose owner process no longer exists (same pid and start time), is touched; its server
 * is signalled only when postmaster.pid names a live process whose command line runs on exactly
 * that directory's data directory with the restore-test cluster name. Anything else is left alone.
 */
import { chown, lstat, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { log } from '../util/log.ts';

export const SCRATCH_PREFIX = 'pgark-restore-test-';
const MARKER = 'pgark-restore-test.json';
/** The cluster_name ScratchServer gives its servers. */
export const SCRATCH_CLUSTER_NAME = 'pgark-restore-test';

interface Marker {
  host: string;
  pid: number;
  /** Start time of the owner process (clock ticks since boot, /proc/PID/stat field 22): tells a reused pid apart. */
  startTicks: string | null;
  startedAt: string;
}

async function startTicksOf(pid: number): Promise<string | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (the command) is in parentheses and may contain anything: count after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

function exists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function ownerAlive(marker: Marker): Promise<boolean> {
  if (!exists(marker.pid)) return false;
  if (marker.startTicks === null) return true; // no /proc: a live pid counts as the owner
  return (await startTicksOf(marker.pid)) === marker.startTicks;
}

/** Writes this process's marker into a new scratch directory (owned by us even after a chown -R: see chownMarkerBack). */
export async function writeScratchMarker(scratch: string): Promise<void> {
  const marker: Marker = { host: hostname(), pid: process.pid, startTicks: await startTicksOf(process.pid), startedAt: new Date().toISOString() };
  await writeFile(join(scratch, MARKER), JSON.stringify(marker) + '\n', { mode: 0o600 });
}

/** After the scratch tree was given to the server's OS user: the marker stays ours. */
export async function chownMarkerBack(scratch: string): Promise<void> {
  if (process.getuid && process.getgid) await chown(join(scratch, MARKER), process.getuid(), process.getgid());
}

/** The postmaster of `dataDir` if it runs: the pid in postmaster.pid, checked against its command line. */
async function postmasterOf(dataDir: string): Promise<number | undefined> {
  const lines = (await readFile(join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n');
  const pid = Number(lines[0]);
  if (!Number.isInteger(pid) || pid <= 1 || lines[1] !== dataDir) return undefined;
  const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
  const d = argv.indexOf('-D');
  if (d < 0 || argv[d + 1] !== dataDir || !argv.includes(`cluster_name=${SCRATCH_CLUSTER_NAME}`)) return undefined;
  return pid;
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!exists(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return !exists(pid);
}

/** Fast shutdown; immediate after 30 s; SIGKILL after 10 more (as ScratchServer.stop). */
async function stopPostmaster(pid: number): Promise<void> {
  for (const [signal, ms] of [['SIGINT', 30_000], ['SIGQUIT', 10_000], ['SIGKILL', 10_000]] as const) {
    try {
      process.kill(pid, signal);
    } catch {
      return; // gone
    }
    if (await waitGone(pid, ms)) return;
  }
}

/** Stops and removes what dead restore-test runs left in `parent`; returns the directories removed. */
export async function cleanAbandonedScratch(parent: string): Promise<string[]> {
  const removed: string[] = [];
  const names = await readdir(parent).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(SCRATCH_PREFIX)) continue;
    const scratch = join(parent, name);
    try {
      const dir = await lstat(scratch);
      if (!dir.isDirectory()) continue;
      const markerPath = join(scratch, MARKER);
      const info = await lstat(markerPath).catch(() => undefined);
      if (!info?.isFile() || info.uid !== process.getuid?.()) continue; // not ours
      const marker = JSON.parse(await readFile(markerPath, 'utf8')) as Marker;
      if (marker.host !== hostname() || (await ownerAlive(marker))) continue; // another host's, or still running
      const postmaster = await postmasterOf(join(scratch, 'data'));
      if (postmaster !== undefined) {
        log.warn(`stopping the scratch PostgreSQL (pid ${postmaster}) of a restore-test that died (pgark pid ${marker.pid}, started ${marker.startedAt})`, { scratch });
        await stopPostmaster(postmaster);
        if (exists(postmaster)) {
          log.warn(`could not stop PostgreSQL pid ${postmaster}; leaving ${scratch} in place`);
          continue;
        }
      }
      await rm(scratch, { recursive: true, force: true, maxRetries: 3 });
      log.info(`removed the scratch directory of a restore-test that died (pgark pid ${marker.pid}, started ${marker.startedAt})`, { scratch });
      removed.push(scratch);
    } catch (error) {
      log.warn(`could not clean up ${scratch}: ${(error as Error).message}`);
    }
  }
  return removed;
}
