import { parseArgs, type ParseArgsConfig } from 'node:util';
import { Codes, RdbgError } from '../core/errors';
import { GLOBAL_FLAGS, type Flags } from './spec';

export type Options = NonNullable<ParseArgsConfig['options']>;

type Parsed<F extends Flags> = ReturnType<typeof parseArgs<{ options: F; allowPositionals: true; strict: true }>>;

/** node:util's part of a flag table (its own help, choices and completion stay here). */
function utilOptions(flags: Flags): Options {
  const out: Options = {};
  for (const [name, f] of Object.entries({ ...GLOBAL_FLAGS, ...flags })) {
    out[name] = { type: f.type, ...(f.short ? { short: f.short } : {}), ...(f.multiple ? { multiple: true } : {}), ...(f.default !== undefined ? { default: f.default } : {}) } as Options[string];
  }
  return out;
}

/**
 * A command's arguments by its flag table (src/cli/spec.ts), with errors a
 * user can read: an unknown flag, a missing value or a value outside a flag's
 * choices is a usage error (RDBG_BAD_ARGUMENT, exit 2) that names the choices.
 */
export function parse<F extends Flags>(command: string, argv: string[], flags: F, allowPositionals = false): Parsed<F> {
  const hint = `run "rdbg ${command} --help"`;
  let parsed: Parsed<F>;
  try {
    parsed = parseArgs({ args: argv, options: utilOptions(flags), allowPositionals, strict: true }) as unknown as Parsed<F>;
  } catch (err) {
    throw new RdbgError(Codes.BAD_ARGUMENT, `${command}: ${usageError(err as Error & { code?: string })}`, hint);
  }
  const values = parsed.values as Record<string, unknown>;
  for (const [name, f] of Object.entries(flags)) {
    if (!f.choices || values[name] === undefined) continue;
    for (const v of asList(values[name] as string | string[])) {
      if (!f.choices.includes(v)) {
        const flag = f.short ? `-${f.short}` : `--${name}`;
        throw new RdbgError(Codes.BAD_ARGUMENT, `${command}: ${flag} "${v}" is not one of ${f.choices.join(', ')}`, hint);
      }
    }
  }
  return parsed;
}

/** node:util's parse error in our words (its own wording changes between Node lines). */
function usageError(err: Error & { code?: string }): string {
  const quoted = /'([^']+)'/.exec(err.message)?.[1] ?? '';
  const flag = quoted.split(/[ ,]+/).find((w) => w.startsWith('--')) ?? quoted;
  switch (err.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown flag "${flag}"`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument "${quoted}"`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return /argument missing/.test(err.message) ? `${flag} needs a value` : `${flag} takes no value`;
    default:
      return err.message;
  }
}

export function asList(v: string | boolean | (string | boolean)[] | undefined): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}
