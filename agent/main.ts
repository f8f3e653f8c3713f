import { readFileSync } from 'node:fs';
import { splitHostPort } from '../src/core/address';
import { parse } from '../src/cli/args';
import { Codes, errorMessage, RdbgError } from '../src/core/errors';
import { readConfig } from '../src/core/config';
import { logger, setLevel, setTrace, toggleDebugOnSignal } from '../src/core/log';
import { appEnvironment, TrafficAgent } from './traffic-agent';

const log = logger('agent');

export const AGENT_USAGE = `rdbg agent run --manager HOST:PORT --workload NAME --namespace NS --app-port P --listen-port Q
                [--pod-name X] [--app-host 127.0.0.1]

Runs the traffic agent (the sidecar of an intercepted pod): it listens on the
port the Service targets (Q) and forwards to the app (P); requests that match
an intercept go to the laptop that owns it. RDBG_MANAGER may stand for
--manager, RDBG_AGENT_TOKEN carries the agent credential (or
RDBG_AGENT_TOKEN_FILE names a file holding it, read again at every
re-arrival: a projected service-account token rotates). Diverted flows go
on the manager's data port, an HTTP/2 stream each.`;

const HINT = 'see "rdbg agent --help"';

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

/** `rdbg agent run ...`: the traffic agent sidecar. */
export async function agentMain(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub !== 'run') {
    process.stdout.write(AGENT_USAGE + '\n');
    process.exitCode = sub === '--help' || sub === undefined ? 0 : 2;
    return;
  }
  const { values } = parse('agent run', rest, {
    manager: { type: 'string' },
    workload: { type: 'string' },
    namespace: { type: 'string' },
    'app-port': { type: 'string' },
    'listen-port': { type: 'string' },
    'app-host': { type: 'string', default: '127.0.0.1' },
    'pod-name': { type: 'string' },
  });
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
