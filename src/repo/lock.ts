/**
 * The repository lock: leases, restic-style, because RGW 16 and Swift cannot PUT conditionally
 * (If-None-Match). A holder writes its own uniquely named lease object under locks/, then LISTs
 * locks/: if another live lease conflicts (exclusive vs anything), it removes its own and
 * fails, or waits and tries again. Backups, verify, keep and the readers of packs (restore,
 * restore-test) take a shared lease, expire an exclusive one; wal-push and wal-fetch take none
 * (they only add or read WAL that expire keeps).
 *
 * Liveness without trusting anyone's wall clock: a lease is live while its object's
 * Last-Modified (the store's clock) plus its lease time is later than the Last-Modified of
 * the lease the contender has just written (the store's clock again). A holder refreshes by
 * writing the next generation and deleting the previous one, every quarter of the lease. A
 * holder counts its lease as held for half the lease time after the start of its last
 * successful write, measured on its own monotonic clock: a holder that could not refresh
 * stops before committing (assertHeld) long before a contender may treat it as stale. The
 * only clock assumption: the store's clock and the holders' clocks run at about the same
 * rate (not the same time), and one store serves the repository.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { PgarkError } from '../errors.ts';
import { log } from '../util/log.ts';
import { formatDuration } from '../util/units.ts';
import { leaseKey, LOCKS_PREFIX, parseLeaseKey, type LeaseKey, type LockKind } from './layout.ts';
import type { Repository } from './repository.ts';

export interface LeaseHolder {
  host: string;
  pid: number;
  command: string;
  since: string;
}

export interface LockOptions {
  /** How long a lease lives without a refresh. */
  leaseMs: number;
  /** How long to wait for a conflicting lease to go away (0: fail at once). */
  waitMs: number;
  signal?: AbortSignal;
}

interface ListedLease extends LeaseKey {
  key: string;
  lastModified: Date;
}

async function listLeases(repo: Repository): Promise<ListedLease[]> {
  const leases: ListedLease[] = [];
  for await (const object of repo.storage.list(LOCKS_PREFIX)) {
    const parsed = parseLeaseKey(object.key);
    if (parsed) leases.push({ ...parsed, key: object.key, lastModified: object.lastModified });
  }
  return leases;
}

async function readHolder(repo: Repository, key: string): Promise<LeaseHolder | undefined> {
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of await repo.storage.get(key)) chunks.push(chunk as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as LeaseHolder;
  } catch {
    return undefined; // released meanwhile, or unreadable: named as "unknown"
  }
}

export function describeHolder(holder: LeaseHolder | undefined, kind: LockKind): string {
  if (!holder) return `a ${kind} lock`;
  return `${holder.command} on ${holder.host} (pid ${holder.pid}, since ${holder.since})`;
}

export class RepositoryLock {
  private readonly repo: Repository;
  private readonly key: Omit<LeaseKey, 'generation'>;
  private readonly holder: LeaseHolder;
  private readonly leaseMs: number;
  private generation = 0;
  private confirmedAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private released = false;
  private lost = false;

  private constructor(repo: Repository, kind: LockKind, command: string, leaseMs: number) {
    this.repo = repo;
    this.leaseMs = leaseMs;
    this.key = { holder: randomBytes(8).toString('hex'), kind, leaseSeconds: Math.max(1, Math.ceil(leaseMs / 1000)) };
    this.holder = { host: hostname(), pid: process.pid, command, since: new Date().toISOString() };
  }

  /** Takes the lock or throws LOCKED naming the holder (after waiting up to waitMs). */
  static async acquire(repo: Repository, kind: LockKind, command: string, options: LockOptions): Promise<RepositoryLock> {
    const lock = new RepositoryLock(repo, kind, command, options.leaseMs);
    const deadline = Date.now() + options.waitMs;
    for (let attempt = 0; ; attempt++) {
      const conflict = await lock.tryOnce();
      if (!conflict) break;
      if (Date.now() >= deadline) {
        throw new PgarkError('LOCKED', `the repository is locked by ${conflict.description}${conflict.expiresInMs > 0 ? `, lease ends in ${formatDuration(conflict.expiresInMs)} unless refreshed` : ''}`, {
          hint: kind === 'exclusive'
            ? 'expire waits for running backups, restores and verifies: try again later or set lock-wait; a crashed holder\'s lease expires by itself'
            : `${command} cannot start while expire runs: try again later or set lock-wait; a crashed holder's lease expires by itself`,
        });
      }
      if (attempt === 0) log.info(`waiting for the repository lock held by ${conflict.description}`);
      // Random back-off: two contenders that saw each other must not retry in step.
      await new Promise((resolve) => setTimeout(resolve, 500 + Math.random() * 2000));
      options.signal?.throwIfAborted();
    }
    lock.timer = setInterval(() => {
      lock.refreshing ??= lock.refresh().finally(() => (lock.refreshing = undefined));
    }, Math.max(250, Math.floor(options.leaseMs / 4)));
    lock.timer.unref();
    return lock;
  }

  private currentKey(): string {
    return leaseKey({ ...this.key, generation: this.generation });
  }

  private async write(): Promise<void> {
    const started = performance.now();
    await this.repo.storage.put(this.currentKey(), Buffer.from(JSON.stringify(this.holder) + '\n'), { kind: 'meta' });
    this.confirmedAt = started;
  }

  /** One attempt: write our lease, list, decide. Returns the conflict, or undefined when held. */
  private async tryOnce(): Promise<{ description: string; expiresInMs: number } | undefined> {
    this.generation++;
    await this.write();
    const leases = await listLeases(this.repo);
    const ours = leases.find((l) => l.key === this.currentKey());
    // Our own lease's Last-Modified is the store's "now".
    const now = (ours?.lastModified ?? (await this.repo.storage.head(this.currentKey()))?.lastModified ?? new Date()).getTime();
    const stale: string[] = [];
    let conflict: ListedLease | undefined;
    for (const lease of leases) {
      if (lease.holder === this.key.holder) continue;
      const endsAt = lease.lastModified.getTime() + lease.leaseSeconds * 1000;
      if (endsAt < now) {
        stale.push(lease.key);
        continue;
      }
      const conflicts = this.key.kind === 'exclusive' || lease.kind === 'exclusive';
      if (conflicts && (!conflict || lease.lastModified > conflict.lastModified)) conflict = lease;
    }
    if (stale.length > 0) {
      log.info(`removing ${stale.length} expired lease(s) of crashed or stopped holders`);
      await this.repo.storage.delete(stale).catch(() => {});
    }
    if (!conflict) return undefined;
    await this.repo.storage.delete([this.currentKey()]);
    const holder = await readHolder(this.repo, conflict.key);
    return {
      description: describeHolder(holder, conflict.kind),
      expiresInMs: conflict.lastModified.getTime() + conflict.leaseSeconds * 1000 - now,
    };
  }

  private async refresh(): Promise<void> {
    if (this.released || this.lost) return;
    // A lease that lapsed stays lost: a contender may have taken the lock meanwhile (the
    // process was stopped, or the store unreachable), and a refresh must not hide that.
    if (performance.now() - this.confirmedAt > this.leaseMs / 2) {
      this.lost = true;
      return;
    }
    const previous = this.currentKey();
    this.generation++;
    try {
      await this.write();
    } catch (error) {
      this.generation--; // the previous generation is still ours
      log.warn('could not refresh the repository lock; retrying', { error: (error as Error).message });
      return;
    }
    await this.repo.storage.delete([previous]).catch(() => {}); // expires by itself otherwise
  }

  /** Throws when the lease may have lapsed: the caller must not commit anything. */
  assertHeld(what: string): void {
    const age = performance.now() - this.confirmedAt;
    if (age > this.leaseMs / 2) this.lost = true;
    if (this.released || this.lost) {
      throw new PgarkError('LOCKED', `the repository lock lapsed (not refreshed in time; last refresh ${formatDuration(age)} ago); not ${what}`, {
        hint: 'the object store was unreachable or the process was stalled; another process may have taken the lock meanwhile. Run the command again',
      });
    }
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearInterval(this.timer);
    await this.refreshing?.catch(() => {});
    const ours = [leaseKey({ ...this.key, generation: this.generation }), leaseKey({ ...this.key, generation: this.generation - 1 })];
    await this.repo.storage.delete(ours).catch((error: unknown) => {
      log.warn('could not remove the repository lock; it expires by itself', { error: (error as Error).message });
    });
  }
}

let warnedReadOnly = false;

/**
 * The shared lease of a command that only reads (restore, restore-test): while it is held,
 * expire neither repacks nor deletes the packs, manifests and WAL being read. A reader may have
 * read-only credentials: when the lease cannot be written for lack of permission, it warns (once
 * per process) and goes on without one. Restoring matters more than the lock; the warning says
 * what is at stake. Any other failure (a conflicting expire, an unreachable store) is thrown.
 */
export async function acquireReaderLease(repo: Repository, command: string, options: LockOptions): Promise<RepositoryLock | undefined> {
  try {
    return await RepositoryLock.acquire(repo, 'shared', command, options);
  } catch (error) {
    if (!(error instanceof PgarkError) || error.code !== 'AUTH') throw error;
    if (!warnedReadOnly) {
      warnedReadOnly = true;
      log.warn(`cannot write a lease under ${LOCKS_PREFIX} (read-only credentials?): going on without the repository lock; do not run pgark expire until this ${command} ends`, { error: error.message });
    }
    return undefined;
  }
}
