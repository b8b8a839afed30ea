/**
 * The fast paths of wal-push and wal-fetch: PostgreSQL starts one pgark per WAL file, and most
 * calls have nothing to do but look at the local spool — the file was uploaded by the
 * background pusher, or the segment was prefetched. These calls skip the configuration (its
 * schema and YAML parser cost several times the rest of the call) and find the spool through
 * the locator the last full call recorded (spool-locator.ts). Whenever anything is unusual
 * (no locator, no marker, a failure to report), they return undefined and the normal path runs,
 * which loads and validates everything and handles every case; the fast path never fails a
 * call itself.
 */
import { fs } from '../util/node-fs.ts';
import { basename, dirname, join, resolve } from 'node:path';
import { SETTINGS_BY_KEY, envNameOf } from '../config/settings.ts';
import { parseWalFileName } from '../postgres/wal.ts';
import { awaitPusher, inPushWindow, processStartedAt, walFileInfo } from '../repo/push-ahead.ts';
import { fetchThroughSpool } from '../repo/fetch-requests.ts';
import { Spool } from '../repo/spool.ts';
import { configureLogger, log } from '../util/log.ts';
import { prefetcherOf, pusherOf } from './background.ts';
import { parseFastInvocation, readSpoolLocation, type FastInvocation, type SpoolLocation } from './spool-locator.ts';

/** The exit status of the call, or undefined: take the normal path. */
export async function runFastPath(argv: readonly string[]): Promise<number | undefined> {
  const started = Date.now();
  try {
    const invocation = parseFastInvocation(argv);
    if (!invocation || process.env.PGARK_DEBUG === '1') return undefined;
    const location = await readSpoolLocation(invocation);
    if (!location) return undefined;
    configureLogger({ level: location.logLevel, format: location.logFormat, command: invocation.command });
    const spool = Spool.existing(location.spoolRoot);
    return invocation.command === 'wal-push'
      ? await pushFromSpool(spool, location, invocation.positionals[0]!, invocation.flags, started)
      : await fetchFromSpool(spool, location, invocation, started);
  } catch {
    return undefined;
  }
}

/** wal-push: the file's marker is there, or appears while the running pusher works on it. */
async function pushFromSpool(spool: Spool, location: SpoolLocation, walArg: string, flags: readonly string[], started: number): Promise<number | undefined> {
  const walPath = resolve(walArg);
  const name = basename(walPath);
  if (!parseWalFileName(name)) return undefined;
  const file = await walFileInfo(walPath);
  if (!file) return undefined;
  if (!(await spool.isMarkedArchived(name, file))) {
    if (location.pushAhead <= 0 || !fs.existsSync(join(spool.root, 'archived'))) return undefined;
    if (!(await inPushWindow(dirname(walPath), name, location.pushAhead))) return undefined;
    // Usually the pusher runs and has the file in hand; the first call of a batch starts it
    // here, without loading the configuration first (the pusher loads it anyway).
    const { args, env } = childArguments(flags);
    const outcome = await awaitPusher(spool, name, file, {
      deadline: Date.now() + location.archiveTimeoutMs,
      since: processStartedAt() - 1000,
      pusherRunning: pusherOf(spool, dirname(walPath), args, env),
    });
    if (outcome.kind !== 'archived') return undefined; // a failure is reported by the normal path
  }
  await spool.clearArchived(name);
  log.info(`archived ${name} (uploaded ahead)`, { ms: Date.now() - started });
  return 0;
}

/**
 * wal-fetch: the file is in the spool (prefetched), or the running prefetcher gets it or says
 * the archive does not have it (src/repo/fetch-requests.ts).
 */
async function fetchFromSpool(spool: Spool, location: SpoolLocation, invocation: FastInvocation, started: number): Promise<number | undefined> {
  const [name, destination] = invocation.positionals as [string, string];
  const file = parseWalFileName(name);
  if (!file || !fs.existsSync(spool.fetchedPath(''))) return undefined; // no spool yet: the normal path makes it
  const { args, env } = childArguments(invocation.flags);
  const prefetcher = location.walPrefetch > 0 ? prefetcherOf(spool, name, dirname(resolve(destination)), args, env) : undefined;
  const outcome = await fetchThroughSpool(spool, name, resolve(destination), prefetcher);
  if (outcome === undefined) return undefined;
  if (outcome === 'missing') {
    log.debug(`${name} is not in the archive`);
    return 1;
  }
  // The file is in place: from here on the call succeeds, whatever else happens.
  if (file.kind === 'segment') {
    try {
      await spool.setFetchPosition(name);
      await prefetcher?.();
    } catch {
      // the next call starts the prefetcher
    }
  }
  log.info(`restored ${name} (prefetched)`, { ms: Date.now() - started });
  return 0;
}

/** Flags for a child pgark: secret settings move to its environment (a command line is visible in ps). */
function childArguments(flags: readonly string[]): { args: string[]; env: Record<string, string> } {
  const args: string[] = [];
  const env: Record<string, string> = {};
  for (let i = 0; i < flags.length; i++) {
    const flag = flags[i]!;
    const [name, inline] = flag.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    const spec = SETTINGS_BY_KEY.get(name);
    const takesValue = inline === undefined && name !== undefined && (name === 'config' || spec?.type.kind !== 'boolean');
    const value = takesValue ? flags[++i]! : inline;
    if (spec?.secret && value !== undefined) env[envNameOf(name)] = value;
    else args.push(...(takesValue ? [flag, value!] : [flag]));
  }
  return { args, env };
}
