/** pgark get NAME: a stored stream to standard output, verified. */
import type { CommandContext } from '../cli/context.ts';
import { PgarkError } from '../errors.ts';
import { Repository } from '../repo/repository.ts';
import { getStream, readStreamManifest } from '../repo/streams.ts';
import { log } from '../util/log.ts';
import { createProgress } from '../util/progress.ts';
import { formatBytes, formatDuration } from '../util/units.ts';

export async function run(ctx: CommandContext): Promise<number> {
  const name = ctx.args[0]!;
  if (process.stdout.isTTY) {
    throw new PgarkError('USAGE', 'standard output is a terminal; pgark get writes the raw stream', { hint: `redirect it: pgark get ${name} > file, or pipe it: pgark get ${name} | tar -t` });
  }
  const repo = await Repository.open(ctx.loaded, { requireInit: false });
  try {
    const started = Date.now();
    const { size } = await readStreamManifest(repo, name);
    const progress = createProgress(`get ${name}`, size);
    await getStream(repo, name, process.stdout, { signal: ctx.signal, onBytes: (n) => progress.add(n) });
    progress.done();
    const ms = Date.now() - started;
    log.info(`restored stream ${name}, verified`, { size: formatBytes(size), duration: formatDuration(ms), rate: `${formatBytes((size / Math.max(ms, 1)) * 1000)}/s` });
    return 0;
  } finally {
    await repo.close();
  }
}
