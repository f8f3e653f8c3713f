import { splitHostPort } from '../src/core/address';
import { parse, asList } from '../src/cli/args';
import { parseCidr } from '../src/core/cidr';
import { Codes, RdbgError } from '../src/core/errors';
import { raiseFileLimit } from '../src/core/rlimit';
import { startProfile, stopProfile } from '../src/core/profile';
import { readConfig, type ManagerConfig } from '../src/core/config';
import { logger, setLevel, setTrace, toggleDebugOnSignal } from '../src/core/log';
import { ManagerServer } from './server';
import { KubeMode } from './kube/mode';
import { DEFAULT_TLS_DIR, WebhookServer } from './kube/webhook-server';
import { VERSION } from '../src/core/version';

const log = logger('manager');

export const MANAGER_USAGE = `rdbg manager serve --listen HOST:PORT [--data-listen HOST:PORT] [--service-cidr CIDR]... [--pod-cidr CIDR]...
                   [--cluster-domain cluster.local] [--namespace rdbg] [--cluster-namespace NS]... [--lease-seconds 15]
                   [--allow-cidr CIDR]...
rdbg manager serve --kubernetes [--kubeconfig FILE] [--resolv-conf FILE] [--cluster-domain D] [--namespace NS] [--listen HOST:PORT]
                   [--allow-cidr CIDR]...

Runs the traffic manager. It dials destinations and resolves names with the
network and resolver of wherever it runs. gRPC on --listen is the control
plane (sessions, DNS, intercepts); every flow goes on the data port, the next
port unless --data-listen says otherwise: a TCP connection of its own per
flow from a client that reaches the manager directly, HTTP/2 streams (one per
flow) over port-forward and from agents.

Clients reach the cluster's service and pod subnets, and beyond them only
the subnets named by --allow-cidr (a client's --also-proxy asks, this
allows). Loopback, link-local (169.254.169.254 included), multicast and the
manager's own addresses are always refused, also when a name resolves to them.

Standalone (without --kubernetes): subnets and namespaces come from the flags;
the token, when set in RDBG_MANAGER_TOKEN, must be presented by clients and agents.

--kubernetes: runs in the cluster (the rdbg-manager Deployment). Service and pod
subnets and namespaces come from the apiserver (watched); the cluster domain,
DNS server and own namespace from the pod's resolv.conf and service account.
Clients may only call over port-forward (loopback); agents present a projected
service-account token (TokenReview); intercepts need the workload's claim.
--kubeconfig runs it outside a pod (tests); --resolv-conf names the file that
gives the cluster DNS server and search path (default /etc/resolv.conf).
It also serves the agent-injection webhook on --webhook-listen (0.0.0.0:8443;
"none" for no webhook) with the certificate in --tls-dir (${DEFAULT_TLS_DIR});
injected agents run the image in RDBG_AGENT_IMAGE (the manager's own).`;

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
    'cluster-domain': { type: 'string' },
    namespace: { type: 'string' },
    kubernetes: { type: 'boolean', default: false },
    kubeconfig: { type: 'string' },
    'resolv-conf': { type: 'string' },
    'cluster-namespace': { type: 'string', multiple: true },
    'lease-seconds': { type: 'string', default: '15' },
    'webhook-listen': { type: 'string', default: '0.0.0.0:8443' },
    'tls-dir': { type: 'string', default: DEFAULT_TLS_DIR },
    'allow-cidr': { type: 'string', multiple: true },
  });
  const cfg = readConfig('manager');
  setLevel(cfg.logLevel ?? 'info');
  setTrace(cfg.trace);
  splitHostPort(values.listen!, '--listen');
  const stripDots = (d: string): string => d.replace(/^\.|\.$/g, '');
  const kube = values.kubernetes
    ? new KubeMode({
        kubeconfig: values.kubeconfig,
        resolvConf: values['resolv-conf'],
        clusterDomain: values['cluster-domain'] && stripDots(values['cluster-domain']),
        namespace: values.namespace,
      })
    : undefined;
  if (!kube && (values.kubeconfig || values['resolv-conf'])) {
    throw new RdbgError(Codes.BAD_ARGUMENT, '--kubeconfig and --resolv-conf go with --kubernetes', 'run "rdbg manager --help"');
  }
  if (kube && cfg.managerToken) log.warn('RDBG_MANAGER_TOKEN is ignored in Kubernetes mode (clients come over port-forward, agents by TokenReview)');
  const server = new ManagerServer({
    listen: values.listen!,
    dataListen: values['data-listen'],
    serviceSubnets: asList(values['service-cidr']).map((c) => parseCidr(c).text),
    podSubnets: asList(values['pod-cidr']).map((c) => parseCidr(c).text),
    clusterDomain: kube?.clusterDomain ?? stripDots(values['cluster-domain'] ?? 'cluster.local'),
    namespace: kube?.namespace ?? values.namespace ?? 'rdbg',
    namespaces: asList(values['cluster-namespace']).length ? asList(values['cluster-namespace']) : ['default'],
    leaseSeconds: Math.max(3, Number(values['lease-seconds'])),
    token: kube ? undefined : cfg.managerToken,
    allowCidrs: asList(values['allow-cidr']).flatMap((c) => c.split(',')).filter((c) => c.trim()).map((c) => parseCidr(c).text),
    kube,
  });
  raiseFileLimit();
  startProfile(cfg.cpuProfile);
  toggleDebugOnSignal();
  await server.start();
  const webhook = kube && values['webhook-listen'] !== 'none' ? webhookServer(cfg, kube.namespace, values['webhook-listen']!, values['tls-dir']!) : undefined;
  await webhook?.start();
  const stop = (signal: string): void => {
    log.info('stopping', { signal });
    void Promise.all([server.stop(), webhook?.stop()]).then(() => stopProfile('manager')).then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

/** The agent-injection webhook of a manager in namespace ns (docs/kubernetes.md, "Injection"). */
function webhookServer(cfg: ManagerConfig, ns: string, listen: string, tlsDir: string): WebhookServer {
  const image = cfg.agentImage;
  if (!image) {
    throw new RdbgError(Codes.BAD_ARGUMENT, 'the webhook needs the agent image in RDBG_AGENT_IMAGE', 'the rdbg-manager Deployment sets it; or pass --webhook-listen none');
  }
  const { host, port } = splitHostPort(listen, '--webhook-listen');
  return new WebhookServer({
    settings: {
      image,
      managerNamespace: ns,
      managerAddress: `rdbg-manager.${ns}:8081`,
      agentPortBase: 9900,
      version: VERSION,
      pullPolicy: cfg.agentPullPolicy,
    },
    tlsDir,
    host,
    port,
  });
}
