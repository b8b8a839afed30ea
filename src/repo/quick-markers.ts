/**
 * The files background processes leave in WALDIR/.pgark/ for the `pgark` launcher
 * (src/cli/launcher.sh), which answers most wal-push and wal-fetch calls without starting Node.
 * WALDIR is pg_wal (the directory of archive_command's %p, of restore_command's %p).
 *
 * The pusher (wal-push-ahead):
 *   archived/NAME   NAME is stored (written after the store confirmed it, like the spool's
 *                   marker); content: the launcher's key of the call that started the pusher
 *   failed/NAME     the pusher could not archive NAME: the launcher hands the call to Node,
 *                   which reports the failure recorded in the spool
 *   pusher.pid      the running pusher: the launcher waits for a marker only while it runs
 * The prefetcher (wal-prefetch):
 *   prefetch        while it runs: its key, its spool directory and its PID, one per line. The
 *                   launcher moves SPOOL/fetched/NAME (verified) to %p and records the position
 *                   in SPOOL/fetch-position, as a call of the Node fast path does.
 *
 * They are written only by a process started through the launcher (which passes its key in
 * PGARK_INTERNAL_QUICK_KEY), and they are a shortcut only: the spool stays the record wal-push
 * and wal-fetch read. No backup copies the content of pg_wal (WAL-G keeps its prefetched
 * segments in pg_wal/.wal-g the same way), and PostgreSQL ignores a directory it does not know
 * there.
 */
import { join } from 'node:path';
import { fs } from '../util/node-fs.ts';
import { tempSuffix } from './spool.ts';

/** The environment variable through which the launcher passes its key to Node. */
export const QUICK_KEY_ENV = 'PGARK_INTERNAL_QUICK_KEY';

/** The launcher's key of this process's invocation; undefined when it was not started through the launcher. */
function quickKey(): string | undefined {
  const key = process.env[QUICK_KEY_ENV];
  return key && !key.includes('\n') ? key : undefined;
}

/**
 * A marker that cannot be written only costs the next call Node's start-up: never a reason to
 * fail (or report as failed) anything.
 */
function shortcut(write: () => void): void {
  try {
    write();
  } catch {
    // the launcher finds no marker and lets Node answer
  }
}

function writeAtomic(path: string, content: string): void {
  const temp = `${path}.tmp-${tempSuffix()}`;
  fs.writeFileSync(temp, content, { mode: 0o600 });
  fs.renameSync(temp, path);
}

/** Removes `path` if it still holds `content` (a newer process may have replaced it). */
function removeIfUnchanged(path: string, content: string): void {
  try {
    if (fs.readFileSync(path, 'utf8') === content) fs.rmSync(path);
  } catch {
    // gone already
  }
}

/** The pusher's markers. */
export class QuickPush {
  private readonly directory: string;
  private readonly key: string;

  private constructor(walDirectory: string, key: string) {
    this.directory = join(walDirectory, '.pgark');
    this.key = key;
  }

  /** The markers of a pusher for `walDirectory`; undefined when it was not started through the launcher. */
  static forPusher(walDirectory: string): QuickPush | undefined {
    const key = quickKey();
    return key ? new QuickPush(walDirectory, key) : undefined;
  }

  /** Announces the running pusher (and makes the directories). */
  start(): void {
    shortcut(() => {
      fs.mkdirSync(join(this.directory, 'archived'), { recursive: true, mode: 0o700 });
      fs.mkdirSync(join(this.directory, 'failed'), { recursive: true, mode: 0o700 });
      writeAtomic(join(this.directory, 'pusher.pid'), `${process.pid}\n`);
    });
  }

  /** Removes the announcement, unless a newer pusher has replaced it. */
  stop(): void {
    removeIfUnchanged(join(this.directory, 'pusher.pid'), `${process.pid}\n`);
  }

  /** Call only once the store has confirmed `name` (and the spool's marker is written). */
  markArchived(name: string): void {
    shortcut(() => {
      writeAtomic(join(this.directory, 'archived', name), `${this.key}\n`);
      fs.rmSync(join(this.directory, 'failed', name), { force: true });
    });
  }

  markFailed(name: string): void {
    shortcut(() => writeAtomic(join(this.directory, 'failed', name), ''));
  }

  /** Drops the marker and failure flag of a file PostgreSQL no longer waits for. */
  forget(name: string): void {
    shortcut(() => {
      fs.rmSync(join(this.directory, 'archived', name), { force: true });
      fs.rmSync(join(this.directory, 'failed', name), { force: true });
    });
  }

  /** Drops the files of WAL files PostgreSQL no longer waits for (not in `ready`). */
  removeStale(ready: ReadonlySet<string>): void {
    for (const sub of ['archived', 'failed']) {
      shortcut(() => {
        for (const entry of fs.readdirSync(join(this.directory, sub))) {
          if (!ready.has(entry.split('.tmp-')[0]!)) fs.rmSync(join(this.directory, sub, entry), { force: true });
        }
      });
    }
  }
}

/** The prefetcher's announcement: the launcher serves its prefetched segments while it runs. */
export class QuickPrefetch {
  private readonly path: string;
  private readonly content: string;

  private constructor(walDirectory: string, key: string, spoolRoot: string) {
    this.path = join(walDirectory, '.pgark', 'prefetch');
    this.content = `${key}\n${spoolRoot}\n${process.pid}\n`;
  }

  /** For a prefetcher started through the launcher by a call for WAL in `walDirectory`; else undefined. */
  static forPrefetcher(walDirectory: string | undefined, spoolRoot: string): QuickPrefetch | undefined {
    const key = quickKey();
    return key && walDirectory && !spoolRoot.includes('\n') ? new QuickPrefetch(walDirectory, key, spoolRoot) : undefined;
  }

  start(): void {
    shortcut(() => {
      fs.mkdirSync(join(this.path, '..'), { recursive: true, mode: 0o700 });
      writeAtomic(this.path, this.content);
    });
  }

  stop(): void {
    removeIfUnchanged(this.path, this.content);
  }
}
