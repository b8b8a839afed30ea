/**
 * Logging to stderr (stdout carries data, e.g. `pgark get` output). Human-readable lines on a
 * TTY, JSON lines otherwise, so that PostgreSQL's log (archive_command's stderr) and log
 * shippers get one parseable record per event. Never pass secrets in fields: nothing here
 * redacts them.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'auto' | 'text' | 'json';
export type LogFields = Record<string, string | number | boolean | null | undefined>;

const LEVEL_ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

interface LoggerState {
  level: LogLevel;
  json: boolean;
  command: string | undefined;
}

const state: LoggerState = {
  level: 'info',
  json: !process.stderr.isTTY,
  command: undefined,
};

export function configureLogger(options: { level?: LogLevel; format?: LogFormat; command?: string }): void {
  if (options.level) state.level = options.level;
  if (options.format) state.json = options.format === 'json' || (options.format === 'auto' && !process.stderr.isTTY);
  if (options.command !== undefined) state.command = options.command;
}

export function isJsonLogging(): boolean {
  return state.json;
}

function emit(level: LogLevel, message: string, fields: LogFields = {}): void {
  if (LEVEL_ORDER[level] < LEVEL_ORDER[state.level]) return;
  const time = new Date();
  let line: string;
  if (state.json) {
    line = JSON.stringify({ time: time.toISOString(), level, cmd: state.command, msg: message, ...fields });
  } else {
    const extras = Object.entries(fields)
      .filter(([, value]) => value !== undefined)
      .map(([key, value]) => `${key}=${typeof value === 'string' && /\s/.test(value) ? JSON.stringify(value) : String(value)}`)
      .join(' ');
    const stamp = time.toISOString().replace('T', ' ').slice(0, 19);
    line = `${stamp} ${level.toUpperCase().padEnd(5)} ${message}${extras ? ' ' + extras : ''}`;
  }
  clearProgressLine();
  process.stderr.write(line + '\n');
}

export const log = {
  debug: (message: string, fields?: LogFields) => emit('debug', message, fields),
  info: (message: string, fields?: LogFields) => emit('info', message, fields),
  warn: (message: string, fields?: LogFields) => emit('warn', message, fields),
  error: (message: string, fields?: LogFields) => emit('error', message, fields),
};

// A progress bar owns the last line of a TTY; a log line must erase it first.
let progressLineVisible = false;
export function setProgressLineVisible(visible: boolean): void {
  progressLineVisible = visible;
}
function clearProgressLine(): void {
  if (progressLineVisible && process.stderr.isTTY) {
    process.stderr.write('\r\x1b[2K');
    progressLineVisible = false;
  }
}
