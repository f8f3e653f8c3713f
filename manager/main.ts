import { splitHostPort } from '../src/core/address';
import { routeGrpcLogs } from '../src/rpc/grpc-log';
import { parse, asList } from '../src/cli/args';
import { COMMANDS } from '../src/cli/spec';
import { parseCidr } from '../src/core/cidr';
import { Codes, RdbgError } from '../src/core/errors';
import { raiseFileLimit } from '../src/core/rlimit';
import { startProfile, stopProfile } from '../src/core/profile';
import { readConfig, type ManagerConfig } from '../src/core/config';
import { logger, setLevel, setTrace, toggleDebugOnSignal } from '../src/core/log';
import { ManagerServer } from './server';
import { managerMetrics, serveMetrics } from './metrics';
import { KubeMode } from './kube/mode';
import { DEFAULT_TLS_DIR, WebhookServer } from './kube/webhook-server';
import { VERSION } from '../src/core/version';

const log = logger('manager');

/** `rdbg manager serve ...` (its arguments after "serve"). */
export async function managerMain(argv: string[]): Promise<void> {
  const { values } = parse('manager serve', argv, COMMANDS.manager.sub.serve.flags);
  routeGrpcLogs(log);
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
    throw new RdbgError(Codes.BAD_ARGUMENT, '--kubeconfig and --resolv-conf go with --kubernetes', 'run "rdbg manager serve --help"');
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
  const webhook = kube && values['webhook-listen'] !== 'none' ? webhookServer(cfg, kube.namespace, values['webhook-listen']!, values['tls-dir'] ?? DEFAULT_TLS_DIR) : undefined;
  await webhook?.start();
  const metricsListen = values['metrics-listen'];
  const metrics = metricsListen && metricsListen !== 'none' ? await serveMetrics(metricsListen, managerMetrics(server)) : undefined;
  const stop = (signal: string): void => {
    log.info('stopping', { signal });
    metrics?.close();
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
