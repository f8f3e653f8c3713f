// One kept connection pool per kubeconfig for the REST calls of
// @kubernetes/client-node. The library builds a new https.Agent for every
// request (KubeConfig.createAgent, called from applySecurityAuthentication
// and applyHTTPSOptions), so every API call opens a TCP connection and does a
// full TLS handshake: three round trips to the apiserver where one does, and
// the parsing of the CA, certificate and key each time. Port-forwards keep
// their own TLS reuse (apiserver.ts).
import * as http from 'node:http';
import * as https from 'node:https';
import type * as k8s from '@kubernetes/client-node';

/** Whether two pieces of TLS material (strings, Buffers, lists of them, options) are the same. */
export function sameMaterial(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => sameMaterial(x, b[i]));
  return false;
}

type AgentOptions = https.AgentOptions & Record<string, unknown>;
type CreateAgent = (cluster: k8s.Cluster | null, options: AgentOptions) => http.Agent;

const kept = new WeakSet<k8s.KubeConfig>();

/**
 * Makes the REST calls of `kc` share one keep-alive agent while the cluster
 * and credentials stay the same; a rotated client certificate (an exec
 * plugin's) gets a new agent, and the old one closes its idle connections.
 * A proxy's agent is left to client-node. Returns `kc`.
 */
export function keepConnections(kc: k8s.KubeConfig): k8s.KubeConfig {
  if (kept.has(kc)) return kc;
  kept.add(kc);
  const target = kc as unknown as { createAgent: CreateAgent };
  const original = target.createAgent.bind(kc);
  let current: { material: unknown[]; agent: http.Agent } | undefined;
  target.createAgent = (cluster, options) => {
    if (!cluster || cluster.proxyUrl) return original(cluster, options);
    const material = [cluster.server, cluster.skipTLSVerify, ...Object.keys(options).sort().flatMap((k) => [k, options[k]])];
    if (current && sameMaterial(current.material, material)) return current.agent;
    if (current) retire(current.agent);
    // client-node's own checks (an http: server only with skipTLSVerify) stay in one place
    const probe = original(cluster, options);
    const agent = probe instanceof https.Agent ? new https.Agent({ ...options, keepAlive: true }) : new http.Agent({ ...options, keepAlive: true });
    probe.destroy();
    current = { material, agent };
    return agent;
  };
  return kc;
}

/** Requests under way finish; no socket goes back to the pool. */
function retire(agent: http.Agent): void {
  (agent as unknown as { keepAlive: boolean }).keepAlive = false;
  for (const list of Object.values(agent.freeSockets)) for (const s of list ?? []) s.destroy();
}
