/**
 * Structured logs: one JSON object a line on stderr (daemons and cluster
 * components). Each process's main sets the level and the trace categories
 * from its configuration (src/core/config.ts); the daemons toggle debug at
 * run time on SIGUSR2.
 *
 * A logger's name is dotted kebab-case words, `<where>.<what>[.<part>]`:
 * `where` is the process (rootd, userd, manager, agent) or the src/ library
 * (tunnel, kube). Each word is a trace category: RDBG_TRACE=dns turns on the
 * debug lines of every logger with a `dns` word, `rootd` those of the whole
 * root daemon, `all` every one.
 */
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
export type Level = keyof typeof LEVELS;

/** Every word of every logger's name (test/unit/config.test.ts checks this against the source). */
export const TRACE_CATEGORIES = [
  'rootd', 'userd', 'manager', 'agent', 'tunnel', 'kube',
  'tun', 'dns', 'resolv-conf', 'resolved', 'nat', 'udp', 'session', 'cleanup', 'watchdog',
  'link', 'divert', 'intercepts', 'socks', 'forward', 'h2', 'half-close',
  'data', 'webhook', 'claims', 'auth', 'discovery',
  'upstream', 'port', 'http1', 'http2', 'mirror', 'freezer', 'files', 'mounts', 'api', 'lookup',
] as const;

let current: number = LEVELS.info;
let traced: ReadonlySet<string> = new Set();
// Bumped when the level or the categories change, so a logger recomputes whether it is on only then.
let generation = 0;
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');

export function setLevel(level: Level): void {
  current = LEVELS[level];
  generation++;
}

export function getLevel(): Level {
  return (Object.keys(LEVELS) as Level[]).find((k) => LEVELS[k] === current) ?? 'info';
}

/** Debug logs for the loggers with one of these words in their name (`all`: every logger), whatever the level. */
export function setTrace(categories: readonly string[]): void {
  traced = new Set(categories);
  generation++;
}

export function getTrace(): string[] {
  return [...traced];
}

export function setSink(fn: (line: string) => void): void {
  sink = fn;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Whether a line of this level would be written: ask before building an expensive one. */
  enabled(level: Level): boolean;
}

export function logger(component: string): Logger {
  const words = component.split('.');
  let seen = -1;
  let tracing = false;
  const enabled = (level: Level): boolean => {
    if (LEVELS[level] >= current) return true;
    if (level !== 'debug') return false;
    if (seen !== generation) {
      seen = generation;
      tracing = traced.has('all') || words.some((w) => traced.has(w));
    }
    return tracing;
  };
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>): void => {
    if (!enabled(level)) return;
    sink(JSON.stringify({ time: new Date().toISOString(), level, component, msg, ...fields }));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    enabled,
  };
}

/** Cycle debug <-> the configured level on SIGUSR2, so a running daemon can be traced. */
export function toggleDebugOnSignal(): void {
  const base = current;
  process.on('SIGUSR2', () => {
    current = current === LEVELS.debug ? base : LEVELS.debug;
    generation++;
  });
}
