// bench/lib/pagemap.mjs — the physical floor of an incremental backup: which 8 KiB pages of a
// cluster's relation files really changed between two moments, and how small they compress.
//
//   node pagemap.mjs snapshot PGDATA OUT.json           hash of every page of every relation file
//   node pagemap.mjs diff PGDATA OLD.json SINCE_LSN     compare the current files with OLD
//
// diff prints one JSON line: pages (now), changed (content differs from OLD, or the page is new),
// lsn_newer (page LSN > SINCE_LSN: what LSN-based change detection would pick), changed_bytes,
// changed_zstd3 (the changed pages, concatenated in file order, compressed with zstd level 3 —
// no tool that stores changed pages compressed with zstd-3 can store less), files, changed_files.
// Relation files = base/*/ and global/ (main, fsm, vm, init forks, all segments); the rest of
// PGDATA (pg_xact, config, ...) is small and every tool copies it whole.
// Run it with the cluster checkpointed (CHECKPOINT just before): the files are then what a backup reads.
import { createHash } from 'node:crypto';
import { openSync, readSync, closeSync, readdirSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { zstdCompressSync, constants } from 'node:zlib';

const PAGE = 8192;
const REL = /^\d+(_fsm|_vm|_init)?(\.\d+)?$/;

function relationFiles(pgdata) {
  const out = [];
  const dirs = ['global', ...readdirSync(join(pgdata, 'base')).map((d) => join('base', d))];
  for (const d of dirs) {
    for (const f of readdirSync(join(pgdata, d))) if (REL.test(f)) out.push(join(d, f));
  }
  return out.sort();
}

// calls fn(pageIndex, pageBuffer) for every full page of the file (a torn tail, if any, is ignored)
function eachPage(path, fn) {
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(PAGE * 128);
  let page = 0;
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n <= 0) break;
      for (let off = 0; off + PAGE <= n; off += PAGE) fn(page++, buf.subarray(off, off + PAGE));
      if (n < buf.length) break;
    }
  } finally { closeSync(fd); }
}

const hashOf = (page) => createHash('sha1').update(page).digest().subarray(0, 8);

function lsnOf(page) { return (BigInt(page.readUInt32LE(0)) << 32n) | BigInt(page.readUInt32LE(4)); }
function parseLsn(text) { const [hi, lo] = text.split('/'); return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`); }

const [cmd, pgdata, a, b] = process.argv.slice(2);
if (cmd === 'snapshot' && pgdata && a) {
  const files = {};
  for (const rel of relationFiles(pgdata)) {
    const hashes = [];
    eachPage(join(pgdata, rel), (_, p) => hashes.push(hashOf(p)));
    files[rel] = Buffer.concat(hashes).toString('base64');
  }
  writeFileSync(a, JSON.stringify(files));
} else if (cmd === 'diff' && pgdata && a && b) {
  const old = JSON.parse(readFileSync(a, 'utf8'));
  const since = parseLsn(b);
  let pages = 0, changed = 0, lsnNewer = 0, files = 0, changedFiles = 0;
  // compressed in 64 MiB chunks (memory stays bounded; the loss against one stream is negligible)
  let chunk = [], chunkBytes = 0, changedBytes = 0, zstd = 0;
  const flush = () => {
    if (chunkBytes) zstd += zstdCompressSync(Buffer.concat(chunk), { params: { [constants.ZSTD_c_compressionLevel]: 3 } }).length;
    chunk = []; chunkBytes = 0;
  };
  for (const rel of relationFiles(pgdata)) {
    files++;
    const before = old[rel] ? Buffer.from(old[rel], 'base64') : Buffer.alloc(0);
    let fileChanged = false;
    eachPage(join(pgdata, rel), (i, p) => {
      pages++;
      const lsn = lsnOf(p);
      if (lsn > since) lsnNewer++;
      const h = hashOf(p);
      if (i * 8 + 8 > before.length || !h.equals(before.subarray(i * 8, i * 8 + 8))) {
        changed++; fileChanged = true; changedBytes += PAGE;
        chunk.push(Buffer.from(p)); chunkBytes += PAGE; if (chunkBytes >= 64 << 20) flush();
      }
    });
    if (fileChanged) changedFiles++;
  }
  flush();
  const total = relationFiles(pgdata).reduce((s, f) => s + statSync(join(pgdata, f)).size, 0);
  process.stdout.write(JSON.stringify({ pages, changed, lsn_newer: lsnNewer, changed_fraction: pages ? changed / pages : 0,
    changed_bytes: changedBytes, changed_zstd3: zstd, relation_bytes: total, files, changed_files: changedFiles }) + '\n');
} else {
  console.error('usage: pagemap.mjs snapshot PGDATA OUT.json | diff PGDATA OLD.json SINCE_LSN');
  process.exit(2);
}
