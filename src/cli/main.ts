import { RdbgError } from '../core/errors';
import { readConfig } from '../core/config';
import { setLevel, setTrace } from '../core/log';
import { commandEnded, type CliContext } from './context';
import { VERSION } from '../core/version';
import { say } from './output';

const usage = async (): Promise<string> => {
  const [{ CONNECT_USAGE }, { INTERCEPT_USAGE }, { DOCTOR_USAGE }, { MANAGER_ADMIN_USAGE }] = await Promise.all([
    import('./commands/connect'),
    import('./commands/intercept'),
    import('./commands/doctor'),
    import('./commands/manager-admin'),
  ]);
  return `rdbg ${VERSION}: run and debug one service on your laptop as if it were inside the cluster.

Commands:
  connect     reach the cluster's network (SOCKS5 proxy)        rdbg connect --manager HOST:PORT --socks 1080
  status      the session's health, subnets and counters        rdbg status [-o json]
  intercept   send a workload's requests to this machine        rdbg intercept echo --port 8080 --header x-dev=me
  leave       end an intercept                                  rdbg leave echo
  list        intercepts with their rules and counters          rdbg list [-o json] [--all]
  quit        end the session and stop the daemon               rdbg quit
  doctor      what would fail, checked before changing anything  rdbg doctor [-n NS]
  version     print the version                                 rdbg version
  manager     install, upgrade or run the traffic manager       rdbg manager install [--namespace rdbg]
  uninstall   take rdbg out of the cluster (agents and manager) rdbg uninstall --all
  agent       run a traffic agent beside an app                 rdbg agent run --manager HOST:PORT ...

Add --debug to any command for stack traces.

${CONNECT_USAGE}

${INTERCEPT_USAGE}

${DOCTOR_USAGE}

${MANAGER_ADMIN_USAGE}`;
};

type Command = (argv: string[], ctx: CliContext) => Promise<void>;

// Each command loads only its own module: the Kubernetes client alone is most of a CLI start.
const commands: Record<string, Command> = {
  connect: async (a, c) => (await import('./commands/connect')).connectCommand(a, c),
  status: async (a, c) => (await import('./commands/connect')).statusCommand(a, c),
  quit: async (a, c) => (await import('./commands/connect')).quitCommand(a, c),
  intercept: async (a, c) => (await import('./commands/intercept')).interceptCommand(a, c),
  leave: async (a, c) => (await import('./commands/intercept')).leaveCommand(a, c),
  list: async (a, c) => (await import('./commands/intercept')).listCommand(a, c),
  doctor: async (a, c) => (await import('./commands/doctor')).doctorCommand(a, c),
  manager: async (a, c) => (await import('./commands/manager-admin')).managerAdminCommand(a, c),
  uninstall: async (a, c) => (await import('./commands/manager-admin')).uninstallCommand(a, c),
  version: async () => say(`rdbg ${VERSION}`),
  help: async () => say(await usage()),
};

export async function cliMain(argv: string[]): Promise<void> {
  const debug = argv.includes('--debug');
  const args = argv.filter((a) => a !== '--debug');
  const name = args[0] ?? 'help';
  const run = commands[name === '--help' || name === '-h' ? 'help' : name];
  if (!run) {
    process.stderr.write(`rdbg: unknown command "${name}"; run "rdbg help"\n`);
    process.exitCode = 2;
    return;
  }
  try {
    const config = readConfig('cli');
    // The CLI talks to people: its components' info logs (port-forwards, API calls) are noise here.
    setLevel(config.logLevel ?? (debug ? 'debug' : 'warn'));
    setTrace(config.trace);
    await run(args.slice(1), { config, childEnv: process.env });
  } catch (err) {
    if (debug) process.stderr.write(`${(err as Error)?.stack}\n`);
    if (err instanceof RdbgError) {
      process.stderr.write(`rdbg: ${err.message}\n${err.hint ? `  hint: ${err.hint}\n` : ''}`);
    } else {
      process.stderr.write(`rdbg: ${(err as Error)?.message ?? String(err)}\n  (run with --debug for details)\n`);
    }
    process.exitCode = 1;
  } finally {
    commandEnded();
  }
}
