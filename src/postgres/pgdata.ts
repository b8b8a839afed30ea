/**
 * Walking a data directory for a base backup: what to copy, what to leave out (the list in
 * PostgreSQL's documentation, "Backing Up the Data Directory", and pg_basebackup's source),
 * which files are relation data (page-level incremental), and tablespaces.
 *
 * Paths are relative to PGDATA and use "/". Tablespace contents appear under their link,
 * pg_tblspc/<oid>/..., as PostgreSQL itself addresses them. The walk is depth-first with names
 * sorted, a total order that `comparePaths` reproduces, so two walks can be merged file by
 * file without holding either in memory.
 */
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';

export type DataEntry =
  | { type: 'dir'; path: string; mode: number }
  | { type: 'file'; path: string; absolute: string; mode: number; size: number; mtimeMs: number; relation: boolean }
  | { type: 'link'; path: string; target: string };

/** Directories whose contents are not backed up (the directory itself is kept, empty). */
const EMPTY_DIRECTORIES = new Set(['pg_wal', 'pg_replslot', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_stat_tmp', 'pg_subtrans']);

/** Files at the top of PGDATA that are never backed up. */
const EXCLUDED_TOP_FILES = new Set([
  'postmaster.pid', 'postmaster.opts', 'backup_label', 'backup_label.old', 'tablespace_map', 'tablespace_map.old',
  'recovery.signal', 'standby.signal', 'postgresql.auto.conf.tmp', 'current_logfiles.tmp',
]);

/** Main-fork relation segment files: <relfilenode> or <relfilenode>.<segment>. */
const RELATION_FILE = /^(?:global|base\/\d+|pg_tblspc\/\d+\/[^/]+\/\d+)\/\d+(?:\.\d+)?$/;
/** Temporary relations: t<backend>_<relfilenode>[_fork][.segment]. */
const TEMP_RELATION = /^t\d+_\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$/;
/** Any fork of a relation, to find unlogged relations (those with an _init fork). */
const RELATION_FORK = /^(\d+)(?:_(fsm|vm|init))?(?:\.\d+)?$/;

export function isRelationDataFile(path: string): boolean {
  return RELATION_FILE.test(path);
}

/** Component-wise comparison: the order of the sorted depth-first walk. */
export function comparePaths(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] !== pb[i]) return pa[i]! < pb[i]! ? -1 : 1;
  }
  return pa.length - pb.length;
}

function isDatabaseDirectory(path: string): boolean {
  return /^(?:global|base\/\d+|pg_tblspc\/\d+\/[^/]+\/\d+)$/.test(path);
}

export async function* walkDataDirectory(pgdata: string, options: { exclude?: (path: string) => boolean } = {}): AsyncGenerator<DataEntry> {
  yield* walkDirectory(pgdata, '', options.exclude ?? (() => false));
}

async function* walkDirectory(absolute: string, relative: string, exclude: (path: string) => boolean): AsyncGenerator<DataEntry> {
  let names: string[];
  try {
    names = (await readdir(absolute)).sort();
  } catch (error) {
    // A directory can vanish while we walk (a dropped database): it is then not needed.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  const top = relative === '';
  const inDatabase = isDatabaseDirectory(relative);
  // Unlogged relations: only their init fork is backed up (PostgreSQL resets them from it).
  const unlogged = new Set<string>();
  if (inDatabase) {
    for (const name of names) {
      const match = RELATION_FORK.exec(name);
      if (match?.[2] === 'init') unlogged.add(match[1]!);
    }
  }

  for (const name of names) {
    const path = top ? name : `${relative}/${name}`;
    const full = join(absolute, name);
    if (top && EXCLUDED_TOP_FILES.has(name)) continue;
    if (name.startsWith('pgsql_tmp') || name === 'pg_internal.init' || name.startsWith('.pgark-')) continue;
    if (inDatabase && TEMP_RELATION.test(name)) continue;
    if (inDatabase) {
      const match = RELATION_FORK.exec(name);
      if (match && unlogged.has(match[1]!) && match[2] !== 'init') continue;
    }
    if (exclude(path)) continue;

    let info;
    try {
      info = await lstat(full);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // dropped meanwhile
      throw error;
    }
    if (info.isSymbolicLink()) {
      const target = await readlink(full);
      if (relative === 'pg_tblspc' || (top && name === 'pg_wal')) {
        // A tablespace (or a pg_wal moved elsewhere): recorded as a link, contents walked.
        yield { type: 'link', path, target };
        const targetInfo = await stat(full).catch(() => undefined);
        if (targetInfo?.isDirectory() && !(top && name === 'pg_wal')) yield* walkDirectory(full, path, exclude);
      }
      // Other symlinks (e.g. a config file linked from /etc) are not PostgreSQL's: skipped.
      continue;
    }
    if (info.isDirectory()) {
      yield { type: 'dir', path, mode: info.mode & 0o7777 };
      if (top && EMPTY_DIRECTORIES.has(name)) {
        if (name === 'pg_wal') yield { type: 'dir', path: 'pg_wal/archive_status', mode: info.mode & 0o7777 };
        continue;
      }
      yield* walkDirectory(full, path, exclude);
    } else if (info.isFile()) {
      yield { type: 'file', path, absolute: full, mode: info.mode & 0o7777, size: info.size, mtimeMs: info.mtimeMs, relation: isRelationDataFile(path) };
    }
  }
}
