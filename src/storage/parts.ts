/**
 * Cutting a stream of unknown length into upload parts (S3 multipart parts, Azure blocks).
 *
 * Object stores cap the number of parts (S3: 10,000), so a fixed part size caps the object
 * size: 8 MiB parts stop at 78 GiB — the "5 GB trap" of piping into `aws s3 cp -`. Here the
 * part size doubles every PARTS_PER_SIZE_STEP parts (capped at the store's largest part), so
 * small streams use small parts and 10,000 parts of 5 MiB and up always reach 5 TiB:
 * 900 parts × 5 MiB × (1 + 2 + … + 512) = 4.5 TiB in 8,100 parts, then 1,900 parts of 5 GiB.
 */
import type { Readable } from 'node:stream';

export const PARTS_PER_SIZE_STEP = 900;

export interface PartSchedule {
  initialPartSize: number;
  maxPartSize: number;
  maxParts: number;
}

export function partSizeFor(index: number, schedule: PartSchedule): number {
  const doublings = Math.floor(index / PARTS_PER_SIZE_STEP);
  return Math.min(schedule.maxPartSize, schedule.initialPartSize * 2 ** doublings);
}

/** The largest object `schedule` can upload. */
export function capacityOf(schedule: PartSchedule): number {
  let total = 0;
  for (let index = 0; index < schedule.maxParts; index++) total += partSizeFor(index, schedule);
  return total;
}

/**
 * Yields the parts of `source` in order, each exactly partSizeFor(index) bytes except the last
 * (which may be shorter, but is never empty unless the whole stream is empty: then one empty
 * part is yielded, so callers always have at least one part). Holds at most one part in memory.
 */
export async function* readParts(source: Readable, sizeOf: (index: number) => number): AsyncGenerator<Buffer> {
  let index = 0;
  let target = sizeOf(0);
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let yielded = false;

  for await (const raw of source) {
    let chunk: Buffer = Buffer.isBuffer(raw) ? raw : Buffer.from(raw as Uint8Array);
    while (chunk.length > 0) {
      const take = Math.min(chunk.length, target - pendingBytes);
      pending.push(take === chunk.length ? chunk : chunk.subarray(0, take));
      pendingBytes += take;
      chunk = chunk.subarray(take);
      if (pendingBytes === target) {
        yield Buffer.concat(pending, pendingBytes);
        yielded = true;
        pending = [];
        pendingBytes = 0;
        target = sizeOf(++index);
      }
    }
  }
  if (pendingBytes > 0 || !yielded) yield Buffer.concat(pending, pendingBytes);
}

/**
 * Runs `task` over the parts with at most `concurrency` in flight, but never more than
 * `maxBytesInFlight` bytes (beyond one part) so memory stays bounded as parts grow.
 * Resolves with the task results in part order; the first failure rejects (after the
 * in-flight tasks settle, so the caller can clean up knowing nothing is still running).
 */
export async function forEachPart<T>(
  parts: AsyncIterable<Buffer>,
  options: { concurrency: number; maxBytesInFlight: number; signal?: AbortSignal },
  task: (part: Buffer, index: number) => Promise<T>,
): Promise<T[]> {
  const results: T[] = [];
  const inFlight = new Map<number, Promise<void>>();
  let bytesInFlight = 0;
  let failure: { error: unknown } | undefined;
  let index = 0;

  const launch = (part: Buffer, partIndex: number): void => {
    bytesInFlight += part.length;
    const promise = task(part, partIndex)
      .then((result) => { results[partIndex] = result; })
      .catch((error: unknown) => { failure ??= { error }; })
      .finally(() => { bytesInFlight -= part.length; inFlight.delete(partIndex); });
    inFlight.set(partIndex, promise);
  };

  try {
    for await (const part of parts) {
      options.signal?.throwIfAborted();
      while (inFlight.size > 0 && (inFlight.size >= options.concurrency || bytesInFlight + part.length > options.maxBytesInFlight)) {
        await Promise.race(inFlight.values());
        if (failure) break;
      }
      if (failure) break;
      launch(part, index++);
    }
  } catch (error) {
    failure ??= { error };
  }
  await Promise.all(inFlight.values());
  if (failure) throw failure.error;
  return results;
}
