/**
 * Waiting for a directory to change: pause(ms) ends after `ms`, or at once when a file appears in,
 * is renamed in or leaves one of the watched directories (inotify through fs.watch; where that is
 * unavailable, the pause simply runs its length: polling, and `watching` is false). A caller that
 * looks at the directories first and then pauses passes the `changes` count it saw before
 * looking: the pause then also ends at once for a change made while it looked.
 */
import type { FSWatcher } from 'node:fs';
import { fs } from './node-fs.ts';

export class DirectoryWatcher {
  private readonly watchers: FSWatcher[] = [];
  private readonly directoryCount: number;
  /** Changes seen so far. */
  changes = 0;
  private timer: NodeJS.Timeout | undefined;
  private resolvePause: (() => void) | undefined;

  constructor(directories: readonly string[]) {
    this.directoryCount = directories.length;
    for (const directory of directories) {
      try {
        const watcher = fs.watch(directory, { persistent: false }, () => {
          this.changes++;
          this.endPause();
        });
        watcher.on('error', () => {});
        this.watchers.push(watcher);
      } catch {
        // no inotify: polling only
      }
    }
  }

  /** Whether every directory is watched (a change ends a pause at once). */
  get watching(): boolean {
    return this.watchers.length === this.directoryCount;
  }

  /** Ends after `ms` or at a change (one after `seenChanges`, when given). Ends a pause still running. */
  pause(ms: number, seenChanges?: number): Promise<void> {
    this.endPause(); // one its caller stopped waiting for (Promise.race)
    if (seenChanges !== undefined && seenChanges !== this.changes) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.resolvePause = resolve;
      this.timer = setTimeout(() => this.endPause(), ms);
    });
  }

  private endPause(): void {
    clearTimeout(this.timer);
    const resolve = this.resolvePause;
    this.timer = undefined;
    this.resolvePause = undefined;
    resolve?.();
  }

  close(): void {
    this.endPause();
    for (const watcher of this.watchers) watcher.close();
  }
}
