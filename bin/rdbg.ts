#!/usr/bin/env -S node --
// ("node --": Node, on every line, takes an --env-file anywhere on its command line before a "--" as
// its own option, and exits when the file does not exist yet: `rdbg intercept ... --env-file F`.)
// The one rdbg binary: the CLI, and every component as a subcommand, so that
// one package (and one image) serves the laptop, the manager and the agent.
import * as nodeModule from 'node:module';
import { basename } from 'node:path';
import { exitCodeOf, RdbgError } from '../src/core/errors';
import { findCommand, wantsHelp } from '../src/cli/spec';
import { useBundledClients } from '../src/core/vendor';

// The lines rdbg is tested on (package.json's engines).
const NODE_MAJOR = Number(process.versions.node.split('.')[0]);
if (NODE_MAJOR < 22) {
  process.stderr.write(`rdbg: needs Node 22 or newer; this is Node ${process.versions.node}\n  hint: install a supported Node (22, 24 or 26) first on PATH\n`);
  process.exit(1);
}
// V8's compiled code kept between runs.
nodeModule.enableCompileCache();
// The Kubernetes client as one bundled file (src/core/vendor.ts).
useBundledClients();

// Each process loads only its own part: the root daemon and the agent must not
// carry the CLI's Kubernetes client (tens of MB of heap in a daemon whose
// memory budget is 150 MB at 10,000 connections).
const components: Record<string, () => Promise<(argv: string[]) => Promise<void>>> = {
  'manager serve': async () => (await import('../manager/main')).managerMain,
  'agent run': async () => (await import('../agent/main')).agentMain,
  'daemon-user': async () => (await import('../daemon/user/main')).userDaemonMain,
  'daemon-root': async () => (await import('../daemon/root/main')).rootDaemonMain,
};

/** A component runs itself; everything else, and a component's --help, is the CLI's. */
async function main(argv: string[]): Promise<void> {
  const found = findCommand(argv);
  const load = found && !wantsHelp(found.rest) ? components[found.path.join(' ')] : undefined;
  if (found && load) return (await load())(found.rest);
  return (await import('../src/cli/main')).cliMain(argv);
}

/** As kubectl's plugins are found: kubectl-rdbg is rdbg, kubectl_complete-rdbg its completion (cobra's __complete). */
function commandLine(): string[] {
  const args = process.argv.slice(2);
  return basename(process.argv[1] ?? '') === 'kubectl_complete-rdbg' ? ['__complete', ...args] : args;
}

main(commandLine()).catch((err: unknown) => {
  // A component's own errors (bad flags, a port in use) read as one sentence; bugs keep their stack.
  if (err instanceof RdbgError) {
    process.stderr.write(`rdbg: ${err.message}\n${err.hint ? `  hint: ${err.hint}\n` : ''}`);
  } else {
    process.stderr.write(`rdbg: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exit(exitCodeOf(err));
});
