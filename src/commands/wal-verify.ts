/**
 * pgark wal-verify: is the WAL archive complete and readable? Lists every archived WAL file,
 * reports per timeline the runs and gaps, names archived twice with different content, and
 * (unless --quick) downloads and verifies every file's SHA-256. Exit 2 on any problem.
 */
import type { CommandContext } from '../cli/context.ts';
import { Repository } from '../repo/repository.ts';
import { listWalObjects, readStoredWal } from '../repo/wal-archive.ts';
import { coverageOf } from '../repo/wal-ranges.ts';
import { mapSettled } from '../util/concurrency.ts';
import { createProgress } from '../util/progress.ts';

export async function run(ctx: CommandContext): Promise<number> {
  const repo = await Repository.open(ctx.loaded, { requireInit: true });
  try {
    const objects = await listWalObjects(repo);
    const coverage = coverageOf(objects, repo.identity!.postgres.walSegmentSize);
    const unreadable: { name: string; error: string }[] = [];
    if (!ctx.options.quick) {
      const progress = createProgress('verify WAL', objects.reduce((sum, o) => sum + o.size, 0));
      const results = await mapSettled(objects, ctx.loaded.config['process-max'], async (object) => {
        await readStoredWal(repo, object);
        progress.add(object.size);
      });
      progress.done();
      results.forEach((result, i) => {
        if (result.status === 'rejected') unreadable.push({ name: objects[i]!.name, error: (result.reason as Error).message });
      });
    }
    const gaps = coverage.timelines.flatMap((t) => t.gaps.map((g) => ({ timeline: t.timeline, ...g })));
    const ok = gaps.length === 0 && coverage.conflicts.length === 0 && unreadable.length === 0;

    if (ctx.json) {
      process.stdout.write(JSON.stringify({ ok, files: objects.length, checked: ctx.options.quick ? 'listing' : 'content', timelines: coverage.timelines, gaps, conflicts: coverage.conflicts, unreadable }) + '\n');
    } else {
      if (objects.length === 0) process.stdout.write('the WAL archive is empty\n');
      for (const t of coverage.timelines) {
        process.stdout.write(`timeline ${t.timeline}: ${t.segments} segment(s)${t.history ? ', history file' : ''}${t.partials.length ? `, ${t.partials.length} partial` : ''}\n`);
        for (const run of t.runs) process.stdout.write(`  ${run.first} .. ${run.last}  (${run.count})\n`);
        for (const gap of t.gaps) process.stdout.write(`  GAP ${gap.first} .. ${gap.last}  (${gap.count} missing)\n`);
      }
      for (const name of coverage.conflicts) process.stdout.write(`CONFLICT ${name} is archived with different contents\n`);
      for (const u of unreadable) process.stdout.write(`UNREADABLE ${u.name}: ${u.error}\n`);
      process.stdout.write(ok ? `ok: ${objects.length} WAL file(s)${ctx.options.quick ? ' listed' : ' verified'}, no gaps\n` : 'problems found\n');
    }
    return ok ? 0 : 2;
  } finally {
    await repo.close();
  }
}
