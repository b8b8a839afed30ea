/**
 * Parses the command line, loads the configuration, runs one command and turns any error into
 * one clear line (plus a hint) on stderr with a non-zero exit. Stack traces only with --debug.
 */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { loadConfig } from '../config/load.ts';
import { envNameOf, SETTINGS, SETTINGS_BY_KEY } from '../config/settings.ts';
import { PgarkError } from '../errors.ts';
import { configureLogger } from '../util/log.ts';
import { COMMANDS, findCommand, type CommandSpec } from './commands.ts';
import { commandHelp, mainHelp, settingsHelp } from './help.ts';

const GLOBAL_OPTIONS: ParseArgsOptionsConfig = {
  config: { type: 'string' },
  debug: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

function settingOptions(): ParseArgsOptionsConfig {
  const options: ParseArgsOptionsConfig = {};
  for (const spec of SETTINGS) {
    if (spec.type.kind === 'boolean') {
      // --KEY turns it on, --no-KEY off (for settings that default to on, or are on in the file).
      options[spec.key] = { type: 'boolean' };
      options[`no-${spec.key}`] = { type: 'boolean' };
    }
    else if (spec.type.kind === 'list') options[spec.key] = { type: 'string', multiple: true };
    else options[spec.key] = { type: 'string' };
  }
  return options;
}

/** Errors of local files that are the host's to fix, with what to do. */
const LOCAL_FILE_ERRORS: Record<string, string> = {
  ENOSPC: 'a local disk is full (the target directory, the spool or TMPDIR): free space or use a larger filesystem, then run again',
  EDQUOT: 'a disk quota is exhausted (the target directory, the spool or TMPDIR): raise it or free space, then run again',
  EROFS: 'the filesystem is mounted read-only',
  EMFILE: 'too many open files: raise the limit (ulimit -n) or lower process-max',
};

function reportError(error: unknown, debug: boolean, command: string | undefined): number {
  const prefix = command ? `pgark ${command}` : 'pgark';
  if (error instanceof PgarkError) {
    process.stderr.write(`${prefix}: error: ${error.message}\n`);
    if (error.hint) process.stderr.write(`${prefix}: hint: ${error.hint}\n`);
    if (debug) process.stderr.write(`${error.stack ?? ''}\n${error.cause instanceof Error ? `caused by: ${error.cause.stack}\n` : ''}`);
    return error.exitCode;
  }
  if ((error as Error)?.name === 'AbortError') {
    process.stderr.write(`${prefix}: interrupted\n`);
    return 130;
  }
  const message = error instanceof Error ? error.message : String(error);
  const localHint = LOCAL_FILE_ERRORS[(error as NodeJS.ErrnoException)?.code ?? ''];
  if (localHint) {
    // The machine's, not pgark's: say what to fix instead of "internal error".
    process.stderr.write(`${prefix}: error: ${message.split('\n')[0]}\n${prefix}: hint: ${localHint}\n`);
    if (debug) process.stderr.write(`${(error as Error)?.stack ?? ''}\n`);
    return 2;
  }
  process.stderr.write(`${prefix}: internal error: ${message.split('\n')[0]}\n`);
  if (debug) process.stderr.write(`${(error as Error)?.stack ?? ''}\n`);
  else process.stderr.write(`${prefix}: hint: run again with --debug for details, and report it if it persists\n`);
  return 3;
}

function closestCommand(name: string): string | undefined {
  return COMMANDS.map((c) => c.name).find((candidate) => candidate.startsWith(name.slice(0, 2)));
}

function parseCommandLine(spec: CommandSpec, argv: string[]) {
  const options: ParseArgsOptionsConfig = { ...GLOBAL_OPTIONS, ...settingOptions() };
  for (const [name, option] of Object.entries(spec.options)) {
    options[name] = { type: option.type, ...(option.short ? { short: option.short } : {}), ...(option.multiple ? { multiple: true } : {}) };
  }
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    // parseArgs says e.g. "Unknown option '--fo'. To specify a positional argument starting with a '-' ..."
    const message = (error as Error).message.split('. ')[0]!.replace(/^Option/, 'option');
    throw new PgarkError('USAGE', message.charAt(0).toLowerCase() + message.slice(1), { hint: `see \`pgark ${spec.name} --help\`` });
  }
}

export async function runCli(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug') || process.env.PGARK_DEBUG === '1';
  const [name, ...rest] = argv;
  let spec: CommandSpec | undefined;
  try {
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      if (name === 'help' && rest[0] === 'settings') process.stdout.write(settingsHelp());
      else if (name === 'help' && rest[0] && findCommand(rest[0])) process.stdout.write(commandHelp(findCommand(rest[0])!));
      else process.stdout.write(mainHelp());
      return name === undefined ? 2 : 0;
    }
    spec = findCommand(name);
    if (!spec) {
      const suggestion = closestCommand(name);
      throw new PgarkError('USAGE', `unknown command "${name}"`, { hint: suggestion ? `did you mean \`pgark ${suggestion}\`? (\`pgark --help\` lists commands)` : '`pgark --help` lists the commands' });
    }
    const { values, positionals } = parseCommandLine(spec, rest);
    if (values.help) {
      process.stdout.write(commandHelp(spec));
      return 0;
    }
    if (positionals.length < spec.positionals.min || positionals.length > spec.positionals.max) {
      throw new PgarkError('USAGE', positionals.length < spec.positionals.min ? 'missing argument' : `unexpected argument "${positionals[spec.positionals.max]}"`, {
        hint: `usage: ${spec.usage}`,
      });
    }
    const flags: Record<string, string | string[] | boolean | undefined> = {};
    for (const setting of SETTINGS) {
      flags[setting.key] = values[`no-${setting.key}`] ? false : values[setting.key] as string | string[] | boolean | undefined;
    }
    const loaded = spec.usesConfig
      ? loadConfig({ configPath: values.config as string | undefined, env: process.env, flags })
      : loadConfig({ env: {}, flags: {}, configPath: '/dev/null' });
    configureLogger({ level: loaded.config['log-level'], format: loaded.config['log-format'], command: spec.name });

    const commandOptions: Record<string, string | boolean | string[] | undefined> = {};
    for (const option of Object.keys(spec.options)) commandOptions[option] = values[option] as string | boolean | string[] | undefined;

    const controller = new AbortController();
    let interrupts = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      if (++interrupts > 1) process.exit(130);
      controller.abort(new PgarkError('STORAGE', `interrupted by ${signal}`, { exitCode: 130 }));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);

    // Settings given as flags are passed on to child pgark processes: as flags, except secrets,
    // which go through the environment (a command line is visible to every user in `ps`).
    const forwardArgs: string[] = values.config ? ['--config', values.config as string] : [];
    const forwardEnv: Record<string, string> = {};
    for (const [key, value] of Object.entries(flags)) {
      if (value === undefined) continue;
      if (SETTINGS_BY_KEY.get(key)?.secret) forwardEnv[envNameOf(key)] = [value].flat().join(',');
      else if (typeof value === 'boolean') forwardArgs.push(value ? `--${key}` : '');
      else for (const item of [value].flat()) forwardArgs.push(`--${key}`, item);
    }

    const command = await spec.load();
    let code: number | void;
    try {
      code = await command.run({ args: positionals, options: commandOptions, loaded, json: Boolean(values.json), signal: controller.signal, forwardArgs: forwardArgs.filter(Boolean), forwardEnv });
    } catch (error) {
      // Whatever broke because of the signal (an aborted request, a destroyed pipeline), the
      // user interrupted us: say that, with exit status 130.
      if (controller.signal.aborted) throw controller.signal.reason;
      throw error;
    }
    return code ?? 0;
  } catch (error) {
    return reportError(error, debug, spec?.name);
  }
}
