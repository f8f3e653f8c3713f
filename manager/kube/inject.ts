// Agent injection (docs/kubernetes.md, "Injection"): a pure function from a
// pod being created to the JSON patch that adds the traffic agent, or the
// reason it is left alone. The webhook server only transports the answer.
import { pointerToken, type Container, type ContainerPort, type EnvVar, type PatchOp, type Pod, type ProbeLike, type SecurityContext, type VolumeMount } from './pod';

import { AGENT_PORT_ANNOTATION, INJECT_LABEL, WORKLOAD_ANNOTATION } from '../../src/kube/marks';
export { AGENT_PORT_ANNOTATION, INJECT_LABEL, WORKLOAD_ANNOTATION };
export const INJECTED_ANNOTATION = 'rdbg.dev/injected';
export const AGENT_CONTAINER = 'rdbg-agent';
export const INIT_CONTAINER = 'rdbg-agent-init';
export const TOKEN_VOLUME = 'rdbg-token';
export const TOKEN_DIR = '/var/run/secrets/rdbg';
/** Where the agent sees the app container's volumes, at their paths in the app (rdbg intercept --mount serves this tree). */
export const APP_MOUNTS_DIR = '/rdbg/app';
export const TOKEN_AUDIENCE = 'rdbg';
/** Variables the webhook gives the agent and the agent must not report as the app's. */
export const AGENT_ENV_LIST = 'RDBG_AGENT_ENV';
/** Set by the rdbg image or the runtime for the agent's own process, not the app's. */
const IMAGE_ENV = ['PATH', 'NODE_ENV', 'HOME'];
/** In the rdbg image: iptables with the nf_tables backend (NET_ADMIN is enough; the legacy one needs NET_RAW too). */
const IPTABLES = '/usr/sbin/iptables';

export interface InjectSettings {
  /** The agent's image: the manager's own. */
  image: string;
  managerNamespace: string;
  /** `rdbg-manager.<ns>:8081` */
  managerAddress: string;
  /** The agent's port: the first free one from here up (9900). */
  agentPortBase: number;
  /** Written to the pod's rdbg.dev/injected annotation. */
  version: string;
  pullPolicy: string;
}

export type InjectDecision =
  | { inject: true; patch: PatchOp[]; mode: 'named' | 'numeric'; container: string; appPort: number; agentPort: number }
  /** warn: the pod asked for an agent and does not get one (the user must hear why). */
  | { inject: false; reason: string; warn: boolean };

const skip = (reason: string, warn = true): InjectDecision => ({ inject: false, reason, warn });

/** Kubernetes port names (IANA_SVC_NAME): 1-15 of [a-z0-9-], a letter, no leading, trailing or double '-'. */
export function isPortName(s: string): boolean {
  return s.length <= 15 && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(s) && /[a-z]/.test(s) && !s.includes('--');
}

/** The app's port once the agent owns the original name: `rdbg-<orig>`, cut to 15 characters. */
export function renamedPort(orig: string): string {
  return `rdbg-${orig}`.slice(0, 15).replace(/-+$/, '');
}

const isTcp = (p: ContainerPort): boolean => (p.protocol ?? 'TCP').toUpperCase() === 'TCP';

interface Target {
  index: number;
  container: Container;
  appPort: number;
  /** The port's name when the Service targets it by name. */
  name?: string;
}

/** The container and port the annotation names, or why there is none. */
function findTarget(containers: Container[], spec: string): Target | string {
  if (/^\d+$/.test(spec)) {
    const n = Number(spec);
    if (n < 1 || n > 65535) return `annotation ${AGENT_PORT_ANNOTATION}="${spec}" is not a port number`;
    const owners = containers.map((c, index) => ({ c, index, p: c.ports?.find((p) => p.containerPort === n) })).filter((o) => o.p);
    if (owners.length > 1) return `port ${n} is declared by several containers (${owners.map((o) => o.c.name).join(', ')})`;
    if (owners.length === 1) {
      const { c, index, p } = owners[0];
      if (!isTcp(p!)) return `port ${n} of container ${c.name} is ${p!.protocol}; the agent takes over TCP ports only`;
      return { index, container: c, appPort: n };
    }
    // A Service may target a port no container declares; with one container it can only be that one's.
    if (containers.length === 1) return { index: 0, container: containers[0], appPort: n };
    return `port ${n} is not declared by any container, and with ${containers.length} containers the owner is ambiguous (declare it in the app container's ports)`;
  }
  for (let index = 0; index < containers.length; index++) {
    const c = containers[index];
    const p = c.ports?.find((q) => q.name === spec);
    if (!p) continue;
    if (!isTcp(p)) return `port "${spec}" of container ${c.name} is ${p.protocol}; the agent takes over TCP ports only`;
    return { index, container: c, appPort: p.containerPort, name: spec };
  }
  const known = containers.flatMap((c) => (c.ports ?? []).map((p) => p.name ?? String(p.containerPort)));
  return `no container has a port named "${spec}" (ports: ${known.join(', ') || 'none'})`;
}

/** The first port from base up that no container of the pod uses. */
function freePort(pod: Pod, base: number, appPort: number): number {
  const used = new Set<number>([appPort]);
  for (const c of [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])]) for (const p of c.ports ?? []) used.add(p.containerPort);
  let port = base;
  while (used.has(port)) port++;
  return port;
}

/**
 * The app container's env for the agent: the same entries, so ConfigMap,
 * Secret and downward-API values resolve as in the app. A resourceFieldRef
 * without containerName means "this container": it must keep naming the app.
 */
function copiedEnv(app: Container, own: Set<string>): EnvVar[] {
  return (app.env ?? [])
    .filter((e) => !own.has(e.name))
    .map((e) => {
      const rf = e.valueFrom?.resourceFieldRef;
      if (!rf || rf.containerName) return e;
      return { ...e, valueFrom: { ...e.valueFrom, resourceFieldRef: { ...rf, containerName: app.name } } };
    });
}

/**
 * Named probe and lifecycle-hook ports of the app, rewritten to numbers once
 * the name moves to the agent. HTTP probes go to the agent's port, as the
 * Service's traffic does: the agent sends them on to the app, and answers
 * them itself while a replace holds the app stopped (else the kubelet would
 * restart it, or take the pod out of the Service). TCP probes (a stopped
 * process's socket still accepts), HTTPS probes and hooks go to the app's
 * own number.
 */
function probePatches(t: Target, base: string, agentPort: number): PatchOp[] {
  const ops: PatchOp[] = [];
  const visit = (handler: ProbeLike | undefined, path: string, probe: boolean): void => {
    for (const kind of ['httpGet', 'tcpSocket'] as const) {
      const h = handler?.[kind];
      if (!h || h.port !== t.name) continue;
      const viaAgent = probe && kind === 'httpGet' && String(h.scheme ?? 'HTTP').toUpperCase() === 'HTTP';
      ops.push({ op: 'replace', path: `${path}/${kind}/port`, value: viaAgent ? agentPort : t.appPort });
    }
  };
  const c = t.container;
  for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe'] as const) visit(c[probe], `${base}/${probe}`, true);
  for (const hook of ['postStart', 'preStop'] as const) visit(c.lifecycle?.[hook], `${base}/lifecycle/${hook}`, false);
  return ops;
}

const restrictedSecurity = {
  runAsNonRoot: true,
  runAsUser: 65532,
  runAsGroup: 65532,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

/**
 * The agent runs as the app's user where the pod says who that is (the
 * container's securityContext, else the pod's): it then reads and writes
 * the app's files as the app does, and may stop the app's processes for a
 * replace. An app running as root gets an agent with the app's own
 * capabilities (the kernel lets a process inspect another of the same user
 * only with at least its capabilities). Without a user in the pod (the
 * image's), the agent keeps its own uid 65532.
 */
export function agentSecurity(app: Container, pod: SecurityContext | undefined): Record<string, unknown> {
  const uid = app.securityContext?.runAsUser ?? pod?.runAsUser;
  const gid = app.securityContext?.runAsGroup ?? pod?.runAsGroup;
  if (uid === undefined) return restrictedSecurity;
  if (uid !== 0) return { ...restrictedSecurity, runAsUser: uid, runAsGroup: gid ?? uid };
  const { capabilities: _caps, ...rest } = restrictedSecurity;
  const caps = app.securityContext?.capabilities;
  return { ...rest, runAsNonRoot: false, runAsUser: 0, runAsGroup: gid ?? 0, ...(caps ? { capabilities: caps } : {}) };
}

/**
 * The app container's volume mounts, for the agent under APP_MOUNTS_DIR at
 * the same paths, read-only where the app's are: ConfigMaps, Secrets, the
 * service-account token, a shared emptyDir, as the app sees them.
 */
function appMounts(app: Container): VolumeMount[] {
  return (app.volumeMounts ?? [])
    .filter((m) => m.name !== TOKEN_VOLUME && m.mountPath?.startsWith('/'))
    .map((m) => ({
      name: m.name,
      mountPath: `${APP_MOUNTS_DIR}${m.mountPath.replace(/\/+$/, '') || ''}`,
      ...(m.readOnly ? { readOnly: true } : {}),
      ...(m.subPath ? { subPath: m.subPath } : {}),
      ...(m.subPathExpr ? { subPathExpr: m.subPathExpr } : {}),
    }));
}

/** `add` of one element to an array that may not exist yet. */
function append(ops: PatchOp[], path: string, existing: unknown[] | undefined, value: unknown, first = false): void {
  if (!existing) ops.push({ op: 'add', path, value: [value] });
  else ops.push({ op: 'add', path: `${path}/${first ? 0 : '-'}`, value });
}

/**
 * What the webhook does to a pod being created in namespace `namespace`
 * (the AdmissionRequest's, since a pod created from a template has none yet).
 */
export function injectPod(pod: Pod, namespace: string, s: InjectSettings): InjectDecision {
  const meta = pod.metadata ?? {};
  const labels = meta.labels ?? {};
  const ann = meta.annotations ?? {};
  const spec = pod.spec;
  if (labels[INJECT_LABEL] !== 'enabled') return skip(`label ${INJECT_LABEL}=enabled is absent`, false);
  const containers = spec?.containers ?? [];
  if (INJECTED_ANNOTATION in ann || containers.some((c) => c.name === AGENT_CONTAINER)) return skip('already injected', false);
  if (spec?.hostNetwork) return skip('the pod uses the host network; an agent there would take over a port of the node');
  const portSpec = ann[AGENT_PORT_ANNOTATION]?.trim();
  if (!portSpec) return skip(`annotation ${AGENT_PORT_ANNOTATION} is missing`);
  const workload = ann[WORKLOAD_ANNOTATION]?.split('/').pop()?.trim();
  if (!workload) return skip(`annotation ${WORKLOAD_ANNOTATION} ("Kind/name") is missing`);
  if (containers.length === 0) return skip('the pod has no containers');
  const target = findTarget(containers, portSpec);
  if (typeof target === 'string') return skip(target);
  if ((spec?.volumes ?? []).some((v) => v.name === TOKEN_VOLUME)) return skip(`the pod already has a volume named ${TOKEN_VOLUME}`);
  if ((spec?.initContainers ?? []).some((c) => c.name === INIT_CONTAINER)) return skip(`the pod already has an init container named ${INIT_CONTAINER}`);

  const app = target.container;
  const agentPort = freePort(pod, s.agentPortBase, target.appPort);
  const appPath = `/spec/containers/${target.index}`;
  const ops: PatchOp[] = [];

  const agentPorts: ContainerPort[] = [];
  if (target.name) {
    // Named: the Service's targetPort name moves to the agent; the app keeps its number under a new name.
    const renamed = renamedPort(target.name);
    if (!isPortName(renamed)) return skip(`cannot rename port "${target.name}": "${renamed}" is not a valid port name`);
    if (app.ports?.some((p) => p.name === renamed)) return skip(`container ${app.name} already has a port named "${renamed}"`);
    const pi = app.ports!.findIndex((p) => p.name === target.name);
    ops.push({ op: 'replace', path: `${appPath}/ports/${pi}/name`, value: renamed });
    ops.push(...probePatches(target, appPath, agentPort));
    agentPorts.push({ name: target.name, containerPort: agentPort, protocol: 'TCP' });
  } else {
    // Numeric: the Service sends to the app's own number; the init container redirects it to the agent.
    agentPorts.push({ name: 'rdbg-agent', containerPort: agentPort, protocol: 'TCP' });
    const rule = `-p tcp --dport ${target.appPort} ! -i lo -m comment --comment rdbg-agent -j REDIRECT --to-ports ${agentPort}`;
    append(ops, '/spec/initContainers', spec?.initContainers, {
      name: INIT_CONTAINER,
      image: s.image,
      imagePullPolicy: s.pullPolicy,
      // -C first: an init container that runs again in the same network namespace must not add a second rule.
      command: ['/bin/sh', '-c', `${IPTABLES} -t nat -C PREROUTING ${rule} 2>/dev/null || ${IPTABLES} -t nat -A PREROUTING ${rule}`],
      securityContext: {
        runAsNonRoot: false,
        runAsUser: 0,
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: { drop: ['ALL'], add: ['NET_ADMIN'] },
        seccompProfile: { type: 'RuntimeDefault' },
      },
      resources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { memory: '64Mi' } },
    }, true);
  }

  const ownEnv: EnvVar[] = [
    { name: 'RDBG_MANAGER', value: s.managerAddress },
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    { name: 'RDBG_AGENT_TOKEN_FILE', value: `${TOKEN_DIR}/token` },
  ];
  const appNames = new Set((app.env ?? []).map((e) => e.name));
  // What the agent has that the app does not: it reports the app's environment without these.
  const notApp = [...ownEnv.map((e) => e.name).filter((n) => !n.startsWith('RDBG_') && !appNames.has(n)), ...IMAGE_ENV.filter((n) => !appNames.has(n))];
  ownEnv.push({ name: AGENT_ENV_LIST, value: notApp.join(',') });

  const agent: Container = {
    name: AGENT_CONTAINER,
    image: s.image,
    imagePullPolicy: s.pullPolicy,
    command: ['/usr/bin/node', 'dist/bin/rdbg.js'],
    args: ['agent', 'run', '--workload', workload, '--namespace', namespace, '--app-port', String(target.appPort), '--listen-port', String(agentPort)],
    ports: agentPorts,
    env: [...copiedEnv(app, new Set(ownEnv.map((e) => e.name))), ...ownEnv],
    ...(app.envFrom?.length ? { envFrom: app.envFrom } : {}),
    volumeMounts: [{ name: TOKEN_VOLUME, mountPath: TOKEN_DIR, readOnly: true }, ...appMounts(app)],
    // The pod is Ready only once the agent listens: the Service must not send to a port nobody owns yet.
    // Probed every second: the kubelet's first probe after the container runs comes up to one period
    // late, and a first intercept waits for that (one TCP connect a second is nothing to the kubelet).
    readinessProbe: { tcpSocket: { port: agentPort }, periodSeconds: 1 },
    securityContext: agentSecurity(app, spec?.securityContext),
    resources: { requests: { cpu: '10m', memory: '48Mi' }, limits: { memory: '256Mi' } },
  };
  ops.push({ op: 'add', path: '/spec/containers/-', value: agent });
  // One process namespace for the pod: the agent sees the app's processes (replace stops them).
  // Not with hostPID, which the apiserver refuses together with it.
  if (!spec?.hostPID && spec?.shareProcessNamespace !== true) ops.push({ op: 'add', path: '/spec/shareProcessNamespace', value: true });
  append(ops, '/spec/volumes', spec?.volumes, {
    name: TOKEN_VOLUME,
    projected: { sources: [{ serviceAccountToken: { audience: TOKEN_AUDIENCE, expirationSeconds: 3600, path: 'token' } }] },
  });
  ops.push({ op: 'add', path: `/metadata/annotations/${pointerToken(INJECTED_ANNOTATION)}`, value: s.version });
  return { inject: true, patch: ops, mode: target.name ? 'named' : 'numeric', container: app.name, appPort: target.appPort, agentPort };
}
