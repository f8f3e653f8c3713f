#!/usr/bin/env -S node --
// ("node --": Node 20 takes an --env-file argument anywhere on its command line as its own option.)
// The one rdbg binary: the CLI, and every component as a subcommand, so that
// one package (and one image) serves the laptop, the manager and the agent.
import { CLI_MANAGER_SUBCOMMANDS, cliMain } from '../src/cli/main';
import { RdbgError } from '../src/core/errors';
import { managerMain } from '../manager/main';
import { userDaemonMain } from '../daemon/user/main';
import { agentMain } from '../agent/main';
import { rootDaemonMain } from '../daemon/root/main';

const components: Record<string, (argv: string[]) => Promise<void>> = {
  manager: managerMain,
  agent: agentMain,
  'daemon-user': userDaemonMain,
  'daemon-root': rootDaemonMain,
};

async function main(argv: string[]): Promise<void> {
  const run = components[argv[0]];
  // "manager install|upgrade" are CLI commands; "manager serve" is the component
  const cliManager = argv[0] === 'manager' && CLI_MANAGER_SUBCOMMANDS.includes(argv[1]);
  if (run && !cliManager) return run(argv.slice(1));
  return cliMain(argv);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  // A component's own errors (bad flags, a port in use) read as one sentence; bugs keep their stack.
  if (err instanceof RdbgError) {
    process.stderr.write(`rdbg: ${err.message}\n${err.hint ? `  hint: ${err.hint}\n` : ''}`);
  } else {
    process.stderr.write(`rdbg: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exit(1);
});
