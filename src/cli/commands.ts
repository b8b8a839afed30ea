/**
 * The command table: names, usage, options and a lazy loader for each command's code, so that
 * starting pgark parses only what the one command needs.
 */
import type { CommandContext } from './context.ts';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  description: string;
  valueName?: string;
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  description?: string;
  positionals: { min: number; max: number };
  options: Record<string, OptionSpec>;
  /** Internal commands are not listed in `pgark --help`. */
  hidden?: boolean;
  /** Whether the command reads the configuration (every one but keygen and help). */
  usesConfig: boolean;
  load: () => Promise<{ run: (ctx: CommandContext) => Promise<number | void> }>;
}

const JSON_OPTION: OptionSpec = { type: 'boolean', description: 'Print the result as JSON' };

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'init',
    summary: 'Initialise a repository for this PostgreSQL cluster',
    usage: 'pgark init [--repo URL] [--recipient age1...]',
    description:
      'Connects to PostgreSQL, reads its system identifier, version and WAL segment size, and writes the\n' +
      'repository description (pgark.json) with the public encryption recipients. Refuses a repository\n' +
      'that belongs to another cluster. Running it again on the same cluster changes nothing.',
    positionals: { min: 0, max: 0 },
    options: { json: JSON_OPTION },
    usesConfig: true,
    load: () => import('../commands/init.ts'),
  },
  {
    name: 'check',
    summary: 'Check configuration, repository access, database connection and archiving',
    usage: 'pgark check [--json]',
    positionals: { min: 0, max: 0 },
    options: {
      json: JSON_OPTION,
      'no-postgres': { type: 'boolean', description: 'Skip the database checks (repository only)' },
    },
    usesConfig: true,
    load: () => import('../commands/check.ts'),
  },
  {
    name: 'backup',
    summary: 'Take a base backup (block-level incremental, logically full)',
    usage: 'pgark backup [--full] [--keep] [--json]',
    description:
      'Backs up the data directory and tablespaces of the running cluster through the non-exclusive backup\n' +
      'API. Relation pages unchanged since the newest backup on the same timeline are referenced, not stored\n' +
      'again, so every backup restores on its own. The backup exists once its WAL is archived and all of it is\n' +
      'stored; an interrupted backup is never listed.',
    positionals: { min: 0, max: 0 },
    options: {
      full: { type: 'boolean', description: 'Store every block, not only what changed since the last backup' },
      keep: { type: 'boolean', description: 'Mark the backup to be kept by retention' },
      json: JSON_OPTION,
    },
    usesConfig: true,
    load: () => import('../commands/backup.ts'),
  },
  {
    name: 'expire',
    summary: 'Delete backups, packs and WAL the retention policy no longer needs',
    usage: 'pgark expire [--retain N] [--retain-full N] [--retain-window 14d] [--dry-run] [--json]',
    description:
      'Keeps the newest N backups (retain), the newest N full backups and all after them (retain-full), and\n' +
      'whatever restores to any point of the recent window (retain-window), as a union, plus backups marked\n' +
      'to keep; deletes the other backups, packs no kept backup references, WAL no kept backup needs and\n' +
      'unfinished backups, and (file repositories) temporary files of writers killed over a day ago. Takes the\n' +
      'repository lock: never runs during a backup, restore or verify; wal-push goes on.',
    positionals: { min: 0, max: 0 },
    options: {
      'dry-run': { type: 'boolean', description: 'Show what would be deleted and how many bytes; delete nothing' },
      json: JSON_OPTION,
    },
    usesConfig: true,
    load: () => import('../commands/expire.ts'),
  },
  {
    name: 'keep',
    summary: 'Mark a backup to be kept by retention (or --off to unmark it)',
    usage: 'pgark keep [--off] ID',
    description: 'Adds a marker object (backup.json is never rewritten). expire never deletes a kept backup.',
    positionals: { min: 1, max: 1 },
    options: {
      off: { type: 'boolean', description: 'Remove the mark: retention decides again' },
      json: JSON_OPTION,
    },
    usesConfig: true,
    load: () => import('../commands/keep.ts'),
  },
  {
    name: 'lifecycle',
    summary: 'Print (or --apply) the S3 lifecycle rules that fit the repository',
    usage: 'pgark lifecycle [--apply] [--json]',
    description:
      'Rules that never delete what a backup needs: abort multipart uploads open for a day, remove noncurrent\n' +
      'versions (versioned or Object Lock buckets) after lifecycle-noncurrent-days, and optionally move WAL and\n' +
      'packs to lifecycle-transition-class. No expiration by age: only pgark expire knows what is unreferenced.\n' +
      '--apply replaces this repository\'s rules on the bucket and keeps every other rule.',
    positionals: { min: 0, max: 0 },
    options: {
      apply: { type: 'boolean', description: 'Put the rules on the bucket (PutBucketLifecycleConfiguration)' },
      json: JSON_OPTION,
    },
    usesConfig: true,
    load: () => import('../commands/lifecycle.ts'),
  },
  {
    name: 'restore',
    summary: 'Restore a backup and configure recovery to the latest state or a target',
    usage: 'pgark restore --target-dir DIR [--target-time T | --target-lsn L | --target-xid X | --target-name N | --target-immediate]',
    description:
      'Writes the chosen backup (by default the newest that ended before the target) into an empty directory,\n' +
      'with backup_label, recovery.signal (or standby.signal) and restore_command = pgark wal-fetch. Start\n' +
      'PostgreSQL on the directory and it replays the WAL archive up to the target. Holds a shared repository\n' +
      'lease meanwhile, so expire does not delete what it reads (read-only credentials: a warning, no lease).',
    positionals: { min: 0, max: 0 },
    options: {
      'target-dir': { type: 'string', valueName: 'DIR', description: 'Data directory to restore into (empty or new; default: pgdata)' },
      set: { type: 'string', valueName: 'ID', description: 'Restore this backup instead of choosing one' },
      'target-time': { type: 'string', valueName: 'TIME', description: "Recover to this time, e.g. '2026-11-21 10:00:00+00'" },
      'target-lsn': { type: 'string', valueName: 'LSN', description: 'Recover to this LSN' },
      'target-xid': { type: 'string', valueName: 'XID', description: 'Recover to this transaction id' },
      'target-name': { type: 'string', valueName: 'NAME', description: 'Recover to this restore point (pg_create_restore_point)' },
      'target-immediate': { type: 'boolean', description: 'Stop as soon as the backup is consistent' },
      'target-timeline': { type: 'string', valueName: 'TLI', description: 'Timeline to follow: a number, current or latest (PostgreSQL default: latest)' },
      'target-action': { type: 'string', valueName: 'ACTION', description: 'At the target: pause (default), promote or shutdown' },
      standby: { type: 'boolean', description: 'Write standby.signal: the restored server follows the archive (and primary-conninfo)' },
      'primary-conninfo': { type: 'string', valueName: 'CONNINFO', description: 'With --standby: stream from this primary' },
      'tablespace-map': { type: 'string', multiple: true, valueName: 'OID=DIR', description: 'Restore tablespace OID (or old location) to DIR; repeatable' },
      delta: { type: 'boolean', description: 'Reuse an existing data directory (server stopped): rewrite only blocks that differ' },
      'restore-command': { type: 'string', valueName: 'CMD', description: "restore_command to write (default: this pgark's wal-fetch)" },
      json: JSON_OPTION,
    },
    usesConfig: true,
    load: () => import('../commands/restore.ts'),
  },
  {
    name: 'restore-test',
    summary: 'Restore a backup into a scratch directory, start PostgreSQL on it and check the data',
    usage: 'pgark restore-test [--set ID | --target-time T | ...] [--sql FILE] [--json]',
    description:
      'Restores the newest backup (or the one for a target, as `pgark restore` chooses) and the WAL it needs\n' +
      'into a new directory under restore-test-path, starts PostgreSQL of the backup\'s major there (pg-bin-dir)\n' +
      'as an unprivileged user (restore-test-user when run as root), on a Unix socket only, waits until recovery\n' +
      'ends and the server is promoted, then counts the rows of every table in every database, runs amcheck on\n' +
      'every B-tree index when the extension is available and your --sql file. Reports download and replay\n' +
      'times, stops the server and removes everything, also on failure or Ctrl-C; what a killed run left (its\n' +
      'server, its directory) the next run in the same restore-test-path cleans up. Exit 0 only if all passed.',
    positionals: { min: 0, max: 0 },
    options: {
      set: { type: 'string', valueName: 'ID', description: 'Test this backup instead of choosing one' },
      'target-time': { type: 'string', valueName: 'TIME', description: 'Recover to this time' },
      'target-lsn': { type: 'string', valueName: 'LSN', description: 'Recover to this LSN' },
      'target-xid': { type: 'string', valueName: 'XID', description: 'Recover to this transaction id' },
      'target-name': { type: 'string', valueName: 'NAME', description: 'Recover to this restore point' },
      'target-immediate': { type: 'boolean', description: 'Stop as soon as the backup is consistent' },
      'target-timeline': { type: 'string', valueName: 'TLI', description: 'Timeline to follow: a number, current or latest' },
      sql: { type: 'string', valueName: 'FILE', description: 'SQL to run on the restored server (database pg-database); any error fails the test' },
      json: JSON_OPTION,
    },
    usesConfig: true,
    load: () => import('../commands/restore-test.ts'),
  },
  {
    name: 'wal-push',
    summary: 'Archive a WAL file (archive_command)',
    usage: "archive_command = 'pgark wal-push %p'",
    description:
      'Stores the WAL file at %p (compressed, encrypted, with its SHA-256) and exits 0 only once the store has\n' +
      'confirmed it. A background process uploads, in parallel, the WAL files PostgreSQL has waiting\n' +
      '(archive-push-ahead), so most calls return at once. A file already archived with the same content\n' +
      'succeeds; different content under an archived name is refused and never overwritten.',
    positionals: { min: 1, max: 1 },
    options: {},
    usesConfig: true,
    load: () => import('../commands/wal-push.ts'),
  },
  {
    name: 'wal-push-ahead',
    summary: 'Archive the WAL files waiting in WALDIR/archive_status, in the background (started by wal-push)',
    usage: 'pgark wal-push-ahead WALDIR',
    positionals: { min: 1, max: 1 },
    options: {},
    usesConfig: true,
    hidden: true,
    load: () => import('../commands/wal-push-ahead.ts'),
  },
  {
    name: 'wal-fetch',
    summary: 'Restore a WAL file from the archive (restore_command)',
    usage: "restore_command = 'pgark wal-fetch %f %p'",
    description:
      'Writes WAL file %f to %p, verified. Exits 1, quietly, when the archive does not have it. Prefetches the\n' +
      'next segments in the background (wal-prefetch) so recovery does not wait on the object store.',
    positionals: { min: 2, max: 2 },
    options: {},
    usesConfig: true,
    load: () => import('../commands/wal-fetch.ts'),
  },
  {
    name: 'wal-prefetch',
    summary: 'Download the segments after SEGMENT into the spool (started by wal-fetch)',
    usage: 'pgark wal-prefetch SEGMENT [WALDIR]',
    positionals: { min: 1, max: 2 },
    options: {},
    usesConfig: true,
    hidden: true,
    load: () => import('../commands/wal-prefetch.ts'),
  },
  {
    name: 'wal-verify',
    summary: 'Check that the WAL archive has no gaps and every file is readable',
    usage: 'pgark wal-verify [--quick] [--json]',
    positionals: { min: 0, max: 0 },
    options: { json: JSON_OPTION, quick: { type: 'boolean', description: 'Only list (existence and continuity), do not download' } },
    usesConfig: true,
    load: () => import('../commands/wal-verify.ts'),
  },
  {
    name: 'verify',
    summary: 'Check that every backup and the WAL it needs are stored intact; report what is no longer recoverable',
    usage: 'pgark verify [--quick | --full] [--json]',
    description:
      'Checks every backup: its summary and manifest, that every pack it references exists and is long enough,\n' +
      'and downloads and decodes every referenced blob (checksums); checks the WAL archive for gaps from each\n' +
      "backup's start to the newest segment of its timeline, and decodes every WAL file against its SHA-256.\n" +
      'What it found intact is recorded in the repository (verify/), and the next run reads only packs and WAL\n' +
      'files that are new or changed. Reports each broken backup and the time ranges no longer recoverable;\n' +
      'exits 2 on any problem.',
    positionals: { min: 0, max: 0 },
    options: {
      quick: { type: 'boolean', description: 'Only list and compare sizes (existence, continuity), download no data' },
      full: { type: 'boolean', description: 'Recheck everything, also what earlier runs verified' },
      json: JSON_OPTION,
    },
    usesConfig: true,
    load: () => import('../commands/verify.ts'),
  },
  {
    name: 'info',
    summary: 'Show what the repository holds: cluster, WAL per timeline, streams',
    usage: 'pgark info [--json]',
    positionals: { min: 0, max: 0 },
    options: { json: JSON_OPTION },
    usesConfig: true,
    load: () => import('../commands/info.ts'),
  },
  {
    name: 'put',
    summary: 'Store standard input as a named stream (tar, pg_dump, any pipe)',
    usage: 'tar -c . | pgark put NAME',
    description: 'Reads standard input of any length, compresses, encrypts (when recipients are set) and stores it.\nStreams are never overwritten.',
    positionals: { min: 1, max: 1 },
    options: { json: JSON_OPTION },
    usesConfig: true,
    load: () => import('../commands/put.ts'),
  },
  {
    name: 'get',
    summary: 'Write a stored stream to standard output, verified',
    usage: 'pgark get NAME | tar -x',
    description:
      'Decrypts, decompresses and verifies the SHA-256 of the content. Output is streamed, so a damaged\n' +
      'stream is reported at the end with a non-zero exit: use `set -o pipefail` in scripts.',
    positionals: { min: 1, max: 1 },
    options: {},
    usesConfig: true,
    load: () => import('../commands/get.ts'),
  },
  {
    name: 'ls',
    summary: 'List stored streams with sizes and dates',
    usage: 'pgark ls [--json]',
    positionals: { min: 0, max: 0 },
    options: { json: JSON_OPTION },
    usesConfig: true,
    load: () => import('../commands/ls.ts'),
  },
  {
    name: 'keygen',
    summary: 'Create an age identity (private key file) and print its recipient',
    usage: 'pgark keygen --output FILE',
    description:
      'Writes a new X25519 identity in age format (readable with stock `age -d -i FILE`) with mode 0600 and\n' +
      'prints the public recipient (age1...). Backup hosts need only the recipient; keep the file elsewhere.',
    positionals: { min: 0, max: 0 },
    options: { output: { type: 'string', short: 'o', valueName: 'FILE', description: 'Identity file to create (never overwritten); - for standard output' } },
    usesConfig: false,
    load: () => import('../commands/keygen.ts'),
  },
];

export function findCommand(name: string): CommandSpec | undefined {
  return COMMANDS.find((command) => command.name === name);
}
