import { claimAnnotation } from '../../src/kube/marks';
import * as grpc from '@grpc/grpc-js';
import { logger } from '../../src/core/log';
import { apiReason, apiStatus, type KubeApi } from './api';
import type { AuthError } from './auth';

const log = logger('manager.claims');

export { claimAnnotation };

/** How long a claim, once seen, stands for its session without being read again. */
export const CLAIM_TRUST_MS = 5 * 60_000;
const TRUSTED_MAX = 10_000;

type Reader = (name: string, namespace: string) => Promise<{ metadata?: { annotations?: Record<string, string> } }>;

/**
 * Intercepting a workload takes the right to patch it: the client proves it has
 * that right by annotating the workload with a claim only its session can name
 * (see docs/kubernetes.md, "Intercept permission"). A claim seen stands for
 * CLAIM_TRUST_MS: the session's next intercepts of that workload (a developer
 * switching rules) cost no read of the workload.
 */
export class ClaimChecker {
  private readonly kinds: [string, Reader][];
  /** session + workload -> until when its claim stands */
  private readonly trusted = new Map<string, number>();

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
    const key = `${sessionId}\n${namespace}\n${workload}`;
    if ((this.trusted.get(key) ?? 0) > Date.now()) return undefined;
    this.trusted.delete(key);
    const claim = claimAnnotation(sessionId);
    for (const [kind, read] of this.kinds) {
      let annotations: Record<string, string>;
      try {
        annotations = (await read(workload, namespace)).metadata?.annotations ?? {};
      } catch (err) {
        if (apiStatus(err) === 404) continue;
        return { code: grpc.status.UNAVAILABLE, details: `the traffic manager could not read ${kind} ${namespace}/${workload}: ${apiReason(err)}` };
      }
      if (annotations[claim.key] === claim.value) {
        this.trust(key);
        return undefined;
      }
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

  /** Forgets a session's claims (its end). */
  forget(sessionId: string): void {
    for (const k of this.trusted.keys()) if (k.startsWith(`${sessionId}\n`)) this.trusted.delete(k);
  }

  private trust(key: string): void {
    if (this.trusted.size >= TRUSTED_MAX) {
      const t = Date.now();
      for (const [k, until] of this.trusted) if (until <= t) this.trusted.delete(k);
      if (this.trusted.size >= TRUSTED_MAX) this.trusted.clear();
    }
    this.trusted.set(key, Date.now() + CLAIM_TRUST_MS);
  }
}
