import { homedir } from 'node:os';
import { join } from 'node:path';
import { Codes, RdbgError } from './errors';
import { TRACE_CATEGORIES, type Level } from './log';

/**
 * Every environment variable rdbg reads, in one table: each process's main
 * calls readConfig once and hands the values on as options, so that no
 * library reads process.env. The README's table is generated from this one
 * (scripts/gen-env-table.js).
 */
export type Process = 'cli' | 'user' | 'root' | 'manager' | 'agent';

export interface Variable<T = unknown> {
  name: string;
  readBy: readonly Process[];
  /** what a value may be, for the README and for the error a bad one gets */
  accepts: string;
  /** the value when unset, as the README says it; '' for none */
  fallback: string;
  doc: string;
  /** the typed value of a set, non-empty variable; throws ConfigError when it is malformed */
  parse(text: string, name: string): T;
  /** the value when unset or empty */
  unset: T;
}

/** A malformed value of a variable (or of the flag that stands for one, named `--flag`). */
export class ConfigError extends RdbgError {
  constructor(name: string, text: string, accepts: string) {
    const flag = name.startsWith('--');
    super(Codes.BAD_ARGUMENT, `${name}${flag ? ' ' : '='}"${text}" is not valid: it takes ${accepts}`, flag ? undefined : `set ${name} to ${accepts}, or unset it`);
    this.name = 'ConfigError';
  }
}

// Parsers: each returns the typed value or throws ConfigError with what it accepts.

export function text(): (t: string) => string {
  return (t) => t;
}

export function wholeNumber(min: number, max: number, accepts: string): (t: string, name: string) => number {
  return (t, name) => {
    const n = /^\d+$/.test(t) ? Number(t) : NaN;
    if (!(n >= min && n <= max)) throw new ConfigError(name, t, accepts);
    return n;
  };
}

const TRUE = ['1', 'true', 'yes', 'on'];
const FALSE = ['0', 'false', 'no', 'off'];
export function bool(t: string, name: string): boolean {
  const v = t.toLowerCase();
  if (TRUE.includes(v)) return true;
  if (FALSE.includes(v)) return false;
  throw new ConfigError(name, t, 'one of 1, true, yes, on, 0, false, no, off');
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
/** "250ms", "5s", "2m", "1h", or plain milliseconds; in milliseconds. */
export function duration(t: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(t);
  if (!m) throw new ConfigError(name, t, 'a duration such as 250ms, 5s, 2m or 1h');
  return Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 'ms']);
}

/** A comma-separated list; blanks around items and empty items are dropped. */
export function list(t: string): string[] {
  return t.split(',').map((s) => s.trim()).filter(Boolean);
}

export function oneOf<T extends string>(choices: readonly T[]): (t: string, name: string) => T {
  return (t, name) => {
    if (!(choices as readonly string[]).includes(t)) throw new ConfigError(name, t, `one of ${choices.join(', ')}`);
    return t as T;
  };
}

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const satisfies readonly Level[];

/** `all`, or a comma-separated list of TRACE_CATEGORIES. */
export function traceList(t: string, name: string): string[] {
  const items = list(t);
  const bad = items.filter((c) => c !== 'all' && !(TRACE_CATEGORIES as readonly string[]).includes(c));
  if (bad.length) throw new ConfigError(name, t, `all or a comma-separated list of ${TRACE_CATEGORIES.join(', ')}`);
  return items;
}

function variable<const R extends readonly Process[], T>(v: Omit<Variable<T>, 'readBy'> & { readBy: R }): Variable<T> & { readBy: R } {
  return v;
}

const ALL = ['cli', 'user', 'root', 'manager', 'agent'] as const;

/** rdbg's own variables: the README's table. */
export const VARIABLES = {
  home: variable({
    name: 'RDBG_HOME', readBy: ['cli', 'user'], accepts: 'a directory', fallback: '`$XDG_RUNTIME_DIR/rdbg`, else `~/.cache/rdbg`',
    doc: "the user daemon's directory: socket, pid file, logs",
    parse: text(), unset: undefined as string | undefined,
  }),
  logLevel: variable({
    name: 'RDBG_LOG_LEVEL', readBy: ALL, accepts: LOG_LEVELS.join(', '), fallback: '`info` (the CLI: `warn`)',
    doc: 'the lowest level logged (rootd gets it as `--log-level`)',
    parse: oneOf(LOG_LEVELS), unset: undefined as Level | undefined,
  }),
  trace: variable({
    name: 'RDBG_TRACE', readBy: ALL, accepts: `\`all\` or a list of ${TRACE_CATEGORIES.join(', ')}`, fallback: 'none',
    doc: 'debug logs of the loggers with that word in their name (`dns`: `rootd.dns*`); rootd gets it as `--trace`',
    parse: traceList, unset: [] as string[],
  }),
  managerToken: variable({
    name: 'RDBG_MANAGER_TOKEN', readBy: ['user', 'manager'], accepts: 'a secret', fallback: 'none',
    doc: 'a token a standalone manager requires of clients and agents',
    parse: text(), unset: undefined as string | undefined,
  }),
  cpuProfile: variable({
    name: 'RDBG_CPU_PROFILE', readBy: ['user', 'root', 'manager'], accepts: 'a directory', fallback: 'none',
    doc: 'a CPU profile from start to quit in `DIR/<component>-<pid>.cpuprofile`',
    parse: text(), unset: undefined as string | undefined,
  }),
  rawFlowsMax: variable({
    name: 'RDBG_RAW_FLOWS_MAX', readBy: ['user', 'root'], accepts: 'a whole number', fallback: 'a quarter of the open-file limit',
    doc: 'raw TCP flows at once on the direct transport (`0`: every flow over HTTP/2)',
    parse: wholeNumber(0, 1_000_000, 'a whole number from 0 to 1000000'), unset: undefined as number | undefined,
  }),
  tunReader: variable({
    name: 'RDBG_TUN_READER', readBy: ['root'], accepts: '`event-loop`, `poll`', fallback: '`event-loop`',
    doc: '`poll`: read the TUN device on a worker thread instead of the event loop',
    parse: oneOf(['event-loop', 'poll'] as const), unset: 'event-loop' as 'event-loop' | 'poll',
  }),
  tcpCapture: variable({
    name: 'RDBG_TCP_CAPTURE', readBy: ['root'], accepts: '`kernel`, `tun`', fallback: '`kernel` where iptables and the kernel allow it',
    doc: '`tun`: read TCP to the cluster off the TUN device as packets instead of having netfilter redirect it to the daemon',
    parse: oneOf(['kernel', 'tun'] as const), unset: 'kernel' as 'kernel' | 'tun',
  }),
  manager: variable({
    name: 'RDBG_MANAGER', readBy: ['agent'], accepts: 'HOST:PORT', fallback: 'none',
    doc: '`--manager` when not given (set by the webhook)',
    parse: text(), unset: undefined as string | undefined,
  }),
  agentToken: variable({
    name: 'RDBG_AGENT_TOKEN', readBy: ['agent'], accepts: 'a secret', fallback: 'none',
    doc: 'the credential the agent presents to the manager',
    parse: text(), unset: '',
  }),
  agentTokenFile: variable({
    name: 'RDBG_AGENT_TOKEN_FILE', readBy: ['agent'], accepts: 'a file', fallback: 'none',
    doc: 'a file holding it, read at each arrival (a projected token)',
    parse: text(), unset: undefined as string | undefined,
  }),
  agentFilesRoot: variable({
    name: 'RDBG_AGENT_FILES_ROOT', readBy: ['agent'], accepts: 'a directory', fallback: '`/rdbg/app`',
    doc: 'the app\'s volumes as the agent sees them, served to `intercept --mount` (the webhook mounts them there)',
    parse: text(), unset: '/rdbg/app',
  }),
  agentEnv: variable({
    name: 'RDBG_AGENT_ENV', readBy: ['agent'], accepts: 'a list of names', fallback: 'none',
    doc: "names of the agent's own variables, not reported as the app's (set by the webhook)",
    parse: list, unset: [] as string[],
  }),
  agentImage: variable({
    name: 'RDBG_AGENT_IMAGE', readBy: ['manager'], accepts: 'an image', fallback: 'none',
    doc: 'the image of injected agents (the Deployment sets the manager\'s own)',
    parse: text(), unset: undefined as string | undefined,
  }),
  agentPullPolicy: variable({
    name: 'RDBG_AGENT_PULL_POLICY', readBy: ['manager'], accepts: '`Always`, `IfNotPresent`, `Never`', fallback: '`IfNotPresent`',
    doc: 'the imagePullPolicy of injected agents',
    parse: oneOf(['Always', 'IfNotPresent', 'Never'] as const), unset: 'IfNotPresent' as 'Always' | 'IfNotPresent' | 'Never',
  }),
} as const;

/** Variables that are not rdbg's own but that its libraries need: read here too, not in the README's table. */
/** Variables rdbg gives the command it runs (`intercept ... -- COMMAND`), beside the pod's environment; it reads none of them. */
export const COMMAND_VARIABLES = {
  RDBG_ROOT: "the directory holding the pod's files (`--mount DIR`, `--copy-files DIR`)",
} as const;

export const SYSTEM_VARIABLES = {
  xdgRuntimeDir: variable({
    name: 'XDG_RUNTIME_DIR', readBy: ['cli', 'user'], accepts: 'a directory', fallback: '', doc: '', parse: text(), unset: undefined as string | undefined,
  }),
  kubeconfig: variable({
    name: 'KUBECONFIG', readBy: ['cli', 'user'], accepts: 'a list of files', fallback: '', doc: '', parse: text(), unset: undefined as string | undefined,
  }),
  podName: variable({
    name: 'POD_NAME', readBy: ['agent'], accepts: 'a name', fallback: '', doc: '', parse: text(), unset: undefined as string | undefined,
  }),
  podIp: variable({
    name: 'POD_IP', readBy: ['agent'], accepts: 'an address', fallback: '', doc: '', parse: text(), unset: undefined as string | undefined,
  }),
} as const;

type Table = typeof VARIABLES & typeof SYSTEM_VARIABLES;
type ValueOf<V> = V extends Variable<infer T> ? T : never;

/** The settings process P reads, typed. */
export type Config<P extends Process> = {
  -readonly [K in keyof Table as P extends Table[K]['readBy'][number] ? K : never]: ValueOf<Table[K]>;
};

export type CliConfig = Config<'cli'> & { runtimeDir: string };
export type UserConfig = Config<'user'> & { runtimeDir: string };
export type RootConfig = Config<'root'>;
export type ManagerConfig = Config<'manager'>;
export type AgentConfig = Config<'agent'>;

/** Reads and checks the variables of one process; a malformed value is a ConfigError naming the variable. */
export function readConfig(proc: 'cli', env?: NodeJS.ProcessEnv): CliConfig;
export function readConfig(proc: 'user', env?: NodeJS.ProcessEnv): UserConfig;
export function readConfig(proc: 'root', env?: NodeJS.ProcessEnv): RootConfig;
export function readConfig(proc: 'manager', env?: NodeJS.ProcessEnv): ManagerConfig;
export function readConfig(proc: 'agent', env?: NodeJS.ProcessEnv): AgentConfig;
export function readConfig(proc: Process, env: NodeJS.ProcessEnv = process.env): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries({ ...VARIABLES, ...SYSTEM_VARIABLES }) as [string, Variable][]) {
    if (!v.readBy.includes(proc)) continue;
    const raw = env[v.name];
    out[key] = raw === undefined || raw === '' ? v.unset : v.parse(raw, v.name);
  }
  if (proc === 'cli' || proc === 'user') out.runtimeDir = runtimeDirOf(out.home as string | undefined, out.xdgRuntimeDir as string | undefined);
  return out;
}

/** RDBG_HOME wins (tests give each sandbox its own); then XDG_RUNTIME_DIR; then ~/.cache. */
function runtimeDirOf(home: string | undefined, xdg: string | undefined): string {
  return home ?? (xdg ? join(xdg, 'rdbg') : join(homedir(), '.cache', 'rdbg'));
}
