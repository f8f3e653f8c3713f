/**
 * Finds a ready pod by label selector, as `kubectl port-forward deploy/x`
 * does, and waits (bounded) for one to appear: after the manager pod is
 * deleted its replacement takes a few seconds to become ready.
 */
import * as k8s from '@kubernetes/client-node';
import { Codes, RdbgError, errorMessage } from '../core/errors';
import type { Kube } from './config';

export interface PodQuery {
  namespace: string;
  /** label selector, e.g. app.kubernetes.io/name=rdbg,app.kubernetes.io/component=manager */
  selector: string;
}

export function isReady(pod: k8s.V1Pod): boolean {
  if (pod.metadata?.deletionTimestamp || pod.status?.phase !== 'Running') return false;
  return pod.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

function describe(pod: k8s.V1Pod): string {
  const state = pod.metadata?.deletionTimestamp ? 'Terminating' : pod.status?.phase ?? 'Unknown';
  return `${pod.metadata?.name} (${state}${isReady(pod) ? ', ready' : ', not ready'})`;
}

/** Lists the pods matching the query, with errors a user can act on. */
export async function listPods(kube: Kube, q: PodQuery): Promise<k8s.V1Pod[]> {
  const api = kube.kc.makeApiClient(k8s.CoreV1Api);
  try {
    return (await api.listNamespacedPod({ namespace: q.namespace, labelSelector: q.selector })).items;
  } catch (err) {
    if (err instanceof k8s.ApiException && (err.code === 403 || err.code === 401)) {
      throw new RdbgError(Codes.PERMISSION, `the user of context "${kube.context}" may not list pods in namespace "${q.namespace}"`,
        `check with: kubectl auth can-i list pods -n ${q.namespace}`, { cause: err });
    }
    if (err instanceof k8s.ApiException) {
      throw new RdbgError(Codes.PORT_FORWARD, `listing pods in namespace "${q.namespace}" failed: HTTP ${err.code}`, undefined, { cause: err });
    }
    throw new RdbgError(Codes.APISERVER_UNREACHABLE, `cannot reach the Kubernetes apiserver at ${kube.server}: ${errorMessage(err)}`,
      'check your network/VPN and that `kubectl get pods` works with the same kubeconfig', { cause: err });
  }
}

/** The newest ready pod (during a rollout the old one is about to go), or undefined. */
export function pickReady(pods: k8s.V1Pod[], avoid?: string): k8s.V1Pod | undefined {
  const ready = pods.filter((p) => isReady(p) && p.metadata?.name !== avoid);
  const created = (p: k8s.V1Pod): number => new Date(p.metadata?.creationTimestamp ?? 0).getTime();
  return ready.sort((a, b) => created(b) - created(a))[0];
}

/**
 * Waits up to timeoutMs for a ready pod and returns its name. `avoid` (a pod
 * that just failed) is taken only when no other pod is ready: with one
 * replica, its connection broke for a reason outside it (containerd, the
 * kubelet, the apiserver restarted) and it is the pod to try again.
 */
export async function waitForReadyPod(kube: Kube, q: PodQuery, timeoutMs: number, avoid?: string, everyMs = 250): Promise<string> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const pods = await listPods(kube, q);
    const pod = pickReady(pods, avoid) ?? pickReady(pods);
    if (pod?.metadata?.name) return pod.metadata.name;
    if (Date.now() >= end) {
      const seen = pods.length ? `pods: ${pods.map(describe).join(', ')}` : 'no pods match';
      throw new RdbgError(Codes.NO_READY_POD,
        `no ready pod with labels ${q.selector} in namespace "${q.namespace}" after ${Math.round(timeoutMs / 1000)} s (${seen})`,
        `check with: kubectl -n ${q.namespace} get pods -l ${q.selector}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
