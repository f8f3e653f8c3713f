import * as k8s from '@kubernetes/client-node';
import { Codes, RdbgError, errorMessage } from '../../src/core/errors';
import { keepConnections } from '../../src/kube/keep-alive';

/** The API clients the manager uses, from one kubeconfig. */
export interface KubeApi {
  kc: k8s.KubeConfig;
  core: k8s.CoreV1Api;
  apps: k8s.AppsV1Api;
  networking: k8s.NetworkingV1Api;
  authn: k8s.AuthenticationV1Api;
  /** The apiserver's address, for logs. */
  server: string;
}

/**
 * In a pod: the pod's service account (in-cluster config). With a file (tests,
 * or a manager run outside the cluster): that kubeconfig's current context.
 */
export function loadKubeApi(kubeconfig?: string): KubeApi {
  const kc = new k8s.KubeConfig();
  try {
    if (kubeconfig) kc.loadFromFile(kubeconfig);
    else kc.loadFromCluster();
  } catch (err) {
    throw new RdbgError(Codes.BAD_ARGUMENT, `cannot load the Kubernetes configuration${kubeconfig ? ` from ${kubeconfig}` : ' of this pod'}: ${errorMessage(err)}`);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster?.server) {
    throw new RdbgError(
      Codes.BAD_ARGUMENT,
      kubeconfig ? `the kubeconfig ${kubeconfig} names no cluster` : 'not running in a pod (KUBERNETES_SERVICE_HOST is unset): pass --kubeconfig FILE',
    );
  }
  keepConnections(kc);
  return {
    kc,
    core: kc.makeApiClient(k8s.CoreV1Api),
    apps: kc.makeApiClient(k8s.AppsV1Api),
    networking: kc.makeApiClient(k8s.NetworkingV1Api),
    authn: kc.makeApiClient(k8s.AuthenticationV1Api),
    server: cluster.server,
  };
}

/** The HTTP status of a failed API call (0 when it never got an answer). */
export function apiStatus(err: unknown): number {
  const e = err as { code?: unknown; statusCode?: unknown };
  if (typeof e?.code === 'number') return e.code;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  return 0;
}

/** A short reason for a failed API call: the Status message rather than the whole response dump. */
export function apiReason(err: unknown): string {
  const e = err as { code?: number; body?: unknown };
  if (typeof e?.code === 'number') {
    let body = e.body;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body);
      } catch {
        // not JSON
      }
    }
    const msg = (body as { message?: string } | undefined)?.message;
    return `HTTP ${e.code}${msg ? `: ${msg}` : ''}`;
  }
  return errorMessage(err).split('\n')[0];
}
