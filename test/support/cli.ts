/**
 * Runs the built `pgark` executable (dist/pgark.mjs, as users and PostgreSQL run it) with the
 * project's Node, a controlled environment and optional standard input.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PGARK_BIN = join(PROJECT_ROOT, 'dist', 'pgark.mjs');
export const NODE_BIN = join(PROJECT_ROOT, 'node_modules', '.bin', 'node');

export interface CliResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  /** Replaces the inherited environment entirely (then `env` is added on top). */
  cleanEnv?: boolean;
  stdin?: Buffer | Readable | string;
  cwd?: string;
  timeoutMs?: number;
  /** Where stdout goes when it should not be collected (large outputs). */
  stdoutSink?: NodeJS.WritableStream;
}

/** Environment that never reaches a real cloud: no IMDS probing (it would leave loopback). */
export const SAFE_BASE_ENV: Record<string, string> = {
  AWS_EC2_METADATA_DISABLED: 'true',
  PGARK_LOG_FORMAT: 'json',
};

export function pgark(args: string[], options: CliOptions = {}): Promise<CliResult> {
  if (!existsSync(PGARK_BIN)) throw new Error(`${PGARK_BIN} is missing: run \`node scripts/build.mjs\` (npm test does)`);
  const baseEnv: Record<string, string | undefined> = options.cleanEnv ? { PATH: process.env.PATH, HOME: process.env.HOME } : { ...process.env };
  // A developer's own PGARK_* settings must not leak into tests.
  for (const key of Object.keys(baseEnv)) if (key.startsWith('PGARK_') && !key.startsWith('PGARK_TEST_')) delete baseEnv[key];
  const env = { ...baseEnv, ...SAFE_BASE_ENV, ...options.env };
  for (const [key, value] of Object.entries(env)) if (value === undefined) delete env[key];

  return new Promise((resolve, reject) => {
    const child = spawn(NODE_BIN, [PGARK_BIN, ...args], { env: env as NodeJS.ProcessEnv, cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    if (options.stdoutSink) child.stdout.pipe(options.stdoutSink);
    else child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdin.on('error', () => {}); // the command may exit before reading all input
    if (options.stdin === undefined) child.stdin.end();
    else if (options.stdin instanceof Readable) options.stdin.pipe(child.stdin);
    else child.stdin.end(options.stdin);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(stdout), stderr });
    });
  });
}

/** The non-JSON error lines of a failed command (the "error:" and "hint:" lines). */
export function errorLines(result: CliResult): string[] {
  return result.stderr.split('\n').filter((line) => /^pgark[^:]*: (error|hint|internal error):/.test(line));
}
