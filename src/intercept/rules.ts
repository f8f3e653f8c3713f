import type { InterceptSpec } from '../gen/rdbg/v1/InterceptSpec';
import type { HeaderMatch } from '../gen/rdbg/v1/HeaderMatch';
import { Codes, RdbgError } from '../core/errors';

/** An intercept with no header and no path filter takes the whole port at the TCP level. */
export function isGlobal(spec: InterceptSpec): boolean {
  return (spec.headers?.length ?? 0) === 0 && !spec.path_prefix;
}

/** Parse `NAME=VALUE` or `NAME=~REGEX` from the command line. */
export function parseHeaderFlag(text: string): HeaderMatch {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new RdbgError(Codes.BAD_ARGUMENT, `--header "${text}" must look like NAME=VALUE or NAME=~REGEX`);
  const name = text.slice(0, eq).trim().toLowerCase();
  if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) {
    throw new RdbgError(Codes.BAD_ARGUMENT, `--header "${text}": "${name}" is not a valid HTTP header name`);
  }
  let value = text.slice(eq + 1);
  const regex = value.startsWith('~');
  if (regex) {
    value = value.slice(1);
    try {
      new RegExp(value);
    } catch (err) {
      throw new RdbgError(Codes.BAD_ARGUMENT, `--header "${text}": bad regular expression: ${(err as Error).message}`);
    }
  }
  return { name, value, regex };
}

/** A canonical text for a rule: two intercepts with equal keys compete for the same requests. */
export function ruleKey(spec: InterceptSpec): string {
  const headers = (spec.headers ?? [])
    .map((h) => `${(h.name ?? '').toLowerCase()}${h.regex ? '=~' : '='}${h.value ?? ''}`)
    .sort();
  return JSON.stringify({ headers, path: spec.path_prefix ?? '' });
}

export function describeRule(spec: InterceptSpec): string {
  const parts = (spec.headers ?? []).map((h) => `header ${h.name}${h.regex ? '=~' : '='}${h.value}`);
  if (spec.path_prefix) parts.push(`path prefix ${spec.path_prefix}`);
  if (parts.length === 0) parts.push(spec.replace ? 'all traffic, app stopped (replace)' : 'all traffic');
  return parts.join(', ') + (spec.mirror ? ' (mirror)' : '');
}

/** A compiled rule, for matching requests in the agent. */
export interface CompiledRule {
  matches(headers: Record<string, string | string[] | undefined>, path: string): boolean;
}

export function compileRule(spec: InterceptSpec): CompiledRule {
  const checks = (spec.headers ?? []).map((h) => {
    const name = (h.name ?? '').toLowerCase();
    const re = h.regex ? new RegExp(`^(?:${h.value ?? ''})$`) : undefined;
    return (headers: Record<string, string | string[] | undefined>): boolean => {
      const v = headers[name];
      const values = Array.isArray(v) ? v : v === undefined ? [] : [v];
      return values.some((x) => (re ? re.test(x) : x === h.value));
    };
  });
  const prefix = spec.path_prefix ?? '';
  return {
    matches(headers, path) {
      if (prefix && !path.startsWith(prefix)) return false;
      return checks.every((c) => c(headers));
    },
  };
}
