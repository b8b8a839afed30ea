/** Help texts, generated from the command table and the settings table. */
import { envNameOf, SETTINGS, type SettingSpec } from '../config/settings.ts';
import { COMMANDS, type CommandSpec } from './commands.ts';

export function mainHelp(): string {
  const listed = COMMANDS.filter((c) => !c.hidden);
  const width = Math.max(...listed.map((c) => c.name.length));
  return [
    'pgark — backup and point-in-time restore of PostgreSQL to object storage',
    '',
    'Usage: pgark COMMAND [options]',
    '',
    'Commands:',
    ...listed.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Every command takes --help, --config FILE (default /etc/pgark/pgark.yaml), --debug,',
    'and any setting as --KEY VALUE (`pgark help settings` lists them).',
    'The repository: --repo URL or PGARK_REPO (file:///path, s3://bucket/prefix, azure://container/prefix).',
    '',
  ].join('\n');
}

export function commandHelp(spec: CommandSpec): string {
  const lines = [`Usage: ${spec.usage}`, '', spec.summary + '.'];
  if (spec.description) lines.push('', spec.description);
  const options = Object.entries(spec.options);
  if (options.length > 0) {
    lines.push('', 'Options:');
    for (const [name, option] of options) {
      const flag = `${option.short ? `-${option.short}, ` : ''}--${name}${option.type === 'string' ? ` ${option.valueName ?? 'VALUE'}` : ''}`;
      lines.push(`  ${flag.padEnd(26)} ${option.description}`);
    }
  }
  if (spec.usesConfig) {
    lines.push('', 'Settings: any setting as --KEY VALUE, PGARK_KEY or "key: value" in the config file;', '`pgark help settings` lists them.');
  }
  return lines.join('\n') + '\n';
}

function typeLabel(spec: SettingSpec): string {
  switch (spec.type.kind) {
    case 'enum': return spec.type.values.filter((v) => v !== '').join('|');
    case 'list': return 'list';
    case 'integer': return 'integer';
    default: return spec.type.kind;
  }
}

export function settingsHelp(): string {
  const lines = [
    'Settings (config file key / flag --KEY / environment PGARK_KEY; flags win over environment over file;',
    'a boolean is turned on with --KEY and off with --no-KEY):',
    '',
  ];
  let group = '';
  for (const spec of SETTINGS as readonly SettingSpec[]) {
    if (spec.group !== group) {
      group = spec.group;
      lines.push(`[${group}]`);
    }
    const defaultText = 'default' in spec && spec.default !== undefined && spec.default !== '' ? ` (default ${spec.default})` : '';
    lines.push(`  ${spec.key}  <${typeLabel(spec)}>  ${envNameOf(spec.key)}${spec.secret ? '  [secret]' : ''}`);
    lines.push(`      ${spec.description}${defaultText}`);
  }
  return lines.join('\n') + '\n';
}
