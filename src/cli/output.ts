import { Status } from '../rpc/local-client';
import { Codes, RdbgError } from '../core/errors';

export function say(line = ''): void {
  process.stdout.write(line + '\n');
}

/**
 * What a user reads as data (-o json|yaml): JSON with two-space indent, or
 * YAML of the same object (js-yaml, loaded only here: YAML is rare and the
 * CLI's start is not).
 */
export function printData(format: string, data: unknown): void {
  if (format === 'json') return say(JSON.stringify(data, null, 2));
  if (format !== 'yaml') throw new RdbgError(Codes.BAD_ARGUMENT, `-o "${format}" is not one of json, yaml`);
  const yaml = require('js-yaml') as typeof import('js-yaml');
  process.stdout.write(yaml.dump(data, { noRefs: true, lineWidth: -1 }));
}

export function progress(line: string): void {
  process.stderr.write(`  ${line}\n`);
}

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (cell ?? '').padEnd(widths[c])).join('  ').trimEnd()).join('\n');
}

/** A gRPC error (code, details) from a daemon or the manager, as the user should read it. */
export function fromGrpc(err: unknown, what: string): RdbgError {
  const e = err as { code: unknown; details: string; message: string };
  if (e && typeof e.code === 'number') {
    if (e.code === Status.UNAVAILABLE) {
      return new RdbgError(Codes.NOT_CONNECTED, `${what}: the rdbg daemon is not running`, 'run "rdbg connect" first');
    }
    if (e.code === Status.ALREADY_EXISTS) return new RdbgError(Codes.INTERCEPT_CONFLICT, e.details);
    if (e.code === Status.NOT_FOUND) return new RdbgError(Codes.INTERCEPT_NOT_FOUND, e.details);
    if (e.code === Status.PERMISSION_DENIED) return new RdbgError(Codes.PERMISSION, e.details);
    if (e.code === Status.INVALID_ARGUMENT) return new RdbgError(Codes.BAD_ARGUMENT, `${what}: ${e.details || e.message}`);
    return new RdbgError(Codes.FAILED, `${what}: ${e.details || e.message}`);
  }
  return err instanceof RdbgError ? err : new RdbgError(Codes.INTERNAL, `${what}: ${(err as Error)?.message ?? String(err)}`);
}
