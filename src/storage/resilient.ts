/**
 * Wraps a driver so that a download that breaks in the middle of its body (a reset, a
 * timeout) continues with a ranged request from the byte where it stopped, instead of
 * failing or starting over. Whole-request retries (5xx, SlowDown, refused connections) are
 * done by the SDKs inside the drivers; this covers what they cannot see.
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgarkError } from '../errors.ts';
import { log } from '../util/log.ts';
import { DelegatingStorage } from './delegating.ts';
import type { ByteRange, RetryPolicy, Storage } from './types.ts';

/** Full-jitter exponential backoff: random in [0, min(cap, base·2^attempt)). */
export function backoffMs(attempt: number, baseMs = 100, capMs = 20_000): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** attempt);
}

export class ResilientStorage extends DelegatingStorage {
  private readonly policy: RetryPolicy;

  constructor(inner: Storage, policy: RetryPolicy) {
    super(inner);
    this.policy = policy;
  }

  override async get(key: string, range?: ByteRange): Promise<Readable> {
    const first = await this.inner.get(key, range);
    const inner = this.inner;
    const policy = this.policy;
    async function* resumingBody(): AsyncGenerator<Buffer> {
      let offset = range?.start ?? 0;
      let failures = 0;
      let body: Readable = first;
      for (;;) {
        try {
          for await (const chunk of body) {
            offset += (chunk as Buffer).length;
            failures = 0;
            yield chunk as Buffer;
          }
          return;
        } catch (error) {
          if (error instanceof PgarkError || ++failures >= policy.maxAttempts) throw error;
          log.debug('download interrupted; resuming', { key, offset, error: (error as Error).message });
          await sleep(backoffMs(failures));
          if (range?.end !== undefined && offset > range.end) return;
          body = await inner.get(key, { start: offset, end: range?.end });
        }
      }
    }
    return Readable.from(resumingBody(), { objectMode: false, highWaterMark: 1 << 20 });
  }
}
