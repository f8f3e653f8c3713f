import { parseArgs, type ParseArgsConfig } from 'node:util';
import { Codes, RdbgError } from '../core/errors';

export type Options = NonNullable<ParseArgsConfig['options']>;

/** util.parseArgs with errors a user can read. */
export function parse<O extends Options>(command: string, argv: string[], options: O, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (err) {
    throw new RdbgError(Codes.BAD_ARGUMENT, `${command}: ${(err as Error).message}`, `run "rdbg ${command} --help"`);
  }
}

export function asList(v: string | boolean | (string | boolean)[] | undefined): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}
