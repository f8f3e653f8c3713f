import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { logger } from '../../src/core/log';
import type { AgentInfo__Output } from '../../src/gen/rdbg/v1/AgentInfo';
import { apiReason, apiStatus, type KubeApi } from './api';

const log = logger('manager.auth');

export const AGENT_AUDIENCE = 'rdbg';
export const INJECT_LABEL = 'rdbg.dev/inject';
export const WORKLOAD_ANNOTATION = 'rdbg.dev/workload';
const POD_NAME_EXTRA = 'authentication.kubernetes.io/pod-name';
const POD_UID_EXTRA = 'authentication.kubernetes.io/pod-uid';

/** How long an accepted token is trusted without asking the apiserver again. */
const CACHE_MS = 30_000;
const REINJECT = 'the workload must be injected by rdbg (the webhook mounts the token and sets RDBG_AGENT_TOKEN_FILE)';

export type AuthError = { code: grpc.status; details: string };

export interface AgentIdentity {
  namespace: string;
  pod: string;
  serviceAccount: string;
  /** the name in the pod's rdbg.dev/workload annotation ("<Kind>/<name>"), when it has one */
  workload?: string;
}

/**
 * Agents prove which pod they run in with a projected service-account token
 * (audience "rdbg"): the apiserver vouches for it (TokenReview), names the pod
 * it is bound to, and the manager checks that pod is one rdbg injected and
 * the one the agent says it is.
 */
export class AgentAuthenticator {
  private readonly cache = new Map<string, { identity: AgentIdentity; until: number }>();

  constructor(private readonly api: KubeApi) {}

  async check(info: AgentInfo__Output): Promise<AgentIdentity | AuthError> {
    const token = info.token.trim();
    if (!token) {
      return { code: grpc.status.UNAUTHENTICATED, details: `the agent presented no token: ${REINJECT}` };
    }
    const key = createHash('sha256').update(token).digest('hex');
    const cached = this.cache.get(key);
    const identity = cached && cached.until > Date.now() ? cached.identity : await this.review(token);
    if ('code' in identity) return identity;
    const claimed = this.matchClaims(identity, info);
    if (claimed) return claimed;
    if (!cached || cached.until <= Date.now()) {
      this.sweep();
      this.cache.set(key, { identity, until: Date.now() + CACHE_MS });
    }
    return identity;
  }

  private matchClaims(id: AgentIdentity, info: AgentInfo__Output): AuthError | undefined {
    if (info.namespace !== id.namespace || (info.pod_name && info.pod_name !== id.pod)) {
      const msg = `the agent claims pod ${info.pod_name || '?'} in namespace ${info.namespace}, but its token belongs to pod ${id.pod} in namespace ${id.namespace}`;
      log.warn('agent refused', { reason: msg });
      return { code: grpc.status.PERMISSION_DENIED, details: msg };
    }
    if (id.workload && info.workload !== id.workload) {
      const msg = `the agent claims workload ${info.workload}, but its pod ${id.namespace}/${id.pod} belongs to ${id.workload}`;
      log.warn('agent refused', { reason: msg });
      return { code: grpc.status.PERMISSION_DENIED, details: msg };
    }
    return undefined;
  }

  private async review(token: string): Promise<AgentIdentity | AuthError> {
    let status;
    try {
      const r = await this.api.authn.createTokenReview({ body: { spec: { token, audiences: [AGENT_AUDIENCE] } } });
      status = r.status;
    } catch (err) {
      log.warn('TokenReview failed', { err: apiReason(err) });
      return { code: grpc.status.UNAVAILABLE, details: `the traffic manager could not check the agent's token with the apiserver (TokenReview: ${apiReason(err)})` };
    }
    if (!status?.authenticated) {
      const why = status?.error || 'not authenticated';
      log.warn('agent token rejected', { reason: why });
      return { code: grpc.status.UNAUTHENTICATED, details: `the apiserver rejected the agent's token (audience "${AGENT_AUDIENCE}"): ${why}` };
    }
    const username = status.user?.username ?? '';
    const sa = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(username);
    const pod = status.user?.extra?.[POD_NAME_EXTRA]?.[0];
    const uid = status.user?.extra?.[POD_UID_EXTRA]?.[0];
    if (!sa || !pod) {
      return {
        code: grpc.status.UNAUTHENTICATED,
        details: `the agent's token is not a pod-bound service-account token (user "${username}"): ${REINJECT}`,
      };
    }
    const id: AgentIdentity = { namespace: sa[1], serviceAccount: sa[2], pod };
    let labels: Record<string, string> = {};
    try {
      const p = await this.api.core.readNamespacedPod({ name: pod, namespace: id.namespace });
      if (uid && p.metadata?.uid !== uid) {
        return { code: grpc.status.UNAUTHENTICATED, details: `the agent's token belongs to an earlier pod named ${pod} (it was deleted)` };
      }
      labels = p.metadata?.labels ?? {};
      const workload = p.metadata?.annotations?.[WORKLOAD_ANNOTATION];
      if (workload) id.workload = workload.slice(workload.indexOf('/') + 1);
    } catch (err) {
      if (apiStatus(err) === 404) {
        return { code: grpc.status.PERMISSION_DENIED, details: `the agent's pod ${id.namespace}/${pod} does not exist` };
      }
      return { code: grpc.status.UNAVAILABLE, details: `the traffic manager could not read the agent's pod ${id.namespace}/${pod}: ${apiReason(err)}` };
    }
    if (labels[INJECT_LABEL] !== 'enabled') {
      log.warn('agent refused', { pod: `${id.namespace}/${pod}`, reason: `no label ${INJECT_LABEL}=enabled` });
      return {
        code: grpc.status.PERMISSION_DENIED,
        details: `the agent's pod ${id.namespace}/${pod} is not marked for rdbg (label ${INJECT_LABEL}=enabled): only pods rdbg injected may run agents`,
      };
    }
    return id;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, v] of this.cache) if (v.until <= now) this.cache.delete(k);
  }
}
