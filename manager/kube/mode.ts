import { logger } from '../../src/core/log';
import type { AgentInfo__Output } from '../../src/gen/rdbg/v1/AgentInfo';
import { loadKubeApi, type KubeApi } from './api';
import { AgentAuthenticator, type AuthError } from './auth';
import { ClaimChecker } from './claims';
import { ClusterDiscovery } from './discovery';
import { CONNECT_THROUGH_APISERVER, isLoopback, peerAddress } from './peer';
import { podNamespace, readPodResolvConf } from './pod-dns';

const log = logger('manager.kube');

export interface KubeModeOptions {
  kubeconfig?: string; // default: the pod's in-cluster config
  resolvConf?: string; // default /etc/resolv.conf (the pod's, written by the kubelet)
  clusterDomain?: string; // overrides the one from resolv.conf
  namespace?: string; // overrides the pod's own namespace
}

/**
 * The manager's Kubernetes mode: what it learns from the apiserver
 * (discovery), and the rules it enforces with it (agents' tokens, intercept
 * claims, clients only over port-forward).
 */
export class KubeMode {
  readonly api: KubeApi;
  readonly discovery: ClusterDiscovery;
  readonly agents: AgentAuthenticator;
  readonly claims: ClaimChecker;
  readonly clusterDomain: string;
  readonly namespace: string;
  /** The cluster DNS servers from resolv.conf (for the manager's own resolver). */
  readonly nameservers: string[];

  constructor(opts: KubeModeOptions) {
    this.api = loadKubeApi(opts.kubeconfig);
    const dns = readPodResolvConf(opts.resolvConf);
    if (!opts.clusterDomain && !dns.domain) {
      log.warn('no "svc.<domain>" entry in the search path of resolv.conf: assuming cluster.local (set --cluster-domain)', {
        file: opts.resolvConf ?? '/etc/resolv.conf',
      });
    }
    this.clusterDomain = (opts.clusterDomain ?? dns.domain ?? 'cluster.local').replace(/^\.|\.$/g, '');
    this.namespace = opts.namespace ?? podNamespace() ?? dns.namespace ?? 'rdbg';
    this.nameservers = dns.nameservers;
    this.discovery = new ClusterDiscovery(this.api);
    this.agents = new AgentAuthenticator(this.api);
    this.claims = new ClaimChecker(this.api);
  }

  async start(): Promise<void> {
    log.info('Kubernetes mode', { apiserver: this.api.server, clusterDomain: this.clusterDomain, namespace: this.namespace, dns: this.nameservers });
    await this.discovery.start();
  }

  stop(): void {
    this.discovery.stop();
  }

  /** Why a client call from this peer is refused (undefined: it is allowed). */
  clientRefusal(call: { getPeer(): string }): string | undefined {
    const peer = call.getPeer();
    if (isLoopback(peerAddress(peer))) return undefined;
    log.warn('client call refused: not from port-forward', { peer });
    return `${CONNECT_THROUGH_APISERVER} (this call came from ${peerAddress(peer)})`;
  }

  async authorizeAgent(info: AgentInfo__Output): Promise<AuthError | undefined> {
    const r = await this.agents.check(info);
    if ('code' in r) return r;
    log.debug('agent authenticated', { pod: `${r.namespace}/${r.pod}`, serviceAccount: r.serviceAccount });
    return undefined;
  }

  checkClaim(sessionId: string, workload: string, namespace: string): Promise<AuthError | undefined> {
    return this.claims.check(sessionId, workload, namespace);
  }
}
