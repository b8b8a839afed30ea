/**
 * Where the spool of a wal-push / wal-fetch invocation is, found without reading the
 * configuration. PostgreSQL starts one pgark per WAL file; most of those calls only have to
 * look at the spool (a file uploaded ahead, a segment prefetched), and loading and validating
 * the configuration costs several times more CPU than that. So every call that did load it
 * records the few values the fast path needs (the spool directory, logging, a timeout) in a
 * small "locator" file, keyed by everything the configuration is derived from:
 *
 *   - the command line apart from the positional arguments (--config and setting flags),
 *   - every PGARK_* environment variable,
 *   - the identity of the config file (device, inode, size, mtime and ctime, or its absence),
 *   - the working directory (relative paths), the pgark version and this file's format.
 *
 * Any change to one of them is another key, so the fast path finds no locator and the call
 * takes the normal path, which validates the configuration and writes a locator for the new
 * key. Only the key's hash is stored (never a setting's value; secret settings are part of the
 * key by name only), in a 0700 directory of the default spool base, and a locator file not
 * owned by the current user is ignored.
 */
import { join, resolve } from 'node:path';
import { DEFAULT_CONFIG_PATH, SETTINGS_BY_KEY } from '../config/settings.ts';
import { defaultSpoolBase, tempSuffix } from '../repo/spool.ts';
import { fs } from '../util/node-fs.ts';
import type { LogFormat, LogLevel } from '../util/log.ts';

declare const PGARK_VERSION: string | undefined;

/** Bump when the meaning of a locator changes. */
const LOCATOR_FORMAT = 1;

/** The commands with a fast path, and their number of positional arguments. */
const FAST_COMMANDS: Record<string, number> = { 'wal-push': 1, 'wal-fetch': 2 };

export interface SpoolLocation {
  spoolRoot: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** archive-push-ahead, archive-timeout (ms) and wal-prefetch of the configuration. */
  pushAhead: number;
  archiveTimeoutMs: number;
  walPrefetch: number;
}

export interface FastInvocation {
  command: 'wal-push' | 'wal-fetch';
  positionals: string[];
  /** The arguments that are not positionals (--config, setting flags), in order. */
  flags: string[];
}

/**
 * Splits a wal-push / wal-fetch command line into positionals and flags, when it has a shape
 * the fast path understands: --config FILE and setting flags (--key VALUE, --key=VALUE, or a
 * boolean --key), and exactly the command's positionals. Anything else (--help, --debug, an
 * unknown flag, "--"): undefined, and the normal path handles (and validates) it.
 */
export function parseFastInvocation(argv: readonly string[]): FastInvocation | undefined {
  const [command, ...rest] = argv;
  const positionalCount = command === undefined ? undefined : FAST_COMMANDS[command];
  if (positionalCount === undefined) return undefined;
  const positionals: string[] = [];
  const flags: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (!arg.startsWith('-')) {
      positionals.push(arg);
      continue;
    }
    if (!arg.startsWith('--') || arg === '--') return undefined;
    const [name, inline] = arg.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    const spec = SETTINGS_BY_KEY.get(name);
    if (name !== 'config' && !spec) return undefined;
    const boolean = spec?.type.kind === 'boolean';
    if (inline !== undefined || boolean) {
      flags.push(arg);
      continue;
    }
    const value = rest[i + 1];
    if (value === undefined || value.startsWith('-')) return undefined;
    flags.push(arg, value);
    i++;
  }
  if (positionals.length !== positionalCount) return undefined;
  return { command: command as FastInvocation['command'], positionals, flags };
}

function configFlag(flags: readonly string[]): string | undefined {
  let path: string | undefined;
  for (let i = 0; i < flags.length; i++) {
    if (flags[i] === '--config') path = flags[++i];
    else if (flags[i]!.startsWith('--config=')) path = flags[i]!.slice('--config='.length);
  }
  return path;
}

/** A secret setting's value cannot change where the spool is (nor fail validation: any string goes). */
function isSecretVariable(name: string): boolean {
  return SETTINGS_BY_KEY.get(name.slice('PGARK_'.length).toLowerCase().replaceAll('_', '-'))?.secret === true;
}

function secretFlag(arg: string): boolean {
  return arg.startsWith('--') && SETTINGS_BY_KEY.get(arg.slice(2).split('=')[0]!)?.secret === true;
}

function locatorKey(flags: readonly string[]): string {
  const configPath = configFlag(flags) ?? process.env.PGARK_CONFIG ?? DEFAULT_CONFIG_PATH;
  const info = fs.statSync(resolve(configPath), { bigint: true, throwIfNoEntry: false });
  const configIdentity = info ? [info.dev, info.ino, info.size, info.mtimeNs, info.ctimeNs].join(':') : 'absent';
  const env = Object.entries(process.env)
    .filter(([name]) => name.startsWith('PGARK_'))
    .map(([name, value]) => [name, isSecretVariable(name) ? '(secret)' : value])
    .sort(([a], [b]) => (a! < b! ? -1 : a! > b! ? 1 : 0));
  const version = typeof PGARK_VERSION === 'string' ? PGARK_VERSION : 'dev';
  const shownFlags = flags.map((flag, i) => (i > 0 && secretFlag(flags[i - 1]!) && !flags[i - 1]!.includes('=') ? '(secret)' : secretFlag(flag) && flag.includes('=') ? flag.split('=')[0]! : flag));
  const material = JSON.stringify([LOCATOR_FORMAT, version, shownFlags, env, configPath, configIdentity, process.cwd()]);
  return hash128(material);
}

/**
 * A 128-bit FNV-1a style hash (four 32-bit lanes) as hex. Not cryptographic, and it need not be:
 * the key holds no secret (secret settings enter it by name only) and is not chosen by anyone
 * else; node:crypto would cost more start-up than the rest of the fast path.
 */
function hash128(text: string): string {
  const lanes = [0x811c9dc5, 0x01000193, 0x9e3779b9, 0x85ebca6b];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    for (let l = 0; l < 4; l++) lanes[l] = Math.imul(lanes[l]! ^ (c + l * 0x3b), 0x01000193 + l * 0x1000);
  }
  return lanes.map((lane) => (lane >>> 0).toString(16).padStart(8, '0')).join('');
}

function locatorPath(key: string): string {
  return join(defaultSpoolBase(), 'locators', `${key}.json`);
}

function isLocation(value: unknown): value is SpoolLocation {
  const v = value as Partial<SpoolLocation> | null;
  return typeof v === 'object' && v !== null && typeof v.spoolRoot === 'string' && typeof v.logLevel === 'string' && typeof v.logFormat === 'string'
    && typeof v.pushAhead === 'number' && typeof v.archiveTimeoutMs === 'number' && typeof v.walPrefetch === 'number';
}

/** The location recorded for this invocation, or undefined (none yet, or not trustworthy). */
export async function readSpoolLocation(invocation: FastInvocation): Promise<SpoolLocation | undefined> {
  let fd: number;
  try {
    fd = fs.openSync(locatorPath(locatorKey(invocation.flags)), 'r');
  } catch {
    return undefined;
  }
  try {
    if (fs.fstatSync(fd).uid !== (process.getuid?.() ?? 0)) return undefined;
    const value: unknown = JSON.parse(fs.readFileSync(fd, 'utf8'));
    return isLocation(value) ? value : undefined;
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Records where this invocation's spool is (called by wal-push and wal-fetch once they have
 * loaded the configuration and opened the spool). `argv`: the command line after the
 * executable, as given to the CLI. A failure to write is ignored: the next call is only slower.
 */
export async function rememberSpoolLocation(argv: readonly string[], location: SpoolLocation): Promise<void> {
  const invocation = parseFastInvocation(argv);
  if (!invocation) return;
  const path = locatorPath(locatorKey(invocation.flags));
  const text = JSON.stringify(location);
  try {
    if (fs.readFileSync(path, 'utf8') === text) return;
  } catch {
    // not written yet
  }
  const temp = `${path}.tmp-${tempSuffix()}`;
  try {
    fs.mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
    fs.writeFileSync(temp, text, { mode: 0o600 });
    fs.renameSync(temp, path);
  } catch {
    try {
      fs.rmSync(temp, { force: true });
    } catch {
      // left for the next call to overwrite: harmless
    }
  }
}
