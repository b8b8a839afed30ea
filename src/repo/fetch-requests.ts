/**
 * How a wal-fetch call gets its file through the background prefetcher (wal-prefetch) instead of
 * starting a store client of its own: PostgreSQL runs one restore_command per WAL file, and
 * starting the S3 SDK costs ten times the rest of such a call. The file is either in the spool
 * already (prefetched), or the call asks the prefetcher for it (spool/requests/NAME holding a
 * token) and waits until the file appears in spool/fetched/ or the prefetcher answers with that
 * token: "missing" (from a listing started after it read the request — as fresh as the call's
 * own listing would be) or "failed". Whenever the prefetcher cannot answer (not running, died,
 * failed, too slow), the outcome is undefined and the call fetches the file itself.
 */
import { SpoolWatcher, tempSuffix, type Spool } from './spool.ts';

export type SpoolFetchOutcome = 'restored' | 'missing';

/** How long a call waits for the prefetcher before it fetches the file itself. */
const REQUEST_WAIT_MS = 30_000;
/** Longest pause between two looks at the spool; a new file or answer wakes the call at once. */
const POLL_MS = 50;

/**
 * Puts `name` at `target` from the spool, asking the prefetcher for it if needed.
 * `prefetcher()`: whether a prefetcher is running (it may start one); undefined: none may be used.
 */
export async function fetchThroughSpool(
  spool: Spool,
  name: string,
  target: string,
  prefetcher: (() => Promise<boolean>) | undefined,
): Promise<SpoolFetchOutcome | undefined> {
  if (await spool.takeFetched(name, target)) return 'restored';
  if (!prefetcher || !(await prefetcher())) return undefined;
  const token = tempSuffix();
  await spool.writeFetchRequest(name, token);
  const watcher = new SpoolWatcher(spool, ['fetched', 'answers']);
  const deadline = Date.now() + REQUEST_WAIT_MS;
  try {
    for (;;) {
      if (await spool.takeFetched(name, target)) return 'restored';
      const answer = await spool.readFetchAnswer(name);
      if (answer?.token === token) return answer.kind === 'missing' ? 'missing' : undefined;
      if (Date.now() > deadline || !(await prefetcher())) {
        return (await spool.takeFetched(name, target)) ? 'restored' : undefined; // it may have arrived just now
      }
      await watcher.pause(POLL_MS);
    }
  } finally {
    watcher.close();
    await spool.clearFetchRequest(name).catch(() => {});
  }
}
