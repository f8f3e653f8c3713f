#!/usr/bin/env -S node --
// ("node --": Node 20 takes an --env-file argument anywhere on its command line as its own option.)
// The one rdbg binary: the CLI, and every component as a subcommand, so that
// one package (and one image) serves the laptop, the manager and the agent.
import * as nodeModule from 'node:module';
import { RdbgError } from '../src/core/errors';
import { useBundledClients } from '../src/core/vendor';

// V8's compiled code kept between runs (Node 22.1 and later; older lines have no such call).
(nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache?.();
// The Kubernetes client as one bundled file (src/core/vendor.ts).
useBundledClients();

// Each process loads only its own part: the root daemon and the agent must not
// carry the CLI's Kubernetes client (tens of MB of heap in a daemon whose
// memory budget is 150 MB at 10,000 connections).
const components: Record<string, () => Promise<(argv: string[]) => Promise<void>>> = {
  manager: async () => (await import('../manager/main')).managerMain,
  agent: async () => (await import('../agent/main')).agentMain,
  'daemon-user': async () => (await import('../daemon/user/main')).userDaemonMain,
  'daemon-root': async () => (await import('../daemon/root/main')).rootDaemonMain,
};

/** "rdbg manager SUB" runs the CLI for these; the other manager subcommands (serve) run the component. */
const CLI_MANAGER_SUBCOMMANDS = ['install', 'upgrade'];

async function main(argv: string[]): Promise<void> {
  const load = components[argv[0]];
  const cliManager = argv[0] === 'manager' && CLI_MANAGER_SUBCOMMANDS.includes(argv[1]);
  if (load && !cliManager) return (await load())(argv.slice(1));
  return (await import('../src/cli/main')).cliMain(argv);
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
