/**
 * Loads the configuration from the config file, the environment and the flags (in that order
 * of precedence, flags winning), validating every value against the schema in settings.ts.
 * A bad value is reported in one line naming the key and where it came from.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { PgarkError } from '../errors.ts';
import { parseDuration, parseSize } from '../util/units.ts';
import { DEFAULT_CONFIG_PATH, envNameOf, SETTINGS, SETTINGS_BY_KEY, type SettingKey, type SettingSpec, type SettingType } from './settings.ts';

export { DEFAULT_CONFIG_PATH };

type ValueOf<T extends SettingType> = T extends { kind: 'list' }
  ? string[]
  : T extends { kind: 'boolean' }
    ? boolean
    : T extends { kind: 'integer' | 'size' | 'duration' }
      ? number
      : T extends { kind: 'enum'; values: readonly (infer V)[] }
        ? V
        : string;

type Spec = (typeof SETTINGS)[number];
type HasDefault<S> = S extends { default: unknown } ? true : false;

/** The resolved configuration, keyed like the config file. Settings without default may be undefined. */
export type Config = {
  readonly [S in Spec as S['key']]: HasDefault<S> extends true ? ValueOf<S['type']> : ValueOf<S['type']> | undefined;
};

/** Environment variables with the PGARK_ prefix that are not settings. */
const RESERVED_ENV = new Set(['PGARK_CONFIG', 'PGARK_DEBUG']);
const RESERVED_ENV_PREFIXES = ['PGARK_TEST_', 'PGARK_BENCH_', 'PGARK_INTERNAL_'];

export interface ConfigSources {
  /** Path given by --config or PGARK_CONFIG; when absent the default path is read if it exists. */
  configPath?: string;
  env: NodeJS.ProcessEnv;
  /** Raw flag values from the command line, keyed by setting key. */
  flags: Record<string, string | string[] | boolean | undefined>;
}

export interface LoadedConfig {
  config: Config;
  /** Where each set value came from, e.g. "flag --repo": used in error messages. */
  origin: ReadonlyMap<SettingKey, string>;
  configPath: string | undefined;
}

const TRUE_WORDS = new Set(['true', 'yes', 'on', '1']);
const FALSE_WORDS = new Set(['false', 'no', 'off', '0']);

function describeType(type: SettingType): string {
  switch (type.kind) {
    case 'string': return 'a string';
    case 'list': return 'a list of strings';
    case 'boolean': return 'true or false';
    case 'integer': return `an integer from ${type.min} to ${type.max}`;
    case 'size': return `a size such as 8MiB or 1G${type.min ? ` (at least ${type.min} bytes)` : ''}`;
    case 'duration': return 'a duration such as 30s, 5m or 250ms';
    case 'enum': return `one of ${type.values.map((v) => (v === '' ? '""' : v)).join(', ')}`;
  }
}

/** The zod schema of one setting. `fromText` is true for env and flags, where every value is a string. */
function schemaOf(spec: SettingSpec, fromText: boolean): z.ZodType<unknown> {
  const message = `must be ${describeType(spec.type)}`;
  const type = spec.type;
  switch (type.kind) {
    case 'string':
      return z.union([z.string(), z.number()], { error: message }).transform(String);
    case 'list':
      return fromText
        ? z.union([z.string(), z.array(z.string())], { error: message }).transform((v) =>
            (Array.isArray(v) ? v : [v]).flatMap((item) => item.split(',')).map((s) => s.trim()).filter(Boolean))
        : z.union([z.string().transform((s) => [s]), z.array(z.string())], { error: message });
    case 'boolean':
      return z.union([z.boolean(), z.string()], { error: message }).transform((v, ctx) => {
        if (typeof v === 'boolean') return v;
        const word = v.trim().toLowerCase();
        if (TRUE_WORDS.has(word)) return true;
        if (FALSE_WORDS.has(word)) return false;
        ctx.addIssue({ code: 'custom', message });
        return z.NEVER;
      });
    case 'integer':
      return z.union([z.number(), z.string()], { error: message }).transform((v, ctx) => {
        const n = typeof v === 'number' ? v : /^\s*-?\d+\s*$/.test(v) ? Number(v) : NaN;
        if (!Number.isInteger(n) || n < type.min || n > type.max) {
          ctx.addIssue({ code: 'custom', message });
          return z.NEVER;
        }
        return n;
      });
    case 'size':
    case 'duration':
      return z.union([z.number(), z.string()], { error: message }).transform((v, ctx) => {
        const n = type.kind === 'size' ? parseSize(v) : parseDuration(v);
        if (n === undefined || (type.kind === 'size' && type.min !== undefined && n !== 0 && n < type.min)) {
          ctx.addIssue({ code: 'custom', message });
          return z.NEVER;
        }
        return n;
      });
    case 'enum':
      return z.enum(type.values as [string, ...string[]], { error: message });
  }
}

function closestKey(unknownKey: string): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const key of SETTINGS_BY_KEY.keys()) {
    const d = editDistance(unknownKey.toLowerCase().replaceAll('_', '-'), key);
    if (d < bestDistance) {
      bestDistance = d;
      best = key;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(unknownKey.length / 4)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previousDiagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const saved = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previousDiagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      previousDiagonal = saved;
    }
  }
  return row[b.length]!;
}

function unknownSettingError(source: string, name: string, key: string): PgarkError {
  const suggestion = closestKey(key);
  return new PgarkError('CONFIG', `${source}: unknown setting "${name}"`, {
    hint: suggestion ? `did you mean "${suggestion}"? (\`pgark help settings\` lists them all)` : '`pgark help settings` lists every setting',
  });
}

function validate(spec: SettingSpec, raw: unknown, source: string, fromText: boolean): unknown {
  const result = schemaOf(spec, fromText).safeParse(raw);
  if (result.success) return result.data;
  // Secrets are never echoed back, not even when malformed.
  const shown = spec.secret ? '' : ` (got ${JSON.stringify(raw)})`;
  throw new PgarkError('CONFIG', `${source}: ${spec.key} ${result.error.issues[0]?.message ?? 'is invalid'}${shown}`);
}

function readConfigFile(path: string, explicit: boolean): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !explicit) return undefined;
    throw new PgarkError('CONFIG', `cannot read config file ${path}: ${code === 'ENOENT' ? 'no such file' : (error as Error).message}`, {
      hint: explicit ? 'check the --config / PGARK_CONFIG path' : undefined,
    });
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (error) {
    const where = error instanceof YAMLParseError && error.linePos ? ` at line ${error.linePos[0].line}` : '';
    throw new PgarkError('CONFIG', `config file ${path}: invalid YAML${where}`, { hint: 'settings are "key: value" lines, e.g. "repo: s3://bucket/prefix"' });
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new PgarkError('CONFIG', `config file ${path}: expected "key: value" settings at the top level`);
  }
  return parsed as Record<string, unknown>;
}

export function loadConfig(sources: ConfigSources): LoadedConfig {
  const values = new Map<SettingKey, unknown>();
  const origin = new Map<SettingKey, string>();

  for (const spec of SETTINGS) {
    if ('default' in spec) values.set(spec.key, validate(spec, spec.default, 'default', true));
  }

  const explicitPath = sources.configPath ?? sources.env.PGARK_CONFIG;
  const configPath = explicitPath ?? DEFAULT_CONFIG_PATH;
  const fileValues = readConfigFile(configPath, explicitPath !== undefined);
  if (fileValues) {
    for (const [name, raw] of Object.entries(fileValues)) {
      const spec = SETTINGS_BY_KEY.get(name);
      const source = `config file ${configPath}`;
      if (!spec) throw unknownSettingError(source, name, name);
      if (raw === null) continue; // "key:" with no value means unset
      values.set(spec.key as SettingKey, validate(spec, raw, source, false));
      origin.set(spec.key as SettingKey, source);
    }
  }

  for (const [name, raw] of Object.entries(sources.env)) {
    if (!name.startsWith('PGARK_') || raw === undefined) continue;
    if (RESERVED_ENV.has(name) || RESERVED_ENV_PREFIXES.some((p) => name.startsWith(p))) continue;
    const key = name.slice('PGARK_'.length).toLowerCase().replaceAll('_', '-');
    const spec = SETTINGS_BY_KEY.get(key);
    const source = `environment ${name}`;
    if (!spec || envNameOf(spec.key) !== name) throw unknownSettingError('environment', name, key);
    values.set(spec.key as SettingKey, validate(spec, raw, source, true));
    origin.set(spec.key as SettingKey, source);
  }

  for (const [key, raw] of Object.entries(sources.flags)) {
    if (raw === undefined) continue;
    const spec = SETTINGS_BY_KEY.get(key);
    if (!spec) throw unknownSettingError('command line', `--${key}`, key);
    const source = `flag --${key}`;
    values.set(spec.key as SettingKey, validate(spec, raw, source, true));
    origin.set(spec.key as SettingKey, source);
  }

  return {
    config: Object.fromEntries(values) as unknown as Config,
    origin,
    configPath: fileValues ? configPath : undefined,
  };
}

/** The value of a setting a command cannot do without, or a clear error saying how to set it. */
export function requireSetting<K extends SettingKey>(loaded: LoadedConfig, key: K, why: string): NonNullable<Config[K]> {
  const value = loaded.config[key];
  if (value === undefined || value === '' || (Array.isArray(value) && value.length === 0)) {
    throw new PgarkError('CONFIG', `missing setting ${key}: ${why}`, {
      hint: `pass --${key}, set ${envNameOf(key)}, or add "${key}:" to ${loaded.configPath ?? DEFAULT_CONFIG_PATH}`,
    });
  }
  return value as NonNullable<Config[K]>;
}
