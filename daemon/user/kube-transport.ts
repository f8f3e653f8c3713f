// The user daemon's way to the traffic manager in Kubernetes mode: two
// loopback ports, each forwarded through the apiserver's port-forward to
// the manager pod's gRPC (8081) and data-plane (8082) ports. grpc-js and the
// HTTP/2 data plane dial them as they would dial a manager anywhere, and each
// new connection finds the manager pod again, so a restarted manager is
// reached by the link's ordinary reconnect. With --manager HOST:PORT the data
// plane goes straight to that address instead (the "direct transport"); the
// session itself is always opened over port-forward, which is what
// Kubernetes RBAC guards.
import * as k8s from '@kubernetes/client-node';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { Codes, RdbgError } from '../../src/core/errors';
import { logger } from '../../src/core/log';
import { joinHostPort, splitHostPort } from '../../src/core/address';
import { kubeconfigFiles, loadKube, type KubeOptions } from '../../src/kube/config';
import { PodForwarder } from '../../src/kube/forwarder';
import { pickReady } from '../../src/kube/ready-pod';
import { kubeError, Workloads, type InterceptTarget, type Resolved, type ResolveHint, type WorkloadRef } from '../../src/kube/workloads';
import { LookupWatch } from './lookup-watch';
import { agentInPlace, setClaim } from '../../src/kube/injection';
import { claimAnnotation } from '../../src/kube/marks';
import type { ClaimHook } from './intercepts';
import { MANAGER_SELECTOR, PORTS } from '../../src/kube/manifests';

const log = logger('userd.kube');
const HINTS_MAX = 256;
/** the targets watched at once: a developer switches between a few (each is 3-4 watches on the apiserver) */
const WATCHED_MAX = 4;

export interface KubeTransport {
  context: string;
  kubeconfig: string;
  namespace: string;
  managerNamespace: string;
  control: string; // host:port the gRPC link dials
  data: string; // host:port of the data plane
  rawFlows: boolean; // TCP flows on connections of their own (direct transport only: see src/tunnel/raw/flow.ts)
  neverRoute: string[]; // the apiserver's addresses: never into the TUN
  describe(): string;
  /**
   * The workload behind NAME and its app port, when its agent is in and rolled
   * out; undefined when the agent must be injected first (the CLI does that,
   * with progress).
   */
  prepare(name: string, namespace: string, remote: string): Promise<InterceptTarget | undefined>;
  /**
   * writes the session's claim on the workload with the user's credentials
   * (docs/kubernetes.md); no write when the workload, as prepare() just read
   * it, already carries it
   */
  claim: ClaimHook;
  /** why the last forwarded connection failed (RBAC, no ready pod...), if one did */
  lastError(): string | undefined;
  close(): void;
}

async function addressesOf(server: string): Promise<string[]> {
  const host = new URL(server).hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) return [host];
  try {
    return (await lookup(host, { all: true })).map((a) => a.address);
  } catch {
    return [];
  }
}

/** Fails early, and clearly, when the manager is not installed in the namespace; its ready pod, if one is. */
async function checkManager(kc: k8s.KubeConfig, ns: string, context: string): Promise<string | undefined> {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  let pods: k8s.V1Pod[];
  try {
    pods = (await core.listNamespacedPod({ namespace: ns, labelSelector: MANAGER_SELECTOR })).items;
  } catch (err) {
    const e = kubeError(err, `looking for the traffic manager in namespace ${ns}`);
    if (e.code === Codes.PERMISSION) throw new RdbgError(Codes.PERMISSION, e.message, 'you need to list pods and create pods/portforward in the manager\'s namespace; "rdbg doctor" checks your rights');
    throw new RdbgError(Codes.MANAGER_UNREACHABLE, e.message, `is the apiserver of context ${context} reachable? "kubectl get ns" tells`);
  }
  if (pods.length === 0) {
    throw new RdbgError(
      Codes.MANAGER_UNREACHABLE,
      `no traffic manager in namespace ${ns} of context ${context}`,
      `install it with "rdbg manager install${ns === 'rdbg' ? '' : ` --namespace ${ns}`}" (or pass --manager-namespace)`,
    );
  }
  return pickReady(pods)?.metadata?.name;
}

export async function openKubeTransport(target: KubeOptions, managerNamespace: string, direct?: string): Promise<KubeTransport> {
  const kube = loadKube(target);
  // The forwarders start with the pod this listing found: the session's first connection lists no pods again.
  const knownPod = await checkManager(kube.kc, managerNamespace, kube.context);
  const forwarders: PodForwarder[] = [];
  const forward = async (port: number): Promise<string> => {
    const f = await PodForwarder.start(kube, { namespace: managerNamespace, selector: MANAGER_SELECTOR, port, name: `manager:${port}`, knownPod });
    forwarders.push(f);
    return f.address;
  };
  const control = await forward(PORTS.grpc);
  let data: string;
  if (direct) {
    const { host } = splitHostPort(direct, '--manager');
    data = joinHostPort(host, PORTS.data);
  } else {
    data = await forward(PORTS.data);
  }
  // the apiserver carries the port-forwards and the direct address the data plane: neither may go into the TUN
  const neverRoute = await addressesOf(kube.server);
  if (direct) neverRoute.push(splitHostPort(direct, '--manager').host.replace(/^\[|\]$/g, ''));
  // One client for the session: its API discovery and ReplicaSet owners stay cached between intercepts.
  const workloads = new Workloads(kube.kc);
  // what the last lookup of each name found, so that the next one is one round of parallel reads
  const hints = new Map<string, ResolveHint>();
  // the workloads prepare() found, with their annotations as read
  const resolved = new Map<string, { ref: WorkloadRef; annotations: Record<string, string> }>();
  // the names intercepted last, watched so that the next intercept of one reads nothing (daemon/user/lookup-watch.ts)
  const watched = new Map<string, LookupWatch>();
  const watch = (key: string, name: string, hint: ResolveHint, lookup: () => Promise<Resolved>): void => {
    watched.get(key)?.close();
    watched.delete(key);
    while (watched.size >= WATCHED_MAX) {
      const [oldest, w] = watched.entries().next().value!;
      w.close();
      watched.delete(oldest);
    }
    watched.set(key, LookupWatch.start(workloads, name, hint, lookup));
  };
  const remember = <V>(m: Map<string, V>, k: string, v: V): void => {
    if (m.size >= HINTS_MAX && !m.has(k)) m.delete(m.keys().next().value!);
    m.set(k, v);
  };
  log.info('kubernetes transport ready', { context: kube.context, managerNamespace, control, data, apiserver: kube.server });
  return {
    context: kube.context,
    kubeconfig: kubeconfigFiles(target).join(':'),
    namespace: kube.namespace,
    managerNamespace,
    control,
    data,
    rawFlows: Boolean(direct),
    neverRoute,
    describe: () =>
      `port-forward through ${kube.server} (context ${kube.context}) to the manager in namespace ${managerNamespace}` +
      (direct ? `; data plane direct at ${data} (raw TCP flows)` : '; data plane over port-forward (HTTP/2)'),
    prepare: async (name, namespace, remote) => {
      const ns = namespace || kube.namespace;
      const key = `${ns}/${name}:${remote}`;
      const watchedNow = watched.get(key)?.resolved;
      const r = watchedNow ?? (await workloads.lookup(name, ns, remote || undefined, hints.get(key)));
      log.info('intercept target', { name, namespace: ns, workload: r.target.workload.name, from: watchedNow ? 'watch' : 'apiserver' });
      remember(hints, key, r.hint);
      if (!(await agentInPlace(workloads, r.target, r))) return undefined;
      if (!watchedNow) watch(key, name, r.hint, () => workloads.lookup(name, ns, remote || undefined, r.hint));
      const w = r.target.workload;
      remember(resolved, `${w.namespace}/${w.name}`, { ref: w, annotations: r.object.metadata?.annotations ?? {} });
      return r.target;
    },
    claim: async (spec, sessionId, on) => {
      const ns = spec.namespace || kube.namespace;
      const known = resolved.get(`${ns}/${spec.workload}`);
      const { key, value } = claimAnnotation(sessionId);
      if (on && known?.annotations[key] === value) return;
      await setClaim(workloads, known?.ref ?? (await workloads.find(spec.workload ?? '', ns)), sessionId, on);
      if (known) known.annotations = { ...known.annotations, [key]: on ? value : '' };
    },
    lastError: () => forwarders.map((f) => f.stats().lastError).find((e) => e),
    close: () => {
      forwarders.forEach((f) => f.close());
      for (const w of watched.values()) w.close();
      watched.clear();
    },
  };
}
