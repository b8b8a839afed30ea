/**
 * Logging to stderr (stdout carries data, e.g. `pgark get` output). Human-readable lines on a
 * TTY, JSON lines otherwise, so that PostgreSQL's log (archive_command's stderr) and log
 * shippers get one parseable record per event. Never pass secrets in fields: nothing here
 * redacts them.
 */
import { fs } from './node-fs.ts';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'auto' | 'text' | 'json';
export type LogFields = Record<string, string | number | boolean | null | undefined>;

const LEVEL_ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

interface LoggerState {
  level: LogLevel;
  format: LogFormat;
  command: string | undefined;
}

const state: LoggerState = {
  level: 'info',
  format: 'auto',
  command: undefined,
};

export function configureLogger(options: { level?: LogLevel; format?: LogFormat; command?: string }): void {
  if (options.level) state.level = options.level;
  if (options.format) state.format = options.format;
  if (options.command !== undefined) state.command = options.command;
}

/**
 * Whether stderr is a terminal, from fstat rather than process.stderr.isTTY: creating
 * process.stderr (a net.Socket on a pipe) loads the stream and network modules, ~8 ms of a
 * wal-push call that has a single line to log. (A character device that is not a terminal,
 * /dev/null, counts as one: nobody reads it.)
 */
let terminal: boolean | undefined;
function stderrIsTerminal(): boolean {
  if (terminal === undefined) {
    try {
      terminal = fs.fstatSync(2).isCharacterDevice();
    } catch {
      terminal = false;
    }
  }
  return terminal;
}

export function isJsonLogging(): boolean {
  return state.format === 'json' || (state.format === 'auto' && !stderrIsTerminal());
}

/**
 * Writes to fd 2 directly (see stderrIsTerminal); what cannot be written that way (a
 * non-blocking pipe that is full: EAGAIN) goes through process.stderr, which queues it.
 */
let throughStream = false;
function writeStderr(text: string): void {
  let bytes = Buffer.from(text);
  if (!throughStream) {
    try {
      while (bytes.length > 0) bytes = bytes.subarray(fs.writeSync(2, bytes));
      return;
    } catch {
      throughStream = true; // from now on, so that nothing overtakes what is queued
    }
  }
  process.stderr.write(bytes);
}

function emit(level: LogLevel, message: string, fields: LogFields = {}): void {
  if (LEVEL_ORDER[level] < LEVEL_ORDER[state.level]) return;
  const time = new Date();
  let line: string;
  if (isJsonLogging()) {
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
  writeStderr(line + '\n');
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
