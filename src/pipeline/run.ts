/** node:stream's pipeline() over a list of stages built at run time (its typings want tuples). */
import { pipeline } from 'node:stream/promises';

export type Stage =
  | NodeJS.ReadableStream
  | NodeJS.WritableStream
  | NodeJS.ReadWriteStream
  | ((source: AsyncIterable<Buffer>) => AsyncIterable<Buffer> | Promise<unknown>);

type ListPipeline = (...streamsAndOptions: unknown[]) => Promise<void>;

/** Runs the stages; errors in any of them destroy all and reject. Resolves when the last ends. */
export function runPipeline(stages: readonly Stage[], signal?: AbortSignal): Promise<void> {
  const run = pipeline as unknown as ListPipeline;
  return signal ? run(...stages, { signal }) : run(...stages);
}
