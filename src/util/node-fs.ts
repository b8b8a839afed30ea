/**
 * node:fs for the modules that the per-WAL-file fast path (src/cli/fast-path.ts) loads.
 * PostgreSQL starts one pgark per WAL file, and most of those calls only read a marker or
 * rename a file. An ES `import … from 'node:fs'` (or 'node:fs/promises') builds the module
 * namespace from every export, which loads fs.promises and with it streams, readline and the
 * file watchers: about 7 ms of CPU, a fifth of such a call. process.getBuiltinModule hands out
 * the CommonJS object as it is, so `fs.promises` (and fs.watch's machinery) load only when used.
 * Small spool files are read and written synchronously through it: they are a few bytes, and
 * the synchronous calls do not start libuv's thread pool either.
 */
export const fs: typeof import('node:fs') = process.getBuiltinModule('node:fs');

/** The error code of a failed fs call ('ENOENT', …). */
export function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}
