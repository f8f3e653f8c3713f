/**
 * Structured logs: one JSON object a line on stderr (daemons and cluster
 * components). The level is read from RDBG_LOG_LEVEL and can be changed at
 * run time with setLevel (the daemons do so on SIGUSR2).
 */
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
export type Level = keyof typeof LEVELS;

let current: number = LEVELS[(process.env.RDBG_LOG_LEVEL as Level) ?? 'info'] ?? LEVELS.info;
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');

export function setLevel(level: Level): void {
  current = LEVELS[level];
}

export function getLevel(): Level {
  return (Object.keys(LEVELS) as Level[]).find((k) => LEVELS[k] === current) ?? 'info';
}

export function setSink(fn: (line: string) => void): void {
  sink = fn;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  enabled(level: Level): boolean;
}

export function logger(component: string): Logger {
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>): void => {
    if (LEVELS[level] < current) return;
    sink(JSON.stringify({ time: new Date().toISOString(), level, component, msg, ...fields }));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    enabled: (level) => LEVELS[level] >= current,
  };
}

/** Cycle debug <-> the configured level on SIGUSR2, so a running daemon can be traced. */
export function toggleDebugOnSignal(): void {
  const base = current;
  process.on('SIGUSR2', () => {
    current = current === LEVELS.debug ? base : LEVELS.debug;
  });
}
