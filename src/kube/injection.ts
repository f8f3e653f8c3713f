// Putting the agent into a workload's pods and taking it out again. rdbg
// only marks the pod template (docs/kubernetes.md, "Injection"); the
// manager's webhook adds the agent when the pods are created. Marking
// restarts the pods once; a workload already marked for the same port is
// left alone, so switching intercepts on and off never restarts pods.
import * as k8s from '@kubernetes/client-node';
import { Codes, RdbgError } from '../core/errors';
import { apiReason, KubeClient, statusOf } from './apply';
import { claimAnnotation, unmarkPatch, type MarkedWorkload } from './marks';
import {
  AGENT_PORT_ANNOTATION,
  apiVersionOf,
  CLAIM_PREFIX,
  describe,
  INJECT_LABEL,
  kubeError,
  selectorText,
  WORKLOAD_ANNOTATION,
  type InterceptTarget,
  type WorkloadRef,
  type Workloads,
} from './workloads';

export const AGENT_CONTAINER = 'rdbg-agent';

type Progress = (line: string) => void;
type Obj = k8s.KubernetesObject & { spec?: any; status?: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function templateMeta(w: WorkloadRef, obj: Obj): k8s.V1ObjectMeta {
  return (w.kind === 'Pod' ? obj.metadata : obj.spec?.template?.metadata) ?? {};
}

/** The merge patch that puts the marks on the pod template (unmarkPatch takes them off). */
function marksPatch(w: WorkloadRef, agentPort: string): object {
  const meta = {
    labels: { [INJECT_LABEL]: 'enabled' },
    annotations: { [AGENT_PORT_ANNOTATION]: agentPort, [WORKLOAD_ANNOTATION]: `${w.kind}/${w.name}` },
  };
  return w.kind === 'Pod' ? { metadata: meta } : { spec: { template: { metadata: meta } } };
}

async function mergePatch(ws: Workloads, w: WorkloadRef, body: object, what: string): Promise<void> {
  try {
    await ws.objects.patch(
      { ...body, apiVersion: apiVersionOf(w.kind), kind: w.kind, metadata: { ...(body as { metadata?: object }).metadata, name: w.name, namespace: w.namespace } },
      undefined,
      undefined,
      'rdbg',
      undefined,
      k8s.PatchStrategy.MergePatch,
    );
  } catch (err) {
    throw kubeError(err, `${what} ${describe(w)}`);
  }
}

export interface MarkResult {
  restarted: boolean;
}

/** One pod of the workload as it would be created once marked (for a dry run). */
function markedPod(w: WorkloadRef, obj: Obj, agentPort: string): k8s.V1Pod {
  const meta = templateMeta(w, obj);
  const spec: k8s.V1PodSpec = w.kind === 'Pod' ? { ...obj.spec, nodeName: undefined } : obj.spec?.template?.spec;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: `${w.name.slice(0, 40)}-rdbg-check-`,
      namespace: w.namespace,
      labels: { ...meta.labels, [INJECT_LABEL]: 'enabled' },
      annotations: { ...meta.annotations, [AGENT_PORT_ANNOTATION]: agentPort, [WORKLOAD_ANNOTATION]: `${w.kind}/${w.name}` },
    },
    spec,
  };
}

/** The apiserver refused the workload's pods with the agent: the cause in its words, and the way out. */
export function admissionRejection(t: InterceptTarget, reason: string): RdbgError {
  const w = t.workload;
  const ns = w.namespace;
  const psa = /PodSecurity/.test(reason);
  const numeric = /^\d+$/.test(t.agentPort);
  const message = `the apiserver rejects the pods of ${describe(w)} with the rdbg agent: ${reason}`;
  let hint: string;
  if (psa && numeric) {
    hint =
      `${t.service ? `service ${t.service} targets` : 'the intercept takes'} container port ${t.appPort} by number, so the agent's init container ` +
      'redirects it with iptables, which needs the NET_ADMIN capability that this Pod Security level forbids. ' +
      `Name the port instead: give containerPort ${t.appPort} of container ${t.container} a name (e.g. "name: http")` +
      `${t.service ? ` and set service ${t.service}'s targetPort to that name` : ' and intercept the port by that name'}; ` +
      `the agent then needs no capability. Or have an admin label namespace ${ns} pod-security.kubernetes.io/enforce=privileged`;
  } else if (psa) {
    hint = `ask an admin to relax namespace ${ns}'s pod-security.kubernetes.io/enforce label ("rdbg doctor -n ${ns}" shows the levels)`;
  } else {
    hint = `an admission policy of the cluster refuses the agent; "rdbg doctor -n ${ns}" runs the same check`;
  }
  return new RdbgError(Codes.ADMISSION, message, hint);
}

/**
 * Whether the apiserver admits the workload's pods once they carry the agent:
 * one pod of its template with the marks, created with dryRun=All (the webhook
 * adds the agent; Pod Security and every other admission check run; nothing is
 * stored). Undefined when admitted, or when this user may not create pods: the
 * rollout then reports a rejection (waitForRollout).
 */
export async function admissionProblem(ws: Workloads, t: InterceptTarget, obj?: Obj): Promise<RdbgError | undefined> {
  const w = t.workload;
  const o = obj ?? (await ws.read(w).catch((err) => Promise.reject(kubeError(err, `reading ${describe(w)}`))));
  try {
    await ws.core.createNamespacedPod({ namespace: w.namespace, body: markedPod(w, o as Obj, t.agentPort), dryRun: 'All' });
    return undefined;
  } catch (err) {
    const status = statusOf(err);
    const reason = apiReason(err);
    if (status === undefined) throw kubeError(err, `checking that ${describe(w)} admits the agent`);
    // RBAC: no right to create pods (a dry run needs it); not a verdict on the agent
    if (status === 403 && /cannot create resource/.test(reason)) return undefined;
    if (status === 403 || status === 400 || status === 422) return admissionRejection(t, reason);
    throw kubeError(err, `checking that ${describe(w)} admits the agent`);
  }
}

export interface EnsureOptions {
  timeoutMs?: number;
  /**
   * 'first': done when one pod is ready with the agent (the intercept can
   * start there while the rollout goes on); 'all' (the default): when every
   * pod is, and no pod of the old shape is left.
   */
  until?: 'first' | 'all';
}

/** Marks the workload for the agent (once) and waits until its pods run it (opts.until). */
export async function ensureAgent(ws: Workloads, t: InterceptTarget, progress: Progress, opts: EnsureOptions = {}): Promise<MarkResult> {
  const timeoutMs = opts.timeoutMs ?? 300_000;
  const first = opts.until === 'first';
  const w = t.workload;
  const obj = await ws.read(w).catch((err) => Promise.reject(kubeError(err, `reading ${describe(w)}`)));
  const meta = templateMeta(w, obj);
  const marked = meta.labels?.[INJECT_LABEL] === 'enabled';
  const current = meta.annotations?.[AGENT_PORT_ANNOTATION];
  if (marked && current === t.agentPort) {
    await waitForRollout(ws, w, progress, timeoutMs, true, t, first);
    return { restarted: false };
  }
  if (marked && current !== t.agentPort) {
    throw new RdbgError(
      Codes.INTERCEPT_CONFLICT,
      `the rdbg agent of ${describe(w)} takes over port ${current}, not ${t.agentPort}`,
      `end the intercepts on port ${current}, then "rdbg uninstall ${w.kind.toLowerCase()}/${w.name} -n ${w.namespace}" and intercept again`,
    );
  }
  // Before anything changes: a pod the apiserver would refuse must not cost the workload a rollout.
  const refused = await admissionProblem(ws, t, obj);
  if (refused) throw refused;
  progress(`injecting the rdbg agent into ${describe(w)} (port ${t.agentPort}); its pods restart once`);
  if (w.kind === 'Pod') await recreatePod(ws, w, obj, t.agentPort, t);
  else await mergePatch(ws, w, marksPatch(w, t.agentPort), 'marking');
  if (w.kind === 'ReplicaSet') await replaceReplicaSetPods(ws, w, true);
  try {
    await waitForRollout(ws, w, progress, timeoutMs, true, t, first);
  } catch (err) {
    if (!(err instanceof RdbgError) || err.code !== Codes.ADMISSION) throw err;
    // Refused at creation (the dry run was not allowed, or a check runs only then): the workload goes back as it was.
    progress(`the apiserver refuses the pods with the agent; taking the marks off ${describe(w)} again`);
    await removeAgent(ws, w, progress, false).catch((e) => progress(`could not take the marks off: ${(e as Error).message}`));
    throw err;
  }
  return { restarted: true };
}

/** Removes the marks and every claim: the pod template is as it was before rdbg. */
export async function removeAgent(ws: Workloads, w: WorkloadRef, progress: Progress, wait = true): Promise<boolean> {
  const obj = await ws.read(w).catch((err) => Promise.reject(kubeError(err, `reading ${describe(w)}`)));
  const meta = templateMeta(w, obj);
  const marked = meta.labels?.[INJECT_LABEL] !== undefined || meta.annotations?.[AGENT_PORT_ANNOTATION] !== undefined;
  if (w.kind !== 'Pod') {
    // exactly the marks and claims, nothing else (the same patch as "rdbg uninstall --all")
    const ops = unmarkPatch(obj as MarkedWorkload);
    if (ops.length > 0) await new KubeClient(ws.kc).patchWorkload(w.kind, w.namespace, w.name, ops);
  }
  if (!marked) return false;
  progress(`removing the rdbg agent from ${describe(w)}; its pods restart once`);
  if (w.kind === 'Pod') await recreatePod(ws, w, obj, null);
  if (w.kind === 'ReplicaSet') await replaceReplicaSetPods(ws, w, false);
  if (wait) await waitForRollout(ws, w, progress, 300_000, false);
  return true;
}

/** The claim that lets this session intercept the workload (needs patch rights on it). */
export async function setClaim(ws: Workloads, w: WorkloadRef, sessionId: string, on: boolean): Promise<void> {
  const { key, value } = claimAnnotation(sessionId);
  await mergePatch(ws, w, { metadata: { annotations: { [key]: on ? value : null } } }, on ? 'claiming' : 'releasing the claim on');
}

/** A bare pod has no template: it is recreated from its own spec, with or without the marks. */
async function recreatePod(ws: Workloads, w: WorkloadRef, obj: Obj, agentPort: string | null, t?: InterceptTarget): Promise<void> {
  const pod = obj as k8s.V1Pod;
  const labels = { ...(pod.metadata?.labels ?? {}) };
  const annotations = { ...(pod.metadata?.annotations ?? {}) };
  if (agentPort === null) {
    delete labels[INJECT_LABEL];
    delete annotations[AGENT_PORT_ANNOTATION];
    delete annotations[WORKLOAD_ANNOTATION];
    delete annotations['rdbg.dev/injected'];
    for (const k of Object.keys(annotations)) if (k.startsWith(CLAIM_PREFIX)) delete annotations[k];
  } else {
    labels[INJECT_LABEL] = 'enabled';
    annotations[AGENT_PORT_ANNOTATION] = agentPort;
    annotations[WORKLOAD_ANNOTATION] = `Pod/${w.name}`;
  }
  const spec = { ...pod.spec! };
  if (agentPort === null) {
    // what the webhook added goes with the marks
    spec.containers = spec.containers.filter((c) => c.name !== AGENT_CONTAINER);
    spec.initContainers = spec.initContainers?.filter((c) => !c.name.startsWith(AGENT_CONTAINER));
    spec.volumes = spec.volumes?.filter((v) => !v.name.startsWith('rdbg-'));
  }
  const fresh: k8s.V1Pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: w.name, namespace: w.namespace, labels, annotations }, spec };
  try {
    await ws.core.deleteNamespacedPod({ name: w.name, namespace: w.namespace });
    for (let i = 0; i < 120; i++) {
      try {
        await ws.core.readNamespacedPod({ name: w.name, namespace: w.namespace });
      } catch {
        break;
      }
      await sleep(500);
    }
  } catch (err) {
    throw kubeError(err, `recreating ${describe(w)}`);
  }
  try {
    await ws.core.createNamespacedPod({ namespace: w.namespace, body: fresh });
  } catch (err) {
    if (agentPort === null || !t) throw kubeError(err, `recreating ${describe(w)}`);
    // Refused with the agent: the pod comes back as it was.
    const original: k8s.V1Pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: w.name, namespace: w.namespace, labels: pod.metadata?.labels, annotations: pod.metadata?.annotations }, spec: pod.spec };
    await ws.core.createNamespacedPod({ namespace: w.namespace, body: original }).catch((e) => Promise.reject(kubeError(e, `recreating ${describe(w)} as it was`)));
    throw statusOf(err) === 403 || statusOf(err) === 422 ? admissionRejection(t, apiReason(err)) : kubeError(err, `recreating ${describe(w)}`);
  }
}

/** A ReplicaSet does not roll its pods when its template changes: its pods of the old shape are deleted. */
async function replaceReplicaSetPods(ws: Workloads, w: WorkloadRef, withAgent: boolean): Promise<void> {
  const pods = await podsOf(ws, w);
  for (const p of pods) {
    if (hasAgent(p) !== withAgent) await ws.core.deleteNamespacedPod({ name: p.metadata!.name!, namespace: w.namespace }).catch(() => undefined);
  }
}

export function hasAgent(p: k8s.V1Pod): boolean {
  return (p.spec?.containers ?? []).some((c) => c.name === AGENT_CONTAINER);
}

/** The live pods of a workload, found through its selector and ownership. */
export async function podsOf(ws: Workloads, w: WorkloadRef, terminating = false, read?: Obj): Promise<k8s.V1Pod[]> {
  if (w.kind === 'Pod') {
    try {
      return [await ws.core.readNamespacedPod({ name: w.name, namespace: w.namespace })];
    } catch {
      return [];
    }
  }
  const obj = read ?? (await ws.read(w));
  const items = (await ws.core.listNamespacedPod({ namespace: w.namespace, labelSelector: selectorText(obj.spec?.selector?.matchLabels) })).items;
  return terminating ? items : items.filter((p) => !p.metadata?.deletionTimestamp);
}

function ready(p: k8s.V1Pod): boolean {
  return p.status?.phase === 'Running' && (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** A refusal that stays: admission said no (a full quota may pass once old pods go). */
const REFUSED = (reason: string): boolean => (/is forbidden/.test(reason) && !/exceeded quota/i.test(reason)) || /denied the request/.test(reason);

type EventCounts = Map<string, number>;

/** FailedCreate events of the workload itself (StatefulSet, DaemonSet: they carry no failure condition). */
async function failedCreates(ws: Workloads, w: WorkloadRef): Promise<{ counts: EventCounts; messages: Map<string, string> }> {
  const counts: EventCounts = new Map();
  const messages = new Map<string, string>();
  if (w.kind !== 'StatefulSet' && w.kind !== 'DaemonSet') return { counts, messages };
  const fieldSelector = `involvedObject.kind=${w.kind},involvedObject.name=${w.name},reason=FailedCreate`;
  const list = await ws.core.listNamespacedEvent({ namespace: w.namespace, fieldSelector }).catch(() => undefined);
  for (const e of list?.items ?? []) {
    counts.set(e.metadata.uid ?? e.metadata.name ?? '', e.count ?? 1);
    messages.set(e.metadata.uid ?? e.metadata.name ?? '', e.message ?? '');
  }
  return { counts, messages };
}

/** Why the workload's controller cannot create its pods, when admission refuses them; events older than `before` do not count. */
async function creationRefused(ws: Workloads, w: WorkloadRef, obj: Obj | undefined, before: EventCounts): Promise<string | undefined> {
  const cond = ((obj?.status?.conditions ?? []) as { type: string; status: string; message?: string }[]).find((c) => c.type === 'ReplicaFailure' && c.status === 'True');
  if (cond?.message && REFUSED(cond.message)) return cond.message;
  const now = await failedCreates(ws, w);
  for (const [id, n] of now.counts) {
    const msg = now.messages.get(id) ?? '';
    if (n > (before.get(id) ?? 0) && REFUSED(msg)) return msg.replace(/^create Pod \S+ in \S+ \S+ failed error: /, '');
  }
  return undefined;
}

/**
 * Waits until every pod of the workload is ready and (un)injected; prints
 * progress as it changes. With `target`, a refusal by admission of the new
 * pods ends the wait at once with the cause (Codes.ADMISSION).
 */
function wantedPods(w: WorkloadRef, obj: Obj | undefined): number {
  return w.kind === 'Pod' ? 1 : w.kind === 'DaemonSet' ? (obj?.status?.desiredNumberScheduled ?? 1) : (obj?.spec?.replicas ?? 1);
}

/** Terminating pods of the old shape still answer requests: a rollout is done when they are gone. */
function staleCount(all: k8s.V1Pod[], withAgent: boolean): number {
  return all.filter((p) => hasAgent(p) !== withAgent).length;
}

/**
 * Whether the workload is as ensureAgent leaves it for `t`: marked for its
 * port, and every pod ready with the agent, none of the old shape left. Reads
 * only (the workload and its pods), so an intercept of a workload whose agent
 * is in needs no write but its claim. `read`: the workload and all its pods
 * (terminating ones too), when the caller has just read them.
 */
export async function agentInPlace(ws: Workloads, t: InterceptTarget, read?: { object: Obj; pods: k8s.V1Pod[] }): Promise<boolean> {
  const w = t.workload;
  const obj = read?.object ?? (await ws.read(w));
  const meta = templateMeta(w, obj);
  if (meta.labels?.[INJECT_LABEL] !== 'enabled' || meta.annotations?.[AGENT_PORT_ANNOTATION] !== t.agentPort) return false;
  const all = read?.pods ?? (await podsOf(ws, w, true, obj));
  const good = all.filter((p) => !p.metadata?.deletionTimestamp && ready(p) && hasAgent(p)).length;
  return good >= wantedPods(w, obj) && staleCount(all, true) === 0;
}

/**
 * Wakes the rollout loop at once when a pod of the workload changes (a watch
 * on its pods), so that a pod turning ready is seen in milliseconds; the loop
 * still looks every second, whatever the watch does.
 */
async function podChanges(ws: Workloads, w: WorkloadRef, obj: Obj | undefined, wake: () => void): Promise<() => void> {
  const sel = w.kind === 'Pod' ? `metadata.name=${w.name}` : selectorText(obj?.spec?.selector?.matchLabels);
  const query = w.kind === 'Pod' ? { fieldSelector: sel } : { labelSelector: sel };
  if (!sel) return () => undefined;
  try {
    const ctl = await new k8s.Watch(ws.kc).watch(`/api/v1/namespaces/${w.namespace}/pods`, query, () => wake(), () => undefined);
    return () => ctl.abort();
  } catch {
    return () => undefined; // no watch right: the loop's own pace
  }
}

export async function waitForRollout(
  ws: Workloads,
  w: WorkloadRef,
  progress: Progress,
  timeoutMs: number,
  withAgent: boolean,
  target?: InterceptTarget,
  firstOnly = false,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  const before = target ? (await failedCreates(ws, w)).counts : new Map<string, number>();
  let wake: (() => void) | undefined;
  let changed = false;
  let stop: (() => void) | undefined;
  try {
    for (;;) {
      changed = false;
      const obj = await ws.read(w).catch(() => undefined);
      stop ??= await podChanges(ws, w, obj, () => {
        changed = true;
        wake?.();
      });
      if (target) {
        const refused = await creationRefused(ws, w, obj, before);
        if (refused) throw admissionRejection(target, refused);
      }
      const want = wantedPods(w, obj);
      const all = await podsOf(ws, w, true, obj).catch(() => [] as k8s.V1Pod[]);
      const pods = all.filter((p) => !p.metadata?.deletionTimestamp);
      const good = pods.filter((p) => ready(p) && hasAgent(p) === withAgent).length;
      const stale = staleCount(all, withAgent);
      const line = `rollout of ${w.kind.toLowerCase()}/${w.name}: ${good} of ${want} pods ready ${withAgent ? 'with' : 'without'} the agent${stale ? `, ${stale} old pods still running` : ''}`;
      if (line !== last) progress(line);
      last = line;
      if (good >= want && stale === 0) return;
      if (firstOnly && good > 0) return;
      const withoutAgent = pods.filter((p) => ready(p) && !hasAgent(p) && p.metadata?.labels?.[INJECT_LABEL] === 'enabled');
      if (withAgent && withoutAgent.length > 0 && withoutAgent.length >= want) {
        throw new RdbgError(
          Codes.MANAGER_UNREACHABLE,
          `the pods of ${describe(w)} came up without the rdbg agent: the injection webhook did not run`,
          'is the traffic manager installed ("rdbg manager install")? "rdbg doctor" checks the webhook',
        );
      }
      const failing = pods.flatMap((p) => (p.status?.containerStatuses ?? []).filter((c) => c.state?.waiting?.reason && /Err|BackOff/.test(c.state.waiting.reason)).map((c) => `${p.metadata?.name}/${c.name}: ${c.state!.waiting!.reason}`));
      if (Date.now() > until) {
        throw new RdbgError(Codes.MANAGER_UNREACHABLE, `the rollout of ${describe(w)} did not finish in ${Math.round(timeoutMs / 1000)} s (${line})${failing.length ? `; ${failing.join(', ')}` : ''}`, `see "kubectl -n ${w.namespace} describe pods"`);
      }
      if (!changed) {
        await new Promise<void>((r) => {
          const timer = setTimeout(r, 1000);
          wake = () => {
            clearTimeout(timer);
            r();
          };
        });
        wake = undefined;
      }
    }
  } finally {
    stop?.();
  }
}
