/**
 * The one interface every storage backend implements. Keys are relative to the repository
 * root ("wal/000000010000000000000001.zst") and always use "/". Drivers do one thing each:
 * retries of whole requests are the SDKs' job (configured from RetryPolicy), resuming a
 * download that broke mid-body and bandwidth limits are wrappers (resilient.ts, throttle.ts).
 */
import type { Readable } from 'node:stream';

/** What an object is for; selects its storage class / access tier. */
export type ObjectKind = 'wal' | 'data' | 'meta';

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: Date;
}

export interface PutOptions {
  kind: ObjectKind;
  /** Aborting stops the upload and removes what it had written (no open multipart uploads). */
  signal?: AbortSignal;
}

/** Inclusive byte range, like HTTP Range. `end` omitted = to the end of the object. */
export interface ByteRange {
  start: number;
  end?: number;
}

export interface Storage {
  /** Human-readable location, safe to print (never contains credentials). */
  readonly description: string;
  /**
   * Stores `body` under `key`. The object becomes visible only complete: a failed or aborted
   * put leaves nothing readable under `key`. Overwrites an existing object (callers that must
   * not overwrite check first).
   */
  put(key: string, body: Readable | Buffer, options: PutOptions): Promise<{ size: number }>;
  /** Reads an object or a byte range of it; throws PgarkError NOT_FOUND when absent. */
  get(key: string, range?: ByteRange): Promise<Readable>;
  /** Metadata of an object, or undefined when absent. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Every object whose key starts with `prefix`, in lexicographic key order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Deletes objects; absent ones are not an error. */
  delete(keys: readonly string[]): Promise<void>;
  /** Releases sockets and timers. */
  close(): Promise<void>;
  /**
   * Aborts multipart uploads under the repository started before `olderThan` (a lost
   * CreateMultipartUpload answer orphans one). Undefined: the backend has nothing to abort.
   */
  abortStaleUploads?(olderThan: Date): Promise<number>;
  /**
   * Temporary files a killed writer left behind (file storage: `.pgark-tmp-*`), last written
   * before `olderThan`; their keys are paths relative to the repository, for reports only.
   * Undefined: the backend leaves no such files.
   */
  staleTempFiles?(olderThan: Date): Promise<ObjectInfo[]>;
  /** Removes temporary files staleTempFiles() returned (absent ones are not an error). */
  removeTempFiles?(keys: readonly string[]): Promise<void>;
}

export interface RetryPolicy {
  /** Attempts per request, including the first. */
  maxAttempts: number;
  /** A request making no progress for this long fails (and is retried). */
  requestTimeoutMs: number;
  connectTimeoutMs: number;
}
