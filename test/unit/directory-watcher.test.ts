// DirectoryWatcher (src/util/directory-watcher.ts): the background pusher waits on it for new WAL
// instead of polling, so a change it misses would delay archiving by its safety scan interval.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DirectoryWatcher } from '../../src/util/directory-watcher.ts';

const LONG_MS = 20_000;

async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

test('a pause ends at a change in a watched directory, and at once for a change made since the caller looked', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'pgark-watch-'));
  const watcher = new DirectoryWatcher([directory]);
  try {
    assert.equal(watcher.watching, true);
    // a file appearing while the pause runs
    const pause = watcher.pause(LONG_MS);
    writeFileSync(join(directory, 'a.ready'), '');
    await within(5_000, pause, 'pause ended by a new file');

    // a change between "look" and "pause": the pause given the count seen before looking ends at once
    const seen = watcher.changes;
    writeFileSync(join(directory, 'b.ready'), '');
    await within(5_000, (async () => { while (watcher.changes === seen) await new Promise((resolve) => setTimeout(resolve, 10)); })(), 'change counted');
    await within(1_000, watcher.pause(LONG_MS, seen), 'pause after a change made while looking');

    // a pause its caller stopped waiting for (Promise.race) does not take the next change away
    void watcher.pause(LONG_MS);
    const next = watcher.pause(LONG_MS, watcher.changes);
    writeFileSync(join(directory, 'c.ready'), '');
    await within(5_000, next, 'pause after an abandoned one');

    // without a change, the pause runs its length
    const started = Date.now();
    await watcher.pause(200, watcher.changes);
    assert.ok(Date.now() - started >= 150);
  } finally {
    watcher.close();
    rmSync(directory, { recursive: true, force: true });
  }
});

test('a directory that cannot be watched: not watching, pauses run their length (polling)', async () => {
  const watcher = new DirectoryWatcher([join(tmpdir(), 'pgark-no-such-directory-here', 'archive_status')]);
  try {
    assert.equal(watcher.watching, false);
    const started = Date.now();
    await watcher.pause(100);
    assert.ok(Date.now() - started >= 80);
  } finally {
    watcher.close();
  }
});
