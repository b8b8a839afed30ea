/**
 * Helpers shared by the end-to-end CLI tests (streams, stock tools, retries, bad input,
 * secrets, init/check): test data, temp dirs, repository settings for each test server,
 * "one clear error line" assertions and snapshots that prove nothing was written.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pgark, type CliOptions, type CliResult } from './cli.ts';
import type { AzureEnv, S3Env } from './objstores.ts';

export const KiB = 1024;
export const MiB = 1024 * 1024;

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * `size` bytes alternating 256 KiB of compressible text (log-like lines) and 256 KiB of random
 * bytes, so that every codec has both something to compress and something it cannot.
 */
export function mixedData(size: number): Buffer {
  const out = Buffer.alloc(size);
  const block = 256 * KiB;
  let line = 0;
  for (let offset = 0, n = 0; offset < size; offset += block, n++) {
    const end = Math.min(size, offset + block);
    if (n % 2 === 1) {
      randomBytes(end - offset).copy(out, offset);
      continue;
    }
    let at = offset;
    while (at < end) {
      const text = `2024-05-01 12:00:${String(line % 60).padStart(2, '0')} UTC [${1000 + (line % 17)}] LOG:  checkpoint complete: wrote ${line % 977} buffers\n`;
      at += out.write(text, at, end - at, 'latin1');
      line++;
    }
  }
  return out;
}

/** A fresh directory under the system temp dir, removed after the test (or module). */
export function tempDir(hook: { after(fn: () => unknown): void }, prefix = 'pgark-e2e-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  hook.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** At most `n` of the returned function's tasks run at a time (CLI processes on a 2-core box). */
export function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      return await task();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

/** pgark settings (as PGARK_* env) that reach one S3 test server with its credentials. */
export function s3Settings(env: S3Env): Record<string, string> {
  return {
    PGARK_S3_ENDPOINT: env.endpoint,
    PGARK_S3_ACCESS_KEY_ID: env.accessKeyId,
    PGARK_S3_SECRET_ACCESS_KEY: env.secretAccessKey,
    PGARK_S3_REGION: env.region,
  };
}

/** pgark settings (as PGARK_* env) that reach Azurite. */
export function azureSettings(env: AzureEnv): Record<string, string> {
  return { PGARK_AZURE_CONNECTION_STRING: env.connectionString };
}

/** Creates an age identity with `pgark keygen` in `dir`; returns its file and recipient. */
export async function keygen(dir: string, name = 'identity.txt'): Promise<{ file: string; recipient: string; secret: string }> {
  const file = join(dir, name);
  const result = await pgark(['keygen', '--output', file]);
  assert.equal(result.code, 0, `pgark keygen failed: ${result.stderr}`);
  const recipient = result.stdout.toString().trim();
  assert.match(recipient, /^age1[0-9a-z]{58}$/);
  const secret = /^AGE-SECRET-KEY-1[0-9A-Z]+$/m.exec(readFileSync(file, 'utf8'))?.[0];
  assert.ok(secret, 'the identity file holds an AGE-SECRET-KEY-1 line');
  return { file, recipient, secret };
}

/** pgark that must succeed: asserts exit 0 and returns the result. */
export async function pgarkOk(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const result = await pgark(args, options);
  assert.equal(result.code, 0, `pgark ${args.join(' ')} exited ${result.code}:\n${result.stderr}`);
  return result;
}

const STACK_LINE = /^\s+at .+(:\d+:\d+\)?|\(native\)|<anonymous>\)?)$/m;

/**
 * The command failed the way a user should see it: a non-zero exit, exactly one
 * `pgark <cmd>: error: ...` line, at most one hint line, no stack trace, and every other line
 * of stderr a JSON log record. Returns the error line (and hint) for further checks.
 */
export function assertCleanFailure(result: CliResult, command: string | undefined, expected?: RegExp): { error: string; hint: string | undefined } {
  const prefix = command ? `pgark ${command}` : 'pgark';
  const context = `stderr:\n${result.stderr}`;
  assert.notEqual(result.code, 0, `exit status must be non-zero; ${context}`);
  const lines = result.stderr.split('\n').filter((l) => l !== '');
  const errors = lines.filter((l) => l.startsWith(`${prefix}: error: `));
  const hints = lines.filter((l) => l.startsWith(`${prefix}: hint: `));
  assert.equal(errors.length, 1, `exactly one "${prefix}: error:" line; ${context}`);
  assert.ok(hints.length <= 1, `at most one hint line; ${context}`);
  assert.doesNotMatch(result.stderr, STACK_LINE, `no stack trace; ${context}`);
  assert.doesNotMatch(result.stderr, /^pgark[^:]*: internal error:/m, `not an internal error; ${context}`);
  for (const line of lines) {
    if (errors.includes(line) || hints.includes(line)) continue;
    assert.doesNotThrow(() => JSON.parse(line), `unexpected stderr line ${JSON.stringify(line)}; ${context}`);
  }
  if (expected) assert.match(errors[0]!, expected, context);
  return { error: errors[0]!, hint: hints[0] };
}

/** Every file under `root` with its size and SHA-256 (relative paths, sorted); [] if absent. */
export function snapshotTree(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string): void => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        out.push(`${relPath}/`);
        walk(path, relPath);
      } else {
        out.push(`${relPath} ${statSync(path).size} ${sha256(readFileSync(path))}`);
      }
    }
  };
  walk(root, '');
  return out.sort();
}

/** Every line of `text` that contains `needle` (for messages naming a leaked secret). */
export function linesWith(text: string, needle: string): string[] {
  return text.split('\n').filter((line) => line.includes(needle));
}
