/**
 * Heavy commands (backup, restore, verify, expire, restore-test) replace their process once at
 * start-up with a Node started with memory settings that cannot be changed in a running process:
 *
 * - --max-semi-space-size: V8 grows its young generation up to 64 MiB while a command allocates
 *   quickly (a backup of 100,000 small files); 2 MiB semi-spaces cost no measurable CPU here.
 *   v8.setFlagsFromString() with it after start-up has no effect (the heap is configured).
 * - glibc malloc: at most two arenas (not one per thread-pool thread that compresses or hashes);
 *   for backup and restore also a fixed mmap threshold, so that a freed large buffer goes back to
 *   the system instead of raising the threshold and staying in a fragmented heap (restore: ~35 MiB
 *   of RSS on an incremental chain). Not for verify and expire, which decode into a fresh zlib
 *   buffer per MiB: a fresh mapping for each cost ~25 % more CPU. Restore decodes into buffers it
 *   reuses (restore-files.ts), so it no longer pays that.
 * - V8's old generation may grow to 1.2 times what survived the last full collection before the
 *   next one (--heap-growing-percent=20, set once the process runs, where it takes effect).
 *   By default V8 lets it reach several times that: once restore stopped allocating a fresh
 *   buffer per blob (whose external memory had kept full collections frequent), its heap grew
 *   from ~12 MiB of live objects to 45–65 MiB of garbage between collections.

 * - Restore only: V8 starts marking for the next full collection once half the room up to that
 *   limit is used (--incremental-marking-hard-trigger=50), not right after the previous one.
 *   Restore's heap hardly grows, but the external memory of the buffers its ranged GETs
 *   arrive in (V8 counts every buffer allocated) kept the next marking starting at once: a
 *   full collection every ~150 ms, 21 per GB restored and ~0.4 s of CPU on the two cores
 *   that also decompress. The limit itself is unchanged, so is the most the heap may hold.
 *
 * Together they keep the peak RSS of a backup or restore under 150 MB (issue #5). process.execve
 * keeps the process id, stdio, signals and exit status as they are; it costs one more Node
 * start-up (~40 ms), which wal-push and wal-fetch, run once per WAL file, do not pay. The malloc
 * variables are taken out of the environment again after the exec, so that PostgreSQL and other
 * programs a command starts do not inherit them; a value the user set is left alone.
 */
const HEAVY_COMMANDS = new Set(['backup', 'restore', 'verify', 'expire', 'restore-test']);
const SEMI_SPACE_FLAG = '--max-semi-space-size=2';
const HEAP_GROWING_FLAG = '--heap-growing-percent=20';
const LATE_MARKING_FLAG = '--incremental-marking-hard-trigger=50';
const LATE_MARKING_COMMANDS = new Set(['restore', 'restore-test']);
const MALLOC_DEFAULTS: Record<string, string> = { MALLOC_ARENA_MAX: '2' };
const FIXED_MMAP_DEFAULTS: Record<string, string> = { ...MALLOC_DEFAULTS, MALLOC_MMAP_THRESHOLD_: '131072' };
/** Commands whose large buffers are reused or few (not one fresh zlib buffer per MiB decoded). */
const FIXED_MMAP_COMMANDS = new Set(['backup', 'restore', 'restore-test']);
/** Lists the malloc variables pgark added (not the user's): removed again after the exec. */
const ADDED_MARKER = 'PGARK_MALLOC_ADDED';

/** Replaces the process when `command` is heavy and the flags are not in effect yet; otherwise returns. */
export function applyMemoryLimits(command: string | undefined): void {
  const added = process.env[ADDED_MARKER];
  if (added !== undefined) {
    for (const name of added.split(',')) delete process.env[name];
    delete process.env[ADDED_MARKER];
  }
  if (!command || !HEAVY_COMMANDS.has(command)) return;
  // (A V8 without the flag prints a warning and goes on as before.) node:v8 is loaded here, not
  // imported: loading it (and node:stream, which it needs) costs every wal-push call ~3 ms.
  const v8 = process.getBuiltinModule('node:v8');
  v8.setFlagsFromString(HEAP_GROWING_FLAG);
  if (LATE_MARKING_COMMANDS.has(command)) v8.setFlagsFromString(LATE_MARKING_FLAG);
  if (typeof process.execve !== 'function') return;
  // Already applied (this is the replaced process), or chosen by the user: leave it.
  const nodeOptions = process.env.NODE_OPTIONS ?? '';
  if ([...process.execArgv, nodeOptions].some((arg) => /--max[-_]semi[-_]space[-_]size/.test(arg))) return;
  const script = process.argv[1];
  if (!script) return;
  const env: NodeJS.ProcessEnv = { ...process.env };
  const defaults = FIXED_MMAP_COMMANDS.has(command) ? FIXED_MMAP_DEFAULTS : MALLOC_DEFAULTS;
  const ours = Object.keys(defaults).filter((name) => env[name] === undefined);
  for (const name of ours) env[name] = defaults[name];
  if (ours.length > 0) env[ADDED_MARKER] = ours.join(',');
  try {
    process.execve(process.execPath, [process.execPath, SEMI_SPACE_FLAG, ...process.execArgv, script, ...process.argv.slice(2)], env);
  } catch {
    // Not possible here (a platform without execve, an odd launcher): run as we are.
  }
}
