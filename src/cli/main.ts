/**
 * Entry point of the `pgark` executable. Kept tiny: PostgreSQL runs `pgark wal-push` once per
 * WAL segment, so `--version` and every command must start fast. Everything else is imported
 * on demand.
 */
import { applyMemoryLimits } from './memory-limits.ts';

declare const PGARK_VERSION: string | undefined;
const version = typeof PGARK_VERSION === 'string' ? PGARK_VERSION : 'dev';

const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V' || argv[0] === 'version')) {
  process.stdout.write(`pgark ${version}\n`);
} else {
  // backup, restore and the like: once more with memory settings only a new process can have.
  applyMemoryLimits(argv[0]);
  // V8's code cache on disk (Node >= 22.1) makes loading the lazily imported chunks — the
  // AWS SDK above all — several times faster from the second run on.
  // (process.getBuiltinModule, not an import: the ES namespace of node:module loads source-map
  // support and more, a few ms of every call.)
  process.getBuiltinModule('node:module').enableCompileCache?.();
  // Most wal-push / wal-fetch calls only look at the spool: they do not need the rest.
  let code: number | undefined;
  if (argv[0] === 'wal-push' || argv[0] === 'wal-fetch') {
    const { runFastPath } = await import('./fast-path.ts');
    code = await runFastPath(argv);
  }
  if (code === undefined) {
    const { runCli } = await import('./run.ts');
    code = await runCli(argv);
  }
  process.exitCode = code;
}
