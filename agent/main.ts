import { readFileSync } from 'node:fs';
import { routeGrpcLogs } from '../src/rpc/grpc-log';
import { splitHostPort } from '../src/core/address';
import { parse } from '../src/cli/args';
import { COMMANDS } from '../src/cli/spec';
import { Codes, errorMessage, RdbgError } from '../src/core/errors';
import { readConfig } from '../src/core/config';
import { logger, setLevel, setTrace, toggleDebugOnSignal } from '../src/core/log';
import { appEnvironment, TrafficAgent } from './traffic-agent';

const log = logger('agent');

const HINT = 'see "rdbg agent run --help"';

function port(text: string | undefined, flag: string): number {
  const n = Number(text);
  if (!text || !Number.isInteger(n) || n < 1 || n > 65535) throw new RdbgError(Codes.BAD_ARGUMENT, `${flag} "${text ?? ''}" must be a port number`, HINT);
  return n;
}

/**
 * The agent credential: the file RDBG_AGENT_TOKEN_FILE names (read anew each
 * time: the kubelet rewrites a projected token before it expires), else
 * RDBG_AGENT_TOKEN. An unreadable file gives '' and a warning once per
 * distinct error; the manager then refuses the arrival and the agent retries.
 */
export function tokenSource(file: string | undefined, fixed: string): () => string {
  if (!file) return () => fixed;
  let lastError = '';
  return () => {
    try {
      const token = readFileSync(file, 'utf8').trim();
      lastError = '';
      return token;
    } catch (err) {
      const msg = errorMessage(err);
      if (msg !== lastError) log.warn('cannot read the agent token', { file, err: msg });
      lastError = msg;
      return fixed;
    }
  };
}

/** `rdbg agent run ...` (its arguments after "run"): the traffic agent sidecar. */
export async function agentMain(argv: string[]): Promise<void> {
  const { values } = parse('agent run', argv, COMMANDS.agent.sub.run.flags);
  routeGrpcLogs(log);
  const cfg = readConfig('agent');
  setLevel(cfg.logLevel ?? 'info');
  setTrace(cfg.trace);
  const manager = values.manager ?? cfg.manager;
  if (!manager) throw new RdbgError(Codes.BAD_ARGUMENT, 'agent run: --manager HOST:PORT (or RDBG_MANAGER) is required', HINT);
  splitHostPort(manager, '--manager');
  if (!values.workload || !values.namespace) throw new RdbgError(Codes.BAD_ARGUMENT, 'agent run: --workload and --namespace are required', HINT);
  const agent = new TrafficAgent({
    manager,
    workload: values.workload,
    namespace: values.namespace,
    appPort: port(values['app-port'], '--app-port'),
    appHost: values['app-host'],
    listenPort: port(values['listen-port'], '--listen-port'),
    podName: values['pod-name'] ?? cfg.podName,
    podIp: cfg.podIp,
    token: tokenSource(cfg.agentTokenFile, cfg.agentToken),
    filesRoot: cfg.agentFilesRoot,
    // The app's environment, which the agent's pod copies: data to report, not the agent's settings.
    env: appEnvironment(process.env, cfg.agentEnv),
  });
  toggleDebugOnSignal();
  // The last line of defence: a bug in one connection's handling must not take the pod's traffic down with it.
  process.on('uncaughtException', (err) => log.error('uncaught exception (continuing)', { err: err.message, stack: err.stack }));
  process.on('unhandledRejection', (err) => log.error('unhandled rejection (continuing)', { err: String(err), stack: (err as Error)?.stack }));
  await agent.start();
  const stop = (signal: string): void => {
    log.info('stopping', { signal });
    void agent.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}
