// bench/lib/report.mjs NAME — turns bench/results/NAME.tsv (rows written by lib/measure.sh) and any
// NAME-*.tsv side tables into NAME.json (machine-readable: per-row stats and pgark/peer ratios) and
// NAME.md (Markdown tables). Prints the Markdown. Medians over the rounds; failed rows (rc != 0) are
// counted but left out of the statistics. Ratios pair each pgark row with each peer row of the same
// section, case and round (pgark and peer ran back to back), then take the median of those ratios.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const name = process.argv[2];
if (!name) { console.error('usage: report.mjs NAME'); process.exit(2); }
const resultsDir = process.env.RESULTS_DIR ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'results');
const SEGMENT = 16 * 1024 * 1024;

function readTsv(path) {
  const [header, ...lines] = readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const cols = header.split('\t');
  return lines.map((line) => Object.fromEntries(line.split('\t').map((v, i) => [cols[i], v])));
}
const num = (v) => (v === undefined || v === '' || Number.isNaN(Number(v)) ? undefined : Number(v));
function median(values) {
  const v = values.filter((x) => x !== undefined).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
const min = (v) => Math.min(...v.filter((x) => x !== undefined));
const max = (v) => Math.max(...v.filter((x) => x !== undefined));
function fmt(x, digits = 2) {
  if (x === undefined || x === null || Number.isNaN(x)) return '—';
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(Math.min(digits, 1));
  return x.toFixed(digits);
}
const isWal = (section) => section.startsWith('wal');
const isStartup = (section) => section === 'startup' || section === 'walpush-call';

const mainPath = join(resultsDir, `${name}.tsv`);
const rows = existsSync(mainPath) ? readTsv(mainPath) : [];
const metaPath = join(resultsDir, `${name}.meta.json`);
const meta = existsSync(metaPath) ? JSON.parse(readFileSync(metaPath, 'utf8')) : {};

// ---- group: section -> case -> tool ----
const sections = new Map();
for (const r of rows) {
  if (!sections.has(r.section)) sections.set(r.section, new Map());
  const cases = sections.get(r.section);
  if (!cases.has(r.case)) cases.set(r.case, new Map());
  const tools = cases.get(r.case);
  if (!tools.has(r.tool)) tools.set(r.tool, { side: r.side, rows: [] });
  tools.get(r.tool).rows.push(r);
}

function statsOf(section, tool, entry) {
  const ok = entry.rows.filter((r) => r.rc === '0');
  const wall = ok.map((r) => num(r.wall_s));
  const basis = median(ok.map((r) => num(r.basis_bytes)));
  const out = median(ok.map((r) => num(r.out_bytes)));
  const s = {
    tool, side: entry.side, n: ok.length, failed: entry.rows.length - ok.length,
    wall_s: median(wall), wall_min: ok.length ? min(wall) : undefined, wall_max: ok.length ? max(wall) : undefined,
    cpu_s: median(ok.map((r) => num(r.cpu_s))),
    user_sys_s: median(ok.map((r) => num(r.user_s) + num(r.sys_s))),
    maxrss_mib: median(ok.map((r) => num(r.maxrss_kb) / 1024)),
    srv_cpu_s: median(ok.map((r) => num(r.srv_cpu_s))),
    load1: median(entry.rows.map((r) => num(r.load1))),
    basis_bytes: basis, out_bytes: out,
    notes: [...new Set(entry.rows.map((r) => r.note).filter(Boolean))],
  };
  if (basis && s.wall_s) s.mb_per_s = basis / s.wall_s / 1e6;
  if (basis && out && section !== 'startup') s.ratio_in_out = basis / out;
  if (isWal(section) && basis) {
    s.segments = basis / SEGMENT;
    s.s_per_segment = s.wall_s / s.segments;
    s.segments_per_s = s.segments / s.wall_s;
  }
  return s;
}

function ratiosOf(tools) {
  const out = [];
  const pgarks = [...tools].filter(([, e]) => e.side === 'pgark');
  const peers = [...tools].filter(([, e]) => e.side === 'peer');
  for (const [p, pe] of pgarks) {
    for (const [q, qe] of peers) {
      const byRun = new Map(qe.rows.filter((r) => r.rc === '0').map((r) => [r.run, r]));
      const pairs = pe.rows.filter((r) => r.rc === '0' && byRun.has(r.run)).map((r) => ({ a: r, b: byRun.get(r.run) }));
      if (pairs.length === 0) continue;
      const wall = pairs.map(({ a, b }) => num(a.wall_s) / num(b.wall_s));
      const cpu = pairs.map(({ a, b }) => (num(b.cpu_s) > 0 ? num(a.cpu_s) / num(b.cpu_s) : undefined));
      const rss = pairs.map(({ a, b }) => num(a.maxrss_kb) / num(b.maxrss_kb));
      out.push({ pgark: p, peer: q, pairs: pairs.length, wall_ratio: median(wall), wall_ratio_min: min(wall), wall_ratio_max: max(wall),
        cpu_ratio: median(cpu), rss_ratio: median(rss) });
    }
  }
  return out;
}

const verdict = (r) => (r === undefined ? '' : r <= 0.95 ? `pgark ${fmt(1 / r)}× faster` : r >= 1.05 ? `pgark ${fmt(r)}× slower` : 'same (±5 %)');

const TABLE_TITLES = {
  calls: 'Per-call latency of the archive_command during the WAL push runs (ms)',
  live: 'Live: PostgreSQL\'s archiver running the tool while pgbench writes WAL',
};
const TITLES = {
  codec: 'Codecs: pgark put/get (file:// repo on tmpfs) vs the stock CLIs, same data',
  s3: 'S3 (Ceph RGW, http, tcp_nodelay=1): pgark put/get vs aws s3 cp',
  big: 'Big stdin upload to RGW: peak RSS, parts, read-back check',
  startup: 'Start-up time (wall in ms)',
  walpush: 'WAL archiving: archive_command per staged segment, in order, like PostgreSQL\'s archiver',
  'walpush-call': 'wal-push per call (ms): one call per segment',
  full: 'Full backup (PGDATA without pg_wal = basis for MB/s; out MB = backup data added to the repository)',
  restore: 'Restore into an empty directory (the restored cluster is then started and checked, untimed; out MB = restored bytes)',
  'incr-a': 'Incremental backup after (a) an UPDATE of 1 % random rows (out MB = backup data added; floor = the changed pages, zstd-3)',
  'restore-incr-a': 'Restore of the incremental (a) (started and checked like the full)',
  'incr-b': 'Incremental backup after (b) an append: 1 % new rows + UPDATE of half of the newest 2 % (floor = changed pages, zstd-3)',
  'restore-incr-b': 'Restore of the incremental (b) (started and checked like the full)',
  walreplay: 'WAL replay: cold copy + recovery.signal + restore_command, seconds until the server is up (CPU includes the replica\'s own redo)',
};

const json = { name, meta, sections: {}, tables: {} };
const md = [`# ${name}`, ''];
if (meta.date) {
  md.push(`Measured ${meta.date} on ${meta.host?.cpus} vCPU "${meta.host?.cpu}", ${meta.host?.mem_gib} GiB RAM, kernel ${meta.host?.kernel} (load average at start ${meta.host?.loadavg_at_start}).`);
  md.push(`pgark: ${meta.pgark}. Peers: ${Object.entries(meta.versions ?? {}).map(([k, v]) => `${k} ${v}`).join(', ')}.`);
  md.push(`Settings: ${Object.entries(meta.settings ?? {}).map(([k, v]) => `${k}=${v}`).join(', ')}.`);
  md.push('');
}
md.push('Medians over the rounds (n); MB = 10^6 bytes of content; CPU = user+sys of the command and everything it started, including detached',
  'helpers (cgroup); peak RSS = the largest single process; RGW CPU = ceph-mon + ceph-osd + radosgw (+ stunnel) meanwhile.',
  'load = median 1-minute load average of the 2-vCPU machine when the commands started (other engineers\' tests share it).',
  'Ratios pair pgark with the peer of the same round (run back to back), median of the per-round ratios (min–max); < 1 = pgark faster.', '');

for (const [section, cases] of sections) {
  const sec = { title: TITLES[section] ?? section, cases: {} };
  md.push(`## ${sec.title}`, '');
  const startup = isStartup(section);
  const wal = isWal(section) && !startup;
  const head = startup
    ? ['case', 'tool', 'n', 'wall ms, median', 'min–max', 'CPU ms', 'peak RSS MiB']
    : wal
      ? ['case', 'tool', 'n', 'wall s, median', 'min–max', 's/segment', 'segments/s', 'MB/s', 'CPU s', 'user+sys s', 'peak RSS MiB', 'RGW CPU s', 'stored MB', 'ratio', 'load']
      : ['case', 'tool', 'n', 'wall s, median', 'min–max', 'MB/s', 'CPU s', 'peak RSS MiB', 'RGW CPU s', 'out MB', 'in/out', 'load'];
  md.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  const ratioLines = [];
  const notes = [];
  for (const [kase, tools] of cases) {
    const stats = [...tools].map(([tool, entry]) => statsOf(section, tool, entry));
    const ratios = ratiosOf(tools);
    sec.cases[kase] = { stats, ratios };
    for (const s of stats) {
      const toolCell = `${s.side === 'pgark' ? '**' : ''}\`${s.tool}\`${s.side === 'pgark' ? '**' : ''}${s.failed ? ` (${s.failed} failed)` : ''}`;
      const range = s.n ? (startup ? `${fmt(s.wall_min * 1000, 0)}–${fmt(s.wall_max * 1000, 0)}` : `${fmt(s.wall_min)}–${fmt(s.wall_max)}`) : '—';
      let cells;
      if (startup) cells = [kase, toolCell, s.n, fmt(s.wall_s * 1000, 1), range, fmt(s.cpu_s * 1000, 0), fmt(s.maxrss_mib, 0)];
      else if (wal) cells = [kase, toolCell, s.n, fmt(s.wall_s), range, fmt(s.s_per_segment, 3), fmt(s.segments_per_s, 1), fmt(s.mb_per_s, 0), fmt(s.cpu_s, 1), fmt(s.user_sys_s, 1), fmt(s.maxrss_mib, 0), fmt(s.srv_cpu_s, 1), fmt(s.out_bytes / 1e6, 1), fmt(s.ratio_in_out), fmt(s.load1, 1)];
      else cells = [kase, toolCell, s.n, fmt(s.wall_s), range, fmt(s.mb_per_s, 0), fmt(s.cpu_s, 1), fmt(s.maxrss_mib, 0), fmt(s.srv_cpu_s, 1), fmt(s.out_bytes / 1e6, 1), fmt(s.ratio_in_out), fmt(s.load1, 1)];
      md.push(`| ${cells.join(' | ')} |`);
      for (const n of s.notes) notes.push(`* ${kase}, \`${s.tool}\`: ${n}`);
    }
    for (const r of ratios) {
      ratioLines.push(`| ${kase} | \`${r.pgark}\` | \`${r.peer}\` | ${r.pairs} | **${fmt(r.wall_ratio)}** (${fmt(r.wall_ratio_min)}–${fmt(r.wall_ratio_max)}) | ${verdict(r.wall_ratio)} | ${fmt(r.cpu_ratio)} | ${fmt(r.rss_ratio)} |`);
    }
  }
  md.push('');
  if (ratioLines.length > 0) {
    md.push('pgark / peer:', '', '| case | pgark | peer | pairs | wall ratio, median (min–max) | | CPU ratio | peak RSS ratio |', '|---|---|---|---|---|---|---|---|', ...ratioLines, '');
  }
  if (notes.length > 0) md.push(...notes, '');
  json.sections[section] = sec;
}

// ---- side tables: NAME-<table>.tsv, printed as they are (plus medians per variant) ----
for (const file of readdirSync(resultsDir).filter((f) => f.startsWith(`${name}-`) && f.endsWith('.tsv')).sort()) {
  const table = file.slice(name.length + 1, -4);
  // NAME-quick.tsv, NAME-quick-calls.tsv ... belong to another run (NAME-quick), not to this one
  if (!/^[a-z]+$/.test(table) || existsSync(join(resultsDir, `${name}-${table}.meta.json`))) continue;
  const t = readTsv(join(resultsDir, file));
  json.tables[table] = t;
  if (t.length === 0) continue;
  const cols = Object.keys(t[0]).filter((c) => c !== 'ts');
  md.push(`## ${TABLE_TITLES[table] ?? table}`, '', `| ${cols.join(' | ')} |`, `|${cols.map(() => '---').join('|')}|`);
  for (const r of t) md.push(`| ${cols.map((c) => r[c]).join(' | ')} |`);
  md.push('');
  const key = cols.includes('variant') ? 'variant' : undefined;
  if (key) {
    const groups = new Map();
    for (const r of t) { if (!groups.has(r[key])) groups.set(r[key], []); groups.get(r[key]).push(r); }
    if ([...groups.values()].some((g) => g.length > 1)) {
      const numeric = cols.filter((c) => c !== key && c !== 'run' && t.every((r) => num(r[c]) !== undefined));
      md.push(`Medians per ${key}:`, '', `| ${key} | n | ${numeric.join(' | ')} |`, `|---|---|${numeric.map(() => '---').join('|')}|`);
      const medians = {};
      for (const [v, g] of groups) {
        medians[v] = Object.fromEntries(numeric.map((c) => [c, median(g.map((r) => num(r[c])))]));
        md.push(`| ${v} | ${g.length} | ${numeric.map((c) => fmt(medians[v][c])).join(' | ')} |`);
      }
      json.tables[`${table}-medians`] = medians;
      md.push('');
    }
  }
}

// ---- backup.sh: the goals of issue #5, per round, from the rows above ----
function goalsOf() {
  if (!sections.has('full')) return undefined;
  const okRows = rows.filter((r) => r.rc === '0');
  const byKey = (section, kase, pred) => okRows.filter((r) => r.section === section && r.case === kase && pred(r));
  const perRun = (as, bs, f) => {
    const b = new Map(bs.map((r) => [r.run, r]));
    return as.filter((r) => b.has(r.run)).map((r) => f(r, b.get(r.run))).filter((x) => x !== undefined && Number.isFinite(x));
  };
  const out = [];
  const row = (goal, what, values, limit) => {
    if (values.length === 0) return;
    const m = median(values);
    out.push({ goal, what, n: values.length, median: m, min: min(values), max: max(values), limit, met: m <= limit });
  };
  const cases = (section) => [...(sections.get(section)?.keys() ?? [])];
  for (const section of ['full', 'restore']) {
    for (const kase of cases(section)) {
      const pg = byKey(section, kase, (r) => r.side === 'pgark');
      const peers = [...new Set(byKey(section, kase, (r) => r.side === 'peer' && r.tool.startsWith('pgBackRest')).map((r) => r.tool))];
      for (const peer of peers) {
        row(`${section} time ≤ 0.67× pgBackRest`, `${kase}: ${pg[0]?.tool} / ${peer}`,
          perRun(pg, byKey(section, kase, (r) => r.tool === peer), (a, b) => num(a.wall_s) / num(b.wall_s)), 0.67);
      }
    }
  }
  for (const [section, limit] of [['incr-a', 0.5], ['incr-b', 0.3]]) {
    for (const kase of cases(section)) {
      const floor = byKey(section, kase, (r) => r.side === 'floor');
      const tools = [...new Set(byKey(section, kase, (r) => r.side !== 'floor').map((r) => r.tool))];
      for (const tool of tools) {
        const rs = byKey(section, kase, (r) => r.tool === tool);
        row('incr bytes ≤ 1.3× changed pages (zstd-3)', `${section} ${kase}: ${tool}`, perRun(rs, floor, (a, b) => num(a.out_bytes) / num(b.out_bytes)), 1.3);
      }
      const pg = byKey(section, kase, (r) => r.side === 'pgark');
      for (const tool of new Set(pg.map((r) => r.tool))) {
        row(`incr time ≤ ${limit}× pgark full`, `${section} ${kase}: ${tool}`,
          perRun(pg.filter((r) => r.tool === tool), byKey('full', kase, (r) => r.tool === tool), (a, b) => num(a.wall_s) / num(b.wall_s)), limit);
      }
    }
  }
  const datasets = [...new Set(okRows.filter((r) => r.side === 'pgark').map((r) => r.case.split(' · ')[0]))];
  for (const ds of datasets) {
    const rss = okRows.filter((r) => r.side === 'pgark' && r.case.startsWith(`${ds} · `)).map((r) => num(r.maxrss_kb) / 1024);
    if (rss.length) out.push({ goal: 'peak RSS ≤ 150 MB', what: `${ds}: every pgark backup and restore (max)`, n: rss.length, median: max(rss), min: min(rss), max: max(rss), limit: 150 * 1e6 / 1048576, met: max(rss) <= 150 * 1e6 / 1048576, unit: 'MiB' });
  }
  return out;
}
const goals = goalsOf();
if (goals && goals.length > 0) {
  json.goals = goals;
  md.push('## Goals (issue #5), per round', '', 'The goals apply to pgark; pgBackRest\'s incremental bytes vs the floor are shown for comparison. Ratios per round (pgark and the peer of the same round; an incremental vs the floor and vs pgark\'s full of the same round), median (min–max); peak RSS: the largest over all pgark rows, in MiB (150 MB = 143 MiB).', '',
    '| goal | what | n | median | min–max | met |', '|---|---|---|---|---|---|');
  for (const g of goals) md.push(`| ${g.goal} | ${g.what} | ${g.n} | **${fmt(g.median)}** | ${fmt(g.min)}–${fmt(g.max)} | ${g.met ? 'yes' : '**no**'} |`);
  md.push('');
}

writeFileSync(join(resultsDir, `${name}.json`), JSON.stringify(json, null, 2) + '\n');
writeFileSync(join(resultsDir, `${name}.md`), md.join('\n') + '\n');
process.stdout.write(md.join('\n') + '\n');
