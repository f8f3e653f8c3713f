import { Codes, exitCodeOf, RdbgError } from '../core/errors';
import { readConfig } from '../core/config';
import { setLevel, setTrace } from '../core/log';
import { commandEnded, type CliContext } from './context';
import { VERSION } from '../core/version';
import { say } from './output';
import { COMMANDS, findCommand, ownArgs, wantsHelp, type CommandSpec } from './spec';
import { commandHelp, overviewHelp } from './help';

type Command = (argv: string[], ctx: CliContext) => Promise<void>;

// Each command loads only its own module: the Kubernetes client alone is most of a CLI start.
const commands: Record<string, Command> = {
  connect: async (a, c) => (await import('./commands/connect')).connectCommand(a, c),
  status: async (a, c) => (await import('./commands/connect')).statusCommand(a, c),
  quit: async (a, c) => (await import('./commands/connect')).quitCommand(a, c),
  intercept: async (a, c) => (await import('./commands/intercept')).interceptCommand(a, c),
  replace: async (a, c) => (await import('./commands/intercept')).interceptCommand(a, c, 'replace'),
  leave: async (a, c) => (await import('./commands/intercept')).leaveCommand(a, c),
  list: async (a, c) => (await import('./commands/intercept')).listCommand(a, c),
  doctor: async (a, c) => (await import('./commands/doctor')).doctorCommand(a, c),
  'manager install': async (a, c) => (await import('./commands/manager-admin')).managerAdminCommand(['install', ...a], c),
  'manager upgrade': async (a, c) => (await import('./commands/manager-admin')).managerAdminCommand(['upgrade', ...a], c),
  uninstall: async (a, c) => (await import('./commands/manager-admin')).uninstallCommand(a, c),
  version: async (a, c) => (await import('./commands/version')).versionCommand(a, c),
  'gather-logs': async (a, c) => (await import('./commands/gather-logs')).gatherLogsCommand(a, c),
  completion: async (a) => (await import('./completion')).completionCommand(a),
  __complete: async (a, c) => (await import('./completion')).completeCommand(a, c),
  help: async (a) => {
    const found = findCommand(a);
    if (a.length && (!found || found.rest.length)) throw unknownCommand(a.join(' '));
    say(found ? commandHelp(found.path, found.spec) : overviewHelp());
  },
};

function unknownCommand(what: string, parent?: { path: string[]; spec: CommandSpec }): RdbgError {
  const names = Object.entries(parent?.spec.sub ?? COMMANDS).filter(([, c]) => !c.hidden).map(([n]) => n);
  const help = parent ? `rdbg ${parent.path.join(' ')} --help` : 'rdbg help';
  return new RdbgError(Codes.BAD_ARGUMENT, `unknown command "${what}"`, `the commands: ${names.join(', ')}; run "${help}"`);
}

/**
 * The CLI: finds the command, answers --help / -h (anywhere before a `--`)
 * with its help and nothing else, runs it, and turns an error into one
 * sentence, a hint and the exit code of docs/cli.md.
 */
export async function cliMain(argv: string[]): Promise<void> {
  // `rdbg list | head -1`: the reader went away; stop quietly, as a program stopped by SIGPIPE (128 + 13).
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(141);
  });
  const own = ownArgs(argv);
  const debug = own.includes('--debug');
  const args = debug ? [...own.filter((a) => a !== '--debug'), ...argv.slice(own.length)] : argv;
  try {
    if (args[0] === '--version') return say(`rdbg ${VERSION}`);
    if (args.length === 0 || args[0] === '--help' || args[0] === '-h') return say(overviewHelp());
    if (args[0] === '__complete') return await run('__complete', args.slice(1), debug);
    const found = findCommand(args);
    if (!found) throw unknownCommand(args[0]);
    if (wantsHelp(found.rest)) return say(commandHelp(found.path, found.spec));
    if (found.spec.sub) {
      // "rdbg manager": its subcommands; "rdbg manager nosuch": a usage error.
      if (found.rest.length === 0) return say(commandHelp(found.path, found.spec));
      throw unknownCommand(`${found.path.join(' ')} ${found.rest[0]}`, found);
    }
    await run(found.path.join(' '), found.rest, debug);
  } catch (err) {
    report(err, debug);
  } finally {
    commandEnded();
  }
}

async function run(name: string, argv: string[], debug: boolean): Promise<void> {
  const command = commands[name];
  // The components (manager serve, agent run, the daemons) start from bin/rdbg.ts; here only for --help.
  if (!command) throw new RdbgError(Codes.BAD_ARGUMENT, `"rdbg ${name}" is not run from here`, `run "rdbg ${name} --help"`);
  const config = readConfig('cli');
  // The CLI talks to people: its components' info logs (port-forwards, API calls) are noise here.
  setLevel(config.logLevel ?? (debug ? 'debug' : 'warn'));
  setTrace(config.trace);
  await command(argv, { config, childEnv: process.env });
}

/** An error as a user reads it: one sentence and a hint; the stack only with --debug (or for a bug). */
export function report(err: unknown, debug: boolean): void {
  if (debug) process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
  if (err instanceof RdbgError) {
    process.stderr.write(`rdbg: ${err.message}\n${err.hint ? `  hint: ${err.hint}\n` : ''}`);
  } else if (!debug) {
    process.stderr.write(`rdbg: ${(err as Error)?.message ?? String(err)}\n  (run with --debug for details)\n`);
  }
  process.exitCode = exitCodeOf(err);
}
