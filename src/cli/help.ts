import { VERSION } from '../core/version';
import { COMMANDS, GLOBAL_FLAGS, type CommandSpec, type FlagSpec, type Flags } from './spec';

const WIDTH = 100;

function flagLeft(name: string, f: FlagSpec): string {
  const short = f.short ? `-${f.short}, ` : '    ';
  const value = f.type === 'string' ? ` ${f.choices ? f.choices.join('|') : (f.value ?? 'VALUE')}` : '';
  return `${short}--${name}${value}`;
}

function flagRight(f: FlagSpec): string {
  const extra = [
    f.multiple ? 'repeatable' : '',
    f.default !== undefined && f.default !== false ? `default ${String(f.default)}` : '',
  ].filter(Boolean);
  return extra.length ? `${f.help} (${extra.join('; ')})` : f.help;
}

/** Two columns, the right one wrapped under itself. */
function columns(rows: [string, string][], indent = 2): string[] {
  const left = Math.min(34, Math.max(...rows.map(([l]) => l.length)));
  const out: string[] = [];
  for (const [l, r] of rows) {
    const pad = ' '.repeat(indent);
    const room = Math.max(30, WIDTH - indent - left - 2);
    const words = r.split(' ');
    const lines: string[] = [];
    let line = '';
    for (const w of words) {
      if (line && line.length + 1 + w.length > room) {
        lines.push(line);
        line = w;
      } else line = line ? `${line} ${w}` : w;
    }
    lines.push(line);
    if (l.length > left) {
      out.push(pad + l);
      for (const x of lines) out.push(pad + ' '.repeat(left + 2) + x);
    } else {
      out.push(pad + l.padEnd(left + 2) + lines[0]);
      for (const x of lines.slice(1)) out.push(pad + ' '.repeat(left + 2) + x);
    }
  }
  return out;
}

function flagLines(flags: Flags): string[] {
  return columns(Object.entries(flags).map(([name, f]) => [flagLeft(name, f), flagRight(f)]));
}

/** `rdbg CMD --help`, `rdbg help CMD`: the usage, what it does, its flags and examples. */
export function commandHelp(path: readonly string[], spec: CommandSpec): string {
  const parts: string[] = [`rdbg ${path.join(' ')}: ${spec.summary}`, '', 'Usage:', ...spec.usage.map((u) => `  rdbg ${u}`)];
  if (spec.about) parts.push('', spec.about);
  if (spec.sub) {
    parts.push('', 'Commands:', ...columns(Object.entries(spec.sub).map(([name, s]) => [name, s.summary])));
  }
  if (Object.keys(spec.flags).length) parts.push('', 'Flags:', ...flagLines(spec.flags));
  parts.push('', 'Global flags:', ...flagLines(GLOBAL_FLAGS));
  if (spec.examples?.length) parts.push('', 'Examples:', ...spec.examples.map((e) => `  ${e}`));
  if (spec.sub) parts.push('', `Run "rdbg ${path.join(' ')} COMMAND --help" for a command's flags.`);
  return parts.join('\n');
}

/** `rdbg`, `rdbg help`, `rdbg --help`: every command in a line. */
export function overviewHelp(): string {
  const visible = Object.entries(COMMANDS).filter(([, c]) => !('hidden' in c && c.hidden));
  return [
    `rdbg ${VERSION}: run and debug one service on your laptop as if it were inside the cluster.`,
    '',
    'Usage:',
    '  rdbg COMMAND [flags]',
    '  kubectl rdbg COMMAND [flags]',
    '',
    'Commands:',
    ...columns(visible.map(([name, c]) => [name, c.summary])),
    '',
    'Global flags:',
    ...flagLines(GLOBAL_FLAGS),
    '      --version                   print the version',
    '',
    'Run "rdbg help COMMAND" or "rdbg COMMAND --help" for a command\'s flags and examples.',
    'Exit codes: 0 done, 1 failed, 2 usage error (a wrong command, flag or value); see docs/cli.md.',
  ].join('\n');
}
