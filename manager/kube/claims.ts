import { claimAnnotation } from '../../src/kube/marks';
import * as grpc from '@grpc/grpc-js';
import { logger } from '../../src/core/log';
import { apiReason, apiStatus, type KubeApi } from './api';
import type { AuthError } from './auth';

const log = logger('manager.claims');

export { claimAnnotation };

type Reader = (name: string, namespace: string) => Promise<{ metadata?: { annotations?: Record<string, string> } }>;

/**
 * Intercepting a workload takes the right to patch it: the client proves it has
 * that right by annotating the workload with a claim only its session can name
 * (see docs/kubernetes.md, "Intercept permission").
 */
export class ClaimChecker {
  private readonly kinds: [string, Reader][];

  constructor(api: KubeApi) {
    // The order in which a bare workload name is looked up.
    this.kinds = [
      ['Deployment', (name, namespace) => api.apps.readNamespacedDeployment({ name, namespace })],
      ['StatefulSet', (name, namespace) => api.apps.readNamespacedStatefulSet({ name, namespace })],
      ['ReplicaSet', (name, namespace) => api.apps.readNamespacedReplicaSet({ name, namespace })],
      ['DaemonSet', (name, namespace) => api.apps.readNamespacedDaemonSet({ name, namespace })],
      ['Pod', (name, namespace) => api.core.readNamespacedPod({ name, namespace })],
    ];
  }

  async check(sessionId: string, workload: string, namespace: string): Promise<AuthError | undefined> {
    const claim = claimAnnotation(sessionId);
    for (const [kind, read] of this.kinds) {
      let annotations: Record<string, string>;
      try {
        annotations = (await read(workload, namespace)).metadata?.annotations ?? {};
      } catch (err) {
        if (apiStatus(err) === 404) continue;
        return { code: grpc.status.UNAVAILABLE, details: `the traffic manager could not read ${kind} ${namespace}/${workload}: ${apiReason(err)}` };
      }
      if (annotations[claim.key] === claim.value) return undefined;
      log.warn('intercept refused: no claim', { workload: `${kind}/${workload}`, namespace, annotation: claim.key });
      return {
        code: grpc.status.PERMISSION_DENIED,
        details:
          `${kind} ${namespace}/${workload} carries no intercept claim of this session (annotation ${claim.key}): ` +
          `intercepting needs the right to patch the ${kind}, and "rdbg intercept" sets the claim when you have it`,
      };
    }
    const kinds = this.kinds.map(([k]) => k);
    return {
      code: grpc.status.NOT_FOUND,
      details: `no ${kinds.slice(0, -1).join(', ')} or ${kinds[kinds.length - 1]} named ${workload} in namespace ${namespace}`,
    };
  }
}
