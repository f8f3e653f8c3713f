import type { CliConfig } from '../core/config';

/** What every CLI command is given by src/cli/main.ts: the settings read once, and the environment its children inherit. */
export interface CliContext {
  config: CliConfig;
  /** handed unchanged to the processes the CLI starts (the user daemon, a command run with a pod's environment) */
  childEnv: NodeJS.ProcessEnv;
}

const atEnd: (() => void)[] = [];

/** Runs `fn` when the command ends (src/cli/main.ts), however it ends: e.g. closing the connections it shares. */
export function atCommandEnd(fn: () => void): void {
  atEnd.push(fn);
}

export function commandEnded(): void {
  for (const fn of atEnd.splice(0)) fn();
}
