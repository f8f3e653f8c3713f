// What `rdbg intercept NAME` means on Kubernetes: NAME (a Service, or a
// workload) resolved to the workload whose pods serve it and to the app
// container's port; the marks that make the webhook inject the agent
// (docs/kubernetes.md, "Injection"); and the claim that proves the user may
// patch the workload ("Intercept permission").
import * as k8s from '@kubernetes/client-node';
import { Codes, RdbgError } from '../core/errors';

import { kubeError as apiError, statusOf } from './apply';
export { AGENT_PORT_ANNOTATION, CLAIM_PREFIX, INJECT_LABEL, WORKLOAD_ANNOTATION } from './marks';

export type WorkloadKind = 'Deployment' | 'StatefulSet' | 'ReplicaSet' | 'DaemonSet' | 'Pod';
const KINDS: WorkloadKind[] = ['Deployment', 'StatefulSet', 'ReplicaSet', 'DaemonSet'];

export interface WorkloadRef {
  kind: WorkloadKind;
  name: string;
  namespace: string;
}

export interface InterceptTarget {
  workload: WorkloadRef;
  service?: string;
  /** the port as the Service's targetPort (or the user) names it: what the agent takes over */
  agentPort: string;
  /** the app container's port number: what the intercept spec carries */
  appPort: number;
  container: string;
  replicas: number;
}

type Obj = k8s.KubernetesObject & { spec?: any; status?: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

const SHORT: Record<string, WorkloadKind> = { deploy: 'Deployment', sts: 'StatefulSet', rs: 'ReplicaSet', ds: 'DaemonSet', po: 'Pod' };

/** deployment, deployments, deploy, Deployment... as kubectl takes them. */
export function kindOf(text: string): WorkloadKind {
  const t = text.toLowerCase().replace(/\.apps$/, '');
  const kind = SHORT[t] ?? KINDS.concat('Pod').find((k) => k.toLowerCase() === t || `${k.toLowerCase()}s` === t);
  if (!kind) throw new RdbgError(Codes.BAD_ARGUMENT, `"${text}" is not a kind rdbg intercepts: deployment, statefulset, replicaset, daemonset or pod`);
  return kind;
}

export function apiVersionOf(kind: WorkloadKind): string {
  return kind === 'Pod' ? 'v1' : 'apps/v1';
}

export function describe(w: WorkloadRef): string {
  return `${w.kind.toLowerCase()}/${w.name} in namespace ${w.namespace}`;
}


const FORBIDDEN = 'ask a cluster admin for the right, or see what "rdbg doctor" says';

/** A Kubernetes API failure as the user should read it. */
export function kubeError(err: unknown, what: string): RdbgError {
  return apiError(err, what, FORBIDDEN);
}

export class Workloads {
  readonly objects: k8s.KubernetesObjectApi;
  readonly core: k8s.CoreV1Api;

  constructor(readonly kc: k8s.KubeConfig) {
    this.objects = k8s.KubernetesObjectApi.makeApiClient(kc);
    this.core = kc.makeApiClient(k8s.CoreV1Api);
  }

  async read(w: WorkloadRef): Promise<Obj> {
    return (await this.objects.read({ apiVersion: apiVersionOf(w.kind), kind: w.kind, metadata: { name: w.name, namespace: w.namespace } })) as Obj;
  }

  private async tryRead(w: WorkloadRef): Promise<Obj | undefined> {
    try {
      return await this.read(w);
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw kubeError(err, `reading ${describe(w)}`);
    }
  }

  /** The workload (of any kind rdbg injects into, or a bare pod) with this name, or KIND/NAME. */
  async find(name: string, namespace: string): Promise<WorkloadRef> {
    const slash = name.indexOf('/');
    if (slash > 0) {
      const w = { kind: kindOf(name.slice(0, slash)), name: name.slice(slash + 1), namespace };
      if (await this.tryRead(w)) return w;
      throw new RdbgError(Codes.INTERCEPT_NOT_FOUND, `${describe(w)} does not exist`);
    }
    for (const kind of [...KINDS, 'Pod' as const]) {
      const w = { kind, name, namespace };
      if (await this.tryRead(w)) return w;
    }
    throw new RdbgError(Codes.INTERCEPT_NOT_FOUND, `no workload named "${name}" in namespace ${namespace}`);
  }

  /**
   * NAME is a Service (the usual case), KIND/NAME, or a workload's name.
   * `port` is the Service port (number or name), or for a workload the
   * container port; it may be omitted when there is only one.
   */
  async resolve(name: string, namespace: string, port?: string): Promise<InterceptTarget> {
    const slash = name.indexOf('/');
    if (slash > 0) {
      const w = { kind: kindOf(name.slice(0, slash)), name: name.slice(slash + 1), namespace };
      const obj = await this.tryRead(w);
      if (!obj) throw new RdbgError(Codes.INTERCEPT_NOT_FOUND, `${describe(w)} does not exist`);
      return this.targetOfWorkload(w, obj, port);
    }
    let svc: k8s.V1Service | undefined;
    try {
      svc = await this.core.readNamespacedService({ name, namespace });
    } catch (err) {
      if (statusOf(err) !== 404) throw kubeError(err, `reading service ${name} in namespace ${namespace}`);
    }
    if (svc) return this.targetOfService(svc, namespace, port);
    for (const kind of KINDS) {
      const w = { kind, name, namespace };
      const obj = await this.tryRead(w);
      if (obj) return this.targetOfWorkload(w, obj, port);
    }
    throw new RdbgError(
      Codes.INTERCEPT_NOT_FOUND,
      `no service, deployment, statefulset, replicaset or daemonset named "${name}" in namespace ${namespace}`,
      `list them with "kubectl -n ${namespace} get svc,deploy,sts"`,
    );
  }

  private async targetOfService(svc: k8s.V1Service, namespace: string, port?: string): Promise<InterceptTarget> {
    const name = svc.metadata!.name!;
    const ports = svc.spec?.ports ?? [];
    const selector = svc.spec?.selector;
    if (!selector || Object.keys(selector).length === 0) {
      throw new RdbgError(Codes.BAD_ARGUMENT, `service ${name} has no selector, so no workload serves it`, 'intercept the workload by name instead');
    }
    const list = ports.map((p) => `${p.name ? `${p.name} ` : ''}${p.port}`).join(', ');
    const sp = port
      ? ports.find((p) => String(p.port) === port || p.name === port || String(p.targetPort) === port)
      : ports.length === 1
        ? ports[0]
        : undefined;
    if (!sp) {
      throw new RdbgError(
        Codes.BAD_ARGUMENT,
        port ? `service ${name} has no port "${port}" (its ports: ${list})` : `service ${name} has several ports (${list}): say which one with --port LOCAL:REMOTE`,
      );
    }
    if (sp.protocol && sp.protocol !== 'TCP') throw new RdbgError(Codes.BAD_ARGUMENT, `port ${sp.port} of service ${name} is ${sp.protocol}: only TCP ports can be intercepted`);
    const labelSelector = Object.entries(selector).map(([k, v]) => `${k}=${v}`).join(',');
    const pods = (await this.core.listNamespacedPod({ namespace, labelSelector })).items.filter((p) => !p.metadata?.deletionTimestamp);
    if (pods.length === 0) throw new RdbgError(Codes.INTERCEPT_NOT_FOUND, `service ${name} selects no pods (selector ${labelSelector})`, 'start its workload first');
    const owners = new Map<string, WorkloadRef>();
    for (const p of pods) {
      const w = await this.ownerOf(p);
      owners.set(`${w.kind}/${w.name}`, w);
    }
    if (owners.size > 1) {
      throw new RdbgError(
        Codes.BAD_ARGUMENT,
        `service ${name} selects pods of several workloads (${[...owners.keys()].join(', ')})`,
        'intercept one of them by KIND/NAME, e.g. deployment/NAME',
      );
    }
    const w = [...owners.values()][0];
    const obj = (await this.tryRead(w))!;
    const target = this.targetOfWorkload(w, obj, String(sp.targetPort ?? sp.port), `port ${sp.port} of service ${name}`);
    return { ...target, service: name };
  }

  /** Follows ownerReferences: Pod -> ReplicaSet -> Deployment, or StatefulSet/DaemonSet, or the bare Pod. */
  private async ownerOf(pod: k8s.V1Pod): Promise<WorkloadRef> {
    const namespace = pod.metadata!.namespace!;
    const ref = pod.metadata?.ownerReferences?.find((o) => o.controller);
    if (!ref) return { kind: 'Pod', name: pod.metadata!.name!, namespace };
    if (ref.kind === 'ReplicaSet') {
      const rs = await this.tryRead({ kind: 'ReplicaSet', name: ref.name, namespace });
      const up = rs?.metadata?.ownerReferences?.find((o) => o.controller);
      if (up?.kind === 'Deployment') return { kind: 'Deployment', name: up.name, namespace };
      return { kind: 'ReplicaSet', name: ref.name, namespace };
    }
    if (ref.kind === 'StatefulSet' || ref.kind === 'DaemonSet') return { kind: ref.kind, name: ref.name, namespace };
    throw new RdbgError(Codes.BAD_ARGUMENT, `pod ${pod.metadata!.name} is owned by a ${ref.kind} (${ref.name}), which rdbg cannot inject into`);
  }

  private targetOfWorkload(w: WorkloadRef, obj: Obj, port?: string, via?: string): InterceptTarget {
    const podSpec: k8s.V1PodSpec = w.kind === 'Pod' ? obj.spec : obj.spec?.template?.spec;
    const containers = podSpec?.containers ?? [];
    const declared = containers.flatMap((c) => (c.ports ?? []).map((p) => ({ c, p })));
    let hit: { c: k8s.V1Container; p?: k8s.V1ContainerPort } | undefined;
    if (port && /^\d+$/.test(port)) {
      hit = declared.find((d) => d.p.containerPort === Number(port)) ?? (containers.length === 1 ? { c: containers[0] } : undefined);
      if (!hit) {
        throw new RdbgError(Codes.BAD_ARGUMENT, `no container of ${describe(w)} declares port ${port}, and it has several containers`, 'declare the port in the container spec');
      }
    } else if (port) {
      hit = declared.find((d) => d.p.name === port);
      if (!hit) throw new RdbgError(Codes.BAD_ARGUMENT, `${via ?? describe(w)} targets the port named "${port}", which no container of ${describe(w)} declares`);
    } else {
      const tcp = declared.filter((d) => (d.p.protocol ?? 'TCP') === 'TCP');
      if (tcp.length !== 1) {
        throw new RdbgError(Codes.BAD_ARGUMENT, `${describe(w)} has ${tcp.length || 'no'} TCP container ports: say which one with --port LOCAL:REMOTE`);
      }
      hit = tcp[0];
    }
    const appPort = hit.p?.containerPort ?? Number(port);
    const agentPort = port && !/^\d+$/.test(port) ? port : String(appPort);
    const replicas = w.kind === 'Pod' ? 1 : w.kind === 'DaemonSet' ? (obj.status?.desiredNumberScheduled ?? 1) : (obj.spec?.replicas ?? 1);
    return { workload: w, agentPort, appPort, container: hit.c.name, replicas };
  }
}
