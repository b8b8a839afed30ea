// bench/lib/summary.mjs NAME — the compact tables of the README's "Performance" section, from
// bench/results/NAME.json (written by report.mjs for backup.sh results). Prints Markdown.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const name = process.argv[2] ?? 'backup';
const resultsDir = process.env.RESULTS_DIR ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'results');
const { sections, meta } = JSON.parse(readFileSync(join(resultsDir, `${name}.json`), 'utf8'));
const f2 = (x) => (x === undefined || x === null || Number.isNaN(x) ? '—' : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const mb = (b) => (b === undefined ? '—' : b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : `${(b / 1e6).toFixed(1)} MB`);
const short = (tool) => tool
  .replace(/^pgark, (file repo|S3) \(.*\)$/, 'pgark')
  .replace(/^pgBackRest (posix|S3), /, 'pgBackRest ').replace(', process-max 2', '').replace(', pm 2, bundle+block incr (beta)', ' block')
  .replace(/^barman-cloud S3 \(no compression, -J 2\)$/, 'barman-cloud');

const out = [];
out.push(`${meta.pgark}; ${meta.host?.cpus} vCPU, ${meta.host?.mem_gib} GiB; ${Object.entries(meta.versions ?? {}).filter(([k]) => ['postgresql', 'pgbackrest', 'barman_cloud', 'ceph'].includes(k)).map(([k, v]) => `${k} ${v}`).join(', ')}.`, '');

// full backup and restore: ratio pgark / peer per case, median (min–max) of the per-round ratios
out.push('| data set · repository | operation | pgark wall s | vs peer: pgark / peer wall, median (min–max) of rounds |', '|---|---|---|---|');
for (const section of ['full', 'restore']) {
  for (const [kase, { stats, ratios }] of Object.entries(sections[section]?.cases ?? {})) {
    const pg = stats.find((s) => s.side === 'pgark');
    const cells = ratios.map((r) => `${short(r.peer)} **${f2(r.wall_ratio)}** (${f2(r.wall_ratio_min)}–${f2(r.wall_ratio_max)})`).join('; ');
    out.push(`| ${kase} | ${section === 'full' ? 'full backup' : 'restore'} | ${f2(pg?.wall_s)} | ${cells} |`);
  }
}
out.push('');

// incrementals: stored bytes against the floor, time against pgark's full
out.push('| data set · repository | change | pages changed | floor (zstd-3) | stored: pgark | stored: pgBackRest | pgark incr wall s (full s) |', '|---|---|---|---|---|---|---|');
for (const section of ['incr-a', 'incr-b']) {
  for (const [kase, { stats }] of Object.entries(sections[section]?.cases ?? {})) {
    const floor = stats.find((s) => s.side === 'floor');
    const pg = stats.find((s) => s.side === 'pgark');
    const full = sections.full?.cases?.[kase]?.stats?.find((s) => s.tool === pg?.tool);
    const changed = /(\d+) of (\d+) pages changed \(([\d.]+) %\)/.exec(floor?.notes?.[0] ?? '');
    const peers = stats.filter((s) => s.side === 'peer').map((s) => `${short(s.tool)} ${mb(s.out_bytes)} (${f2(s.out_bytes / floor?.out_bytes)}×)`).join('; ');
    out.push(`| ${kase} | ${section === 'incr-a' ? '(a) 1 % random UPDATE' : '(b) append'} | ${changed ? `${changed[3]} %` : '—'} | ${mb(floor?.out_bytes)} | ${mb(pg?.out_bytes)} (${f2(pg?.out_bytes / floor?.out_bytes)}×) | ${peers} | ${f2(pg?.wall_s)} (${f2(full?.wall_s)}) |`);
  }
}
out.push('');

// peak RSS
out.push('| data set | pgark peak RSS MiB (largest of its backups and restores) | pgBackRest | barman-cloud |', '|---|---|---|---|');
const datasets = new Map();
for (const sec of Object.values(sections)) {
  for (const [kase, { stats }] of Object.entries(sec.cases)) {
    const ds = kase.split(' · ')[0];
    if (!datasets.has(ds)) datasets.set(ds, { pgark: 0, pgbr: 0, barman: 0 });
    const d = datasets.get(ds);
    for (const s of stats) {
      const key = s.side === 'pgark' ? 'pgark' : s.tool.startsWith('pgBackRest') ? 'pgbr' : s.tool.startsWith('barman') ? 'barman' : undefined;
      if (key && s.maxrss_mib) d[key] = Math.max(d[key], s.maxrss_mib);
    }
  }
}
for (const [ds, d] of datasets) out.push(`| ${ds} | ${d.pgark.toFixed(0)} | ${d.pgbr.toFixed(0)} | ${d.barman ? d.barman.toFixed(0) : '—'} |`);
process.stdout.write(out.join('\n') + '\n');
