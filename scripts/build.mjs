// Bundles the CLI into dist/ with esbuild. Why bundle: PostgreSQL starts `pgark wal-push`
// once per WAL segment, so start-up time matters. One ESM entry plus lazily imported chunks
// (code splitting) means `pgark --version` parses almost nothing, and a command loads only
// the storage driver it uses (the AWS and Azure SDKs are large).
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { chmodSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
// Build into a fresh directory and swap it in, so a running pgark (or test) never sees a
// half-written or missing dist/.
const outdir = `dist.tmp-${process.pid}`;
rmSync(outdir, { recursive: true, force: true });

const common = {
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  sourcemap: 'linked',
  legalComments: 'none',
  logLevel: 'warning',
  define: { PGARK_VERSION: JSON.stringify(pkg.version) },
};

// The fast paths of wal-push and wal-fetch (src/cli/fast-path.ts) are one self-contained file,
// not a chunk importing half a dozen shared chunks: each extra ES module costs start-up
// (resolve, read, link), and these run once per WAL file. main.ts imports it as a separate
// file; the few small modules it uses are bundled twice, which is harmless: they keep no state
// that the normal path would need.
const fastPathSeparate = {
  name: 'fast-path-separate',
  setup(b) {
    b.onResolve({ filter: /\/fast-path\.ts$/ }, () => ({ path: './fast-path.mjs', external: true }));
  },
};
// node:http and node:https are taken with process.getBuiltinModule, not as ES modules: the ES
// module namespace of node:http reads every export, and its lazy WebSocket / fetch-related ones
// load Node's bundled undici (~35 ms of CPU each time the S3, Azure or GCS client is loaded —
// every start of the background pusher and prefetcher, every wal-push that uploads itself).
// As a CommonJS stand-in, the bundle reads only the exports it uses.
const builtinHttpWithoutEsm = {
  name: 'builtin-http-without-esm',
  setup(b) {
    b.onResolve({ filter: /^(node:)?https?$/ }, (args) => ({ path: args.path.replace(/^node:/, ''), namespace: 'builtin-cjs' }));
    b.onLoad({ filter: /.*/, namespace: 'builtin-cjs' }, (args) => ({
      contents: `module.exports = process.getBuiltinModule(${JSON.stringify(`node:${args.path}`)});`,
      loader: 'js',
    }));
  },
};
common.plugins = [builtinHttpWithoutEsm];

await build({ ...common, entryPoints: { 'fast-path': 'src/cli/fast-path.ts' }, outdir, outExtension: { '.js': '.mjs' } });

await build({
  ...common,
  plugins: [fastPathSeparate, builtinHttpWithoutEsm],
  entryPoints: { pgark: 'src/cli/main.ts' },
  outdir,
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  splitting: true,
  // Some bundled CommonJS dependencies call require(); give them one, made on first use:
  // creating it (and importing node:module as an ES module) costs a few ms of every wal-push
  // call, which never requires anything. The bundles only ever call it (esbuild's __require).
  banner: {
    js: [
      '#!/usr/bin/env node',
      'var __pgarkRequire;',
      "function require(id) { return (__pgarkRequire ??= process.getBuiltinModule('node:module').createRequire(import.meta.url))(id); }",
    ].join('\n'),
  },
  // pg-native: an optional peer of node-postgres that we never use. lz4-napi: a native addon,
  // loaded from node_modules at run time (only when the lz4 codec is used).
  external: ['pg-native', 'lz4-napi'],
});
chmodSync(`${outdir}/pgark.mjs`, 0o755);

// The `pgark` executable is a shell launcher (src/cli/launcher.sh: it answers most wal-push
// calls without starting Node). Its build id — the version and a hash of the bundles — is part
// of the key of the markers it trusts, so a marker written by another build is not.
const bundleHash = createHash('sha256');
for (const file of readdirSync(outdir, { recursive: true }).map(String).sort()) {
  if (!file.endsWith('.mjs')) continue;
  bundleHash.update(file).update('\0').update(readFileSync(join(outdir, file)));
}
const buildId = `${pkg.version}-${bundleHash.digest('hex').slice(0, 16)}`;
writeFileSync(`${outdir}/pgark`, readFileSync('src/cli/launcher.sh', 'utf8').replaceAll('@PGARK_BUILD@', buildId), { mode: 0o755 });
rmSync(`dist.old-${process.pid}`, { recursive: true, force: true });
try {
  renameSync('dist', `dist.old-${process.pid}`);
} catch {
  // first build
}
renameSync(outdir, 'dist');
rmSync(`dist.old-${process.pid}`, { recursive: true, force: true });
