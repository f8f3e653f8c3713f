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

export function splitHostPort(text: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new RdbgError(Codes.BAD_ARGUMENT, `${what} "${text}" must look like HOST:PORT`);
  return { host: m[1] ?? m[2] ?? '', port };
}

export function asList(v: string | boolean | (string | boolean)[] | undefined): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}
