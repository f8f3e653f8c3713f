import { parse, asList, splitHostPort } from '../src/cli/args';
import { parseCidr } from '../src/core/cidr';
import { raiseFileLimit } from '../src/core/rlimit';
import { startProfile, stopProfile } from '../src/core/profile';
import { logger, toggleDebugOnSignal } from '../src/core/log';
import { ManagerServer } from './server';

const log = logger('manager');

export const MANAGER_USAGE = `rdbg manager serve --listen HOST:PORT [--data-listen HOST:PORT|none] [--service-cidr CIDR]... [--pod-cidr CIDR]...
                   [--cluster-domain cluster.local] [--namespace rdbg] [--cluster-namespace NS]... [--lease-seconds 15]

Runs the traffic manager without Kubernetes ("standalone"): it dials destinations
and resolves names with the network and resolver of wherever it runs.
The data plane (raw HTTP/2 flows) listens on the next port unless --data-listen says otherwise.
The token, when set in RDBG_MANAGER_TOKEN, must be presented by clients and agents.`;

export async function managerMain(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub !== 'serve') {
    process.stdout.write(MANAGER_USAGE + '\n');
    process.exitCode = sub === '--help' || sub === undefined ? 0 : 2;
    return;
  }
  const { values } = parse('manager serve', rest, {
    listen: { type: 'string', default: '0.0.0.0:8081' },
    'data-listen': { type: 'string' },
    'service-cidr': { type: 'string', multiple: true },
    'pod-cidr': { type: 'string', multiple: true },
    'cluster-domain': { type: 'string', default: 'cluster.local' },
    namespace: { type: 'string', default: 'rdbg' },
    'cluster-namespace': { type: 'string', multiple: true },
    'lease-seconds': { type: 'string', default: '15' },
    // placeholder until the Kubernetes mode lands: accepted, serve runs with defaults
    kubernetes: { type: 'boolean' },
    kubeconfig: { type: 'string' },
  });
  splitHostPort(values.listen!, '--listen');
  const server = new ManagerServer({
    listen: values.listen!,
    dataListen: values['data-listen'] === 'none' ? '' : values['data-listen'],
    serviceSubnets: asList(values['service-cidr']).map((c) => parseCidr(c).text),
    podSubnets: asList(values['pod-cidr']).map((c) => parseCidr(c).text),
    clusterDomain: values['cluster-domain']!.replace(/^\.|\.$/g, ''),
    namespace: values.namespace!,
    namespaces: asList(values['cluster-namespace']).length ? asList(values['cluster-namespace']) : ['default'],
    leaseSeconds: Math.max(3, Number(values['lease-seconds'])),
    token: process.env.RDBG_MANAGER_TOKEN || undefined,
  });
  raiseFileLimit();
  startProfile();
  toggleDebugOnSignal();
  await server.start();
  const stop = (signal: string): void => {
    log.info('stopping', { signal });
    void server.stop().then(() => stopProfile('manager')).then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}
