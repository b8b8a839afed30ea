/**
 * Resuming interrupted backups (docs/FORMAT.md, "Checkpoints and resume").
 *
 * A backup writes `start.json` when it starts and, every backup-checkpoint-interval, a
 * checkpoint: it waits until every pack holding the blobs of the files finished so far is
 * stored, then writes those files' manifest lines as `partial-NNNNNN.jsonl`. Checkpoints are
 * successive pieces of the manifest, in walk order. A backup killed midway leaves them behind
 * (and no backup.json: it is not a backup).
 *
 * The next backup uses the newest such interrupted backup, if it is newer than the newest
 * complete one (same system, same timeline), as a second base: a file it checkpointed is
 * compared with that checkpoint's entry exactly as with a base backup's — relation pages whose
 * LSN predates the interrupted backup's start LSN are unchanged since it read them, so they are
 * referenced; other files are compared by SHA-256. So nothing it stored is uploaded again.
 */
import { z } from 'zod';
import { PgarkError } from '../errors.ts';
import { decodeBuffer, encodeBuffer, isEncryptedKey, suffixOf, type WriteFormat } from '../pipeline/object-format.ts';
import { log } from '../util/log.ts';
import type { ManifestEntry } from './backup-manifest.ts';
import { BACKUPS_PREFIX, backupCheckpointKey, backupIdOfKey, backupIdOfSummaryKey, backupStartKey, parseBackupCheckpointKey } from './layout.ts';
import type { PackWriter } from './packs.ts';
import type { Repository } from './repository.ts';

const BackupStartSchema = z.object({
  format: z.literal(1),
  id: z.string(),
  systemIdentifier: z.string(),
  timeline: z.number().int(),
  startLsn: z.string(),
  startedAt: z.string(),
});
export type BackupStart = z.infer<typeof BackupStartSchema>;

type FileEntry = Extract<ManifestEntry, { t: 'f' }>;

export async function writeBackupStart(repo: Repository, start: BackupStart): Promise<void> {
  await repo.storage.put(backupStartKey(start.id), Buffer.from(JSON.stringify(start) + '\n'), { kind: 'meta' });
}

/** An interrupted backup that left checkpoints: what the next backup can resume from. */
export interface ResumableBackup {
  start: BackupStart;
  /** Checkpoint keys in order. */
  checkpoints: string[];
}

/**
 * The newest interrupted backup newer than `newerThan` (the newest complete backup's id), if
 * it belongs to this system and timeline and left at least one checkpoint.
 */
export async function findResumableBackup(repo: Repository, opts: { newerThan: string | undefined; systemIdentifier: string; timeline: number }): Promise<ResumableBackup | undefined> {
  const complete = new Set<string>();
  const started = new Set<string>();
  const checkpoints = new Map<string, { n: number; key: string }[]>();
  for await (const object of repo.storage.list(BACKUPS_PREFIX)) {
    const summaryOf = backupIdOfSummaryKey(object.key);
    if (summaryOf) complete.add(summaryOf);
    if (object.key.endsWith('/start.json')) {
      const id = backupIdOfKey(object.key);
      if (id) started.add(id);
    }
    const checkpoint = parseBackupCheckpointKey(object.key);
    if (checkpoint) {
      const list = checkpoints.get(checkpoint.id) ?? [];
      list.push({ n: checkpoint.n, key: object.key });
      checkpoints.set(checkpoint.id, list);
    }
  }
  // Ids sort by start time (same-second ids are bumped, full and incremental alike).
  const candidates = [...started].filter((id) => !complete.has(id) && checkpoints.has(id) && (opts.newerThan === undefined || id.slice(0, 15) > opts.newerThan.slice(0, 15)));
  candidates.sort();
  const id = candidates.at(-1);
  if (id === undefined) return undefined;
  const start = await readBackupStart(repo, id);
  if (start.systemIdentifier !== opts.systemIdentifier || start.timeline !== opts.timeline) return undefined;
  const list = checkpoints.get(id)!.sort((a, b) => a.n - b.n);
  // Only an unbroken run 1, 2, 3, ... is a prefix of the walk (a gap cannot happen, but be sure).
  const keys: string[] = [];
  for (const [i, checkpoint] of list.entries()) {
    if (checkpoint.n !== i + 1) break;
    keys.push(checkpoint.key);
  }
  return keys.length > 0 ? { start, checkpoints: keys } : undefined;
}

async function readBackupStart(repo: Repository, id: string): Promise<BackupStart> {
  const chunks: Buffer[] = [];
  for await (const chunk of await repo.storage.get(backupStartKey(id))) chunks.push(chunk as Buffer);
  let parsed;
  try {
    parsed = BackupStartSchema.safeParse(JSON.parse(Buffer.concat(chunks).toString('utf8')));
  } catch {
    parsed = undefined;
  }
  if (!parsed?.success || parsed.data.id !== id) throw new PgarkError('INTEGRITY', `the start record of interrupted backup ${id} is malformed`, { hint: 'run pgark backup --full to ignore it' });
  return parsed.data;
}

/** The file entries of an interrupted backup's checkpoints, in walk order. */
export async function* readCheckpointEntries(repo: Repository, resumable: ResumableBackup): AsyncGenerator<FileEntry> {
  let identities: readonly string[] | undefined;
  for (const key of resumable.checkpoints) {
    if (isEncryptedKey(key)) identities ??= await repo.identities(`interrupted backup ${resumable.start.id}`);
    const content = await decodeBuffer(await repo.storage.get(key), key, identities ?? []);
    for (const line of content.toString('utf8').split('\n')) {
      if (line === '') continue;
      let entry: ManifestEntry;
      try {
        entry = JSON.parse(line) as ManifestEntry;
      } catch {
        throw new PgarkError('INTEGRITY', `checkpoint ${key} of interrupted backup ${resumable.start.id} has a malformed line`, { hint: 'run pgark backup --full to ignore it' });
      }
      if (entry.t === 'f') yield entry;
    }
  }
}

/**
 * Records what a running backup has stored: call `add` with each file's manifest line as it
 * is written, and `maybeCheckpoint` after; every `intervalMs` it makes the entries so far
 * durable (their packs stored) and writes them as the next checkpoint; the walk waits for it,
 * so that a backup held back by its uploads still records its progress every interval. One due
 * earlier, because the lines held reached CHECKPOINT_MAX_BYTES (a bound on memory), is written
 * in the background, one at a time: a small incremental's only checkpoint, made for the 4 MB
 * line of a fragmented 1 GiB segment, stopped its walk for ~50 ms. `finish` waits for it.
 */
/** The most manifest text a running backup holds for its next checkpoint (100,000 small files write ~10 MB of it; held as strings, that was a tenth of the peak RSS). */
const CHECKPOINT_MAX_BYTES = 2 * 1024 * 1024;

export class CheckpointWriter {
  private readonly repo: Repository;
  private readonly id: string;
  private readonly format: WriteFormat;
  private readonly packs: PackWriter;
  private readonly intervalMs: number;
  /** Manifest lines of the files stored since the last checkpoint, in the pieces ManifestWriter wrote. */
  private lines: Buffer[] = [];
  private bytes = 0;
  private last = Date.now();
  private written = 0;
  /** The checkpoint being written, if any. */
  private running: Promise<void> | undefined;
  private failure: { error: unknown } | undefined;

  constructor(repo: Repository, id: string, format: WriteFormat, packs: PackWriter, intervalMs: number) {
    this.repo = repo;
    this.id = id;
    this.format = format;
    this.packs = packs;
    this.intervalMs = intervalMs;
  }

  /** `line`: a file entry's manifest line, as ManifestWriter wrote it (a fragmented file's runs to MiB). */
  add(line: readonly Buffer[]): void {
    if (this.intervalMs <= 0) return;
    for (const piece of line) {
      this.lines.push(piece);
      this.bytes += piece.length;
    }
  }

  /** Checkpoints when the interval has passed, or earlier when the lines held reach
   * CHECKPOINT_MAX_BYTES: memory must not grow with the number of files (100,000s of relations). */
  async maybeCheckpoint(): Promise<void> {
    this.throwIfFailed();
    if (this.intervalMs <= 0 || this.lines.length === 0) return;
    const due = Date.now() - this.last >= this.intervalMs;
    if (!due && this.bytes < CHECKPOINT_MAX_BYTES) return;
    if (this.running) {
      // The lines held stay bounded: past twice the limit the walk waits for the running one.
      if (!due && this.bytes < 2 * CHECKPOINT_MAX_BYTES) return;
      await this.running;
      this.throwIfFailed();
    }
    const content = Buffer.concat(this.lines);
    this.lines = [];
    this.bytes = 0;
    const number = ++this.written;
    // Every blob these entries reference was added to a pack before this call: the flush (which
    // seals the pack being filled now) makes them all stored before the checkpoint names them.
    const writing = (async () => {
      await this.packs.flush();
      const key = backupCheckpointKey(this.id, number, suffixOf(this.format));
      await this.repo.storage.put(key, await encodeBuffer(content, this.format), { kind: 'meta' });
      this.last = Date.now();
      log.debug(`backup ${this.id}: checkpoint ${number}`, { bytes: content.length });
    })();
    if (due) {
      await writing;
      return;
    }
    this.running = writing.catch((error: unknown) => {
      this.failure ??= { error };
    }).finally(() => {
      this.running = undefined;
    });
  }

  /** Waits for the checkpoint being written; throws if one failed. */
  async finish(): Promise<void> {
    await this.running;
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }
}

/**
 * After a backup completed: its own start record and checkpoints are no longer needed (its
 * manifest references the same packs), nor is anything the interrupted backup it resumed left
 * under its directory (records, an unfinished manifest's temporary object). Best effort:
 * leftovers are harmless and `pgark expire` removes them.
 */
export async function removeResumeRecords(repo: Repository, own: string, resumed: string | undefined): Promise<void> {
  const targets: [string, (key: string) => boolean][] = [[own, (key) => key === backupStartKey(own) || parseBackupCheckpointKey(key) !== undefined]];
  if (resumed !== undefined) targets.push([resumed, () => true]);
  for (const [id, wanted] of targets) {
    try {
      const keys: string[] = [];
      for await (const object of repo.storage.list(`${BACKUPS_PREFIX}${id}/`)) if (wanted(object.key)) keys.push(object.key);
      if (keys.length > 0) await repo.storage.delete(keys);
    } catch (error) {
      log.debug(`could not remove the resume records of backup ${id}`, { error: (error as Error).message });
    }
  }
}
