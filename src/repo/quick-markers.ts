/**
 * The files the background pusher leaves in WALDIR/.pgark/ for the `pgark` launcher
 * (src/cli/launcher.sh), which answers most wal-push calls without starting Node:
 *
 *   archived/NAME   NAME is stored (written after the store confirmed it, like the spool's
 *                   marker); content: the launcher's key of the call that started the pusher
 *   failed/NAME     the pusher could not archive NAME: the launcher hands the call to Node,
 *                   which reports the failure recorded in the spool
 *   pusher.pid      the running pusher: the launcher waits for a marker only while it runs
 *
 * They are written only by a pusher started through the launcher (which passes its key in
 * PGARK_INTERNAL_QUICK_KEY), and they are a shortcut only: the spool stays the record
 * wal-push's Node paths read. WALDIR is pg_wal, whose content no backup copies (as WAL-G keeps
 * its prefetched segments in pg_wal/.wal-g); PostgreSQL ignores a directory it does not know
 * there.
 */
import { join } from 'node:path';
import { fs } from '../util/node-fs.ts';
import { tempSuffix } from './spool.ts';

/** The environment variable through which the launcher passes its key to Node. */
export const QUICK_KEY_ENV = 'PGARK_INTERNAL_QUICK_KEY';

export class QuickMarkers {
  private readonly directory: string;
  private readonly key: string;

  private constructor(walDirectory: string, key: string) {
    this.directory = join(walDirectory, '.pgark');
    this.key = key;
  }

  /** The markers of a pusher for `walDirectory`; undefined when it was not started through the launcher. */
  static forPusher(walDirectory: string): QuickMarkers | undefined {
    const key = process.env[QUICK_KEY_ENV];
    return key && !key.includes('\n') ? new QuickMarkers(walDirectory, key) : undefined;
  }

  /** Announces the running pusher (and makes the directories). */
  start(): void {
    this.shortcut(() => {
      fs.mkdirSync(join(this.directory, 'archived'), { recursive: true, mode: 0o700 });
      fs.mkdirSync(join(this.directory, 'failed'), { recursive: true, mode: 0o700 });
      this.writeAtomic('pusher.pid', `${process.pid}\n`);
    });
  }

  /** Removes the announcement, unless a newer pusher has replaced it. */
  stop(): void {
    try {
      if (fs.readFileSync(join(this.directory, 'pusher.pid'), 'utf8') === `${process.pid}\n`) fs.rmSync(join(this.directory, 'pusher.pid'));
    } catch {
      // gone already
    }
  }

  /** Call only once the store has confirmed `name` (and the spool's marker is written). */
  markArchived(name: string): void {
    this.shortcut(() => {
      this.writeAtomic(join('archived', name), `${this.key}\n`);
      fs.rmSync(join(this.directory, 'failed', name), { force: true });
    });
  }

  markFailed(name: string): void {
    this.shortcut(() => this.writeAtomic(join('failed', name), ''));
  }

  /**
   * A marker that cannot be written only costs the next call Node's start-up: never a reason
   * to fail (or report as failed) a file that is archived.
   */
  private shortcut(write: () => void): void {
    try {
      write();
    } catch {
      // the launcher finds no marker and lets Node answer
    }
  }

  /** Drops the marker and failure flag of a file PostgreSQL no longer waits for. */
  forget(name: string): void {
    this.shortcut(() => {
      fs.rmSync(join(this.directory, 'archived', name), { force: true });
      fs.rmSync(join(this.directory, 'failed', name), { force: true });
    });
  }

  /** Drops the files of WAL files PostgreSQL no longer waits for (not in `ready`). */
  removeStale(ready: ReadonlySet<string>): void {
    for (const sub of ['archived', 'failed']) {
      let entries: string[];
      try {
        entries = fs.readdirSync(join(this.directory, sub));
      } catch {
        continue;
      }
      for (const entry of entries) {
        if (!ready.has(entry.split('.tmp-')[0]!)) fs.rmSync(join(this.directory, sub, entry), { force: true });
      }
    }
  }

  private writeAtomic(relativePath: string, content: string): void {
    const path = join(this.directory, relativePath);
    const temp = `${path}.tmp-${tempSuffix()}`;
    fs.writeFileSync(temp, content, { mode: 0o600 });
    fs.renameSync(temp, path);
  }
}
