/** pgark ls: the streams in the repository. */
import type { CommandContext } from '../cli/context.ts';
import { Repository } from '../repo/repository.ts';
import { listStreams } from '../repo/streams.ts';
import { formatBytes } from '../util/units.ts';

export async function run(ctx: CommandContext): Promise<number> {
  const repo = await Repository.open(ctx.loaded, { requireInit: false });
  try {
    const streams = await listStreams(repo);
    if (ctx.json) {
      process.stdout.write(JSON.stringify(streams.map(({ name, createdAt, size, storedSize, sha256, dataKey }) => ({ name, createdAt, size, storedSize, sha256, encrypted: dataKey.endsWith('.age') }))) + '\n');
      return 0;
    }
    if (streams.length === 0) {
      process.stdout.write(`no streams in ${repo.description}\n`);
      return 0;
    }
    const rows = streams.map((s) => [s.name, formatBytes(s.size), formatBytes(s.storedSize), s.createdAt.replace('T', ' ').slice(0, 19), s.dataKey.endsWith('.age') ? 'yes' : 'no']);
    const header = ['NAME', 'SIZE', 'STORED', 'CREATED (UTC)', 'ENCRYPTED'];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const format = (row: string[]) => row.map((cell, i) => (i === 1 || i === 2 ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join('  ').trimEnd();
    process.stdout.write([format(header), ...rows.map(format)].join('\n') + '\n');
    return 0;
  } finally {
    await repo.close();
  }
}
