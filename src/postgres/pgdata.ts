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
import type { Stats } from 'node:fs';
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

/** Entries of a directory whose lstat runs ahead of the walk. */
const LSTAT_AHEAD = 16;

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

  const wanted: { name: string; path: string; full: string }[] = [];
  for (const name of names) {
    const path = top ? name : `${relative}/${name}`;
    if (top && EXCLUDED_TOP_FILES.has(name)) continue;
    if (name.startsWith('pgsql_tmp') || name === 'pg_internal.init' || name.startsWith('.pgark-')) continue;
    if (inDatabase && TEMP_RELATION.test(name)) continue;
    if (inDatabase) {
      const match = RELATION_FORK.exec(name);
      if (match && unlogged.has(match[1]!) && match[2] !== 'init') continue;
    }
    if (exclude(path)) continue;
    wanted.push({ name, path, full: join(absolute, name) });
  }

  // A few entries are looked at ahead of the one yielded: one lstat at a time was a thread-pool
  // round trip per file on the walk's path (a database has ~300 files even when nothing changed).
  const infos: (Promise<Stats | undefined> | undefined)[] = [];
  for (let i = 0; i < wanted.length; i++) {
    while (infos.length < Math.min(wanted.length, i + LSTAT_AHEAD)) {
      const info = lstat(wanted[infos.length]!.full).catch((error: unknown) => {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // dropped meanwhile
        throw error;
      });
      info.catch(() => {}); // awaited in order below
      infos.push(info);
    }
    const { name, path, full } = wanted[i]!;
    const info = await infos[i];
    infos[i] = undefined;
    if (!info) continue;
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
