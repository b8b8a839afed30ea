/** pgark put NAME: standard input into the repository as a named stream. */
import type { CommandContext } from '../cli/context.ts';
import { PgarkError } from '../errors.ts';
import { Repository } from '../repo/repository.ts';
import { putStream } from '../repo/streams.ts';
import { log } from '../util/log.ts';
import { createProgress } from '../util/progress.ts';
import { formatBytes, formatDuration } from '../util/units.ts';

export async function run(ctx: CommandContext): Promise<number> {
  const name = ctx.args[0]!;
  if (process.stdin.isTTY) {
    throw new PgarkError('USAGE', 'standard input is a terminal; pgark put stores what is piped into it', { hint: `e.g. tar -C /data -c . | pgark put ${name}` });
  }
  const repo = await Repository.open(ctx.loaded, { requireInit: false });
  try {
    const progress = createProgress(`put ${name}`);
    const manifest = await putStream(repo, name, process.stdin, { signal: ctx.signal, onBytes: (n) => progress.add(n) });
    progress.done();
    const seconds = manifest.durationMs / 1000;
    log.info(`stored stream ${name}`, {
      size: formatBytes(manifest.size),
      stored: formatBytes(manifest.storedSize),
      ratio: manifest.storedSize > 0 ? (manifest.size / manifest.storedSize).toFixed(2) : '-',
      duration: formatDuration(manifest.durationMs),
      rate: `${formatBytes(seconds > 0 ? manifest.size / seconds : 0)}/s`,
      encrypted: manifest.dataKey.endsWith('.age'),
    });
    if (ctx.json) process.stdout.write(JSON.stringify(manifest) + '\n');
    return 0;
  } finally {
    await repo.close();
  }
}
