/**
 * How PostgreSQL should run this pgark (restore_command written by `pgark restore`): through
 * the launcher next to the bundle (dist/pgark, src/cli/launcher.sh), which answers most
 * wal-fetch calls without starting Node, with the Node running now first on PATH so that the
 * calls it hands to Node get the same one. Without a launcher (running from source), Node and
 * this script directly.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Quotes a word for /bin/sh when it needs it. */
export function shellQuote(value: string): string {
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replaceAll("'", "'\\''")}'`;
}

/** A shell command line running pgark with `args` (%f / %p are left for PostgreSQL to replace). */
export function selfCommandLine(args: readonly string[]): string {
  const quoted = args.map((part) => (part === '%f' || part === '%p' ? part : shellQuote(part))).join(' ');
  const script = process.argv[1]!;
  const launcher = join(dirname(script), 'pgark');
  if (script.endsWith('.mjs') && existsSync(launcher)) {
    return `PATH=${shellQuote(dirname(process.execPath))}:"$PATH" ${shellQuote(launcher)} ${quoted}`;
  }
  return `${shellQuote(process.execPath)} ${shellQuote(script)} ${quoted}`;
}
