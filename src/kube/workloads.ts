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

/**
 * What one resolution of a name found, so that the next resolution of the same
 * name can check it with one round of parallel reads instead of following
 * the chain (Service -> pods -> ReplicaSet -> Deployment) again.
 */
export interface ResolveHint {
  workload: WorkloadRef;
  /** the Service's selector, when the name is a Service */
  serviceSelector?: string;
  /** the workload's pod selector */
  podSelector: string;
}

/** A target with the objects read to find it: the workload and all of its pods (terminating ones too). */
export interface Resolved {
  target: InterceptTarget;
  object: Obj;
  pods: k8s.V1Pod[];
  hint: ResolveHint;
}

/** A label selector as the API takes it (keys sorted, so that two texts of one selector are equal). */
export const selectorText = (sel: Record<string, string> | undefined): string =>
  Object.entries(sel ?? {})
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

/** The selector of a workload's pods (a bare pod has none: it is its own pod). */
function podSelectorOf(w: WorkloadRef, obj: Obj): string {
  return w.kind === 'Pod' ? '' : selectorText(obj.spec?.selector?.matchLabels);
}

const live = (pods: k8s.V1Pod[]): k8s.V1Pod[] => pods.filter((p) => !p.metadata?.deletionTimestamp);

/** Owners of ReplicaSets, remembered: a ReplicaSet's controller does not change. */
const OWNER_CACHE_MAX = 1000;

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
  private readonly replicaSetOwners = new Map<string, WorkloadRef>();
  private readonly ownerReads = new Map<string, Promise<WorkloadRef>>();

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
    return (await this.lookup(name, namespace, port)).target;
  }

  /**
   * resolve(), with the workload and its pods as read. With the hint of an
   * earlier lookup of the same name, the Service, the workload and the pods
   * are read at once (one round trip), and the chain is followed again only
   * when they no longer match the hint.
   */
  async lookup(name: string, namespace: string, port?: string, hint?: ResolveHint): Promise<Resolved> {
    if (hint && hint.workload.namespace === namespace) {
      const quick = await this.checkHint(name, namespace, port, hint);
      if (quick) return quick;
    }
    const slash = name.indexOf('/');
    if (slash > 0) {
      const w = { kind: kindOf(name.slice(0, slash)), name: name.slice(slash + 1), namespace };
      const obj = await this.tryRead(w);
      if (!obj) throw new RdbgError(Codes.INTERCEPT_NOT_FOUND, `${describe(w)} does not exist`);
      return this.withPods(this.targetOfWorkload(w, obj, port), obj);
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
      if (obj) return this.withPods(this.targetOfWorkload(w, obj, port), obj);
    }
    throw new RdbgError(
      Codes.INTERCEPT_NOT_FOUND,
      `no service, deployment, statefulset, replicaset or daemonset named "${name}" in namespace ${namespace}`,
      `list them with "kubectl -n ${namespace} get svc,deploy,sts"`,
    );
  }

  /**
   * The hint checked in one round of parallel reads: the Service of that name
   * (it must still select as before, or still not exist), the workload (its
   * pod selector unchanged) and the pods. Undefined when anything differs.
   */
  private async checkHint(name: string, namespace: string, port: string | undefined, hint: ResolveHint): Promise<Resolved | undefined> {
    const w = hint.workload;
    const bare = name.indexOf('/') < 0;
    const list = (selector: string): Promise<k8s.V1Pod[]> => this.core.listNamespacedPod({ namespace, labelSelector: selector }).then((l) => l.items);
    const notFound = (err: unknown): undefined => {
      if (statusOf(err) === 404) return undefined;
      throw err;
    };
    let svc: k8s.V1Service | undefined, obj: Obj | undefined, servicePods: k8s.V1Pod[] | undefined, workloadPods: k8s.V1Pod[] | undefined;
    try {
      [svc, obj, servicePods, workloadPods] = await Promise.all([
        bare ? this.core.readNamespacedService({ name, namespace }).catch(notFound) : undefined,
        this.tryRead(w),
        hint.serviceSelector ? list(hint.serviceSelector) : undefined,
        w.kind === 'Pod' || hint.podSelector === hint.serviceSelector ? undefined : list(hint.podSelector),
      ]);
    } catch {
      return undefined; // the full lookup reports what is wrong
    }
    if (!obj || podSelectorOf(w, obj) !== hint.podSelector) return undefined;
    if (Boolean(svc) !== Boolean(hint.serviceSelector) || (svc && selectorText(svc.spec?.selector) !== hint.serviceSelector)) return undefined;
    const pods = w.kind === 'Pod' ? [obj as k8s.V1Pod] : (workloadPods ?? servicePods ?? []);
    if (!svc) return { target: this.targetOfWorkload(w, obj, port), object: obj, pods, hint };
    const owners = await this.ownersOf(live(servicePods ?? [])).catch(() => undefined);
    if (!owners || owners.size !== 1 || !owners.has(`${w.kind}/${w.name}`)) return undefined;
    return { target: this.serviceTarget(svc, w, obj, port), object: obj, pods, hint };
  }

  /** The workload's pods, for a target found without them. */
  private async withPods(target: InterceptTarget, obj: Obj, known?: { selector: string; pods: k8s.V1Pod[] }): Promise<Resolved> {
    const w = target.workload;
    const podSelector = podSelectorOf(w, obj);
    const pods =
      w.kind === 'Pod'
        ? [obj as k8s.V1Pod]
        : known?.selector === podSelector
          ? known.pods
          : (await this.core.listNamespacedPod({ namespace: w.namespace, labelSelector: podSelector })).items;
    return { target, object: obj, pods, hint: { workload: w, podSelector, serviceSelector: known?.selector } };
  }

  /** The Service's port that the intercept means, as the Service's targetPort names it. */
  private servicePort(svc: k8s.V1Service, port?: string): k8s.V1ServicePort {
    const name = svc.metadata!.name!;
    const ports = svc.spec?.ports ?? [];
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
    return sp;
  }

  private serviceTarget(svc: k8s.V1Service, w: WorkloadRef, obj: Obj, port?: string): InterceptTarget {
    const name = svc.metadata!.name!;
    const sp = this.servicePort(svc, port);
    const target = this.targetOfWorkload(w, obj, String(sp.targetPort ?? sp.port), `port ${sp.port} of service ${name}`);
    return { ...target, service: name };
  }

  private async targetOfService(svc: k8s.V1Service, namespace: string, port?: string): Promise<Resolved> {
    const name = svc.metadata!.name!;
    const selector = svc.spec?.selector;
    if (!selector || Object.keys(selector).length === 0) {
      throw new RdbgError(Codes.BAD_ARGUMENT, `service ${name} has no selector, so no workload serves it`, 'intercept the workload by name instead');
    }
    this.servicePort(svc, port); // a wrong port is said before anything else is read
    const labelSelector = selectorText(selector);
    const all = (await this.core.listNamespacedPod({ namespace, labelSelector })).items;
    const pods = live(all);
    if (pods.length === 0) throw new RdbgError(Codes.INTERCEPT_NOT_FOUND, `service ${name} selects no pods (selector ${labelSelector})`, 'start its workload first');
    const owners = await this.ownersOf(pods);
    if (owners.size > 1) {
      throw new RdbgError(
        Codes.BAD_ARGUMENT,
        `service ${name} selects pods of several workloads (${[...owners.keys()].join(', ')})`,
        'intercept one of them by KIND/NAME, e.g. deployment/NAME',
      );
    }
    const w = [...owners.values()][0];
    const obj = await this.tryRead(w);
    if (!obj) throw new RdbgError(Codes.INTERCEPT_NOT_FOUND, `${describe(w)}, which serves service ${name}, does not exist`);
    return this.withPods(this.serviceTarget(svc, w, obj, port), obj, { selector: labelSelector, pods: all });
  }

  /** The workloads that own these pods, by KIND/NAME; each ReplicaSet is read once, and in parallel. */
  private async ownersOf(pods: k8s.V1Pod[]): Promise<Map<string, WorkloadRef>> {
    const refs = await Promise.all(pods.map((p) => this.ownerOf(p)));
    return new Map(refs.map((w) => [`${w.kind}/${w.name}`, w]));
  }

  /** Follows ownerReferences: Pod -> ReplicaSet -> Deployment, or StatefulSet/DaemonSet, or the bare Pod. */
  private async ownerOf(pod: k8s.V1Pod): Promise<WorkloadRef> {
    const namespace = pod.metadata!.namespace!;
    const ref = pod.metadata?.ownerReferences?.find((o) => o.controller);
    if (!ref) return { kind: 'Pod', name: pod.metadata!.name!, namespace };
    if (ref.kind === 'ReplicaSet') {
      const key = `${namespace}/${ref.name}/${ref.uid}`;
      const known = this.replicaSetOwners.get(key);
      if (known) return known;
      let pending = this.ownerReads.get(key);
      if (!pending) {
        pending = this.readOwner(key, ref.name, namespace).finally(() => this.ownerReads.delete(key));
        this.ownerReads.set(key, pending);
      }
      return pending;
    }
    if (ref.kind === 'StatefulSet' || ref.kind === 'DaemonSet') return { kind: ref.kind, name: ref.name, namespace };
    throw new RdbgError(Codes.BAD_ARGUMENT, `pod ${pod.metadata!.name} is owned by a ${ref.kind} (${ref.name}), which rdbg cannot inject into`);
  }

  private async readOwner(key: string, name: string, namespace: string): Promise<WorkloadRef> {
    const rs = await this.tryRead({ kind: 'ReplicaSet', name, namespace });
    const up = rs?.metadata?.ownerReferences?.find((o) => o.controller);
    const w: WorkloadRef = up?.kind === 'Deployment' ? { kind: 'Deployment', name: up.name, namespace } : { kind: 'ReplicaSet', name, namespace };
    if (!rs) return w; // gone: not remembered
    if (this.replicaSetOwners.size >= OWNER_CACHE_MAX) this.replicaSetOwners.clear();
    this.replicaSetOwners.set(key, w);
    return w;
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
