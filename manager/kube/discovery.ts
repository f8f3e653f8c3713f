import type * as k8s from '@kubernetes/client-node';
import { parseCidr } from '../../src/core/cidr';
import { Codes, RdbgError } from '../../src/core/errors';
import { logger } from '../../src/core/log';
import { apiReason, apiStatus, type KubeApi } from './api';
import { coveringPrefixes } from './covering';
import { ListWatch, type KubeObject } from './list-watch';

const log = logger('manager.discovery');

/**
 * What the manager learns about the cluster from the apiserver, kept up to date
 * by watches: the service and pod subnets clients route, and the namespaces
 * (for DNS routing of `name.namespace`).
 *
 * Service subnets come from the ServiceCIDR API (networking.k8s.io/v1); a
 * cluster that does not serve it (or an RBAC role without it) gets the
 * smallest prefix covering the ClusterIPs seen. Pod subnets come from the
 * nodes' spec.podCIDRs; with none (some CNIs allocate on their own) the
 * smallest prefix covering the pod IPs seen, per address family.
 */
export class ClusterDiscovery {
  serviceSubnets: string[] = [];
  podSubnets: string[] = [];
  namespaces: string[] = [];
  serviceSource = '';
  podSource = '';
  private readonly watches: ListWatch<KubeObject>[] = [];

  constructor(private readonly api: KubeApi) {}

  async start(): Promise<void> {
    const { api } = this;
    const namespaces = this.add<k8s.V1Namespace>('namespaces', '/api/v1/namespaces', () => api.core.listNamespace(), (items) => {
      this.set('namespaces', [...items].map((n) => n.metadata!.name!).sort());
    });
    await this.first(namespaces);

    const cidrs = this.add<k8s.V1ServiceCIDR>('servicecidrs', '/apis/networking.k8s.io/v1/servicecidrs', () => api.networking.listServiceCIDR(), (items) => {
      const live = [...items].filter((c) => !c.metadata?.deletionTimestamp);
      this.set('serviceSubnets', unique(live.flatMap((c) => c.spec?.cidrs ?? [])), 'ServiceCIDR objects');
    });
    try {
      await cidrs.start();
    } catch (err) {
      this.drop(cidrs);
      const status = apiStatus(err);
      if (status !== 404 && status !== 403) throw this.failed(cidrs.what, err);
      log.warn('the ServiceCIDR API is not available: service subnets will cover the ClusterIPs seen', {
        reason: status === 404 ? 'not served by this apiserver (Kubernetes < 1.33?)' : 'forbidden by the manager\'s ClusterRole',
      });
      const services = this.add<k8s.V1Service>('services', '/api/v1/services', () => api.core.listServiceForAllNamespaces(), (items) => {
        const ips = [...items].flatMap((s) => s.spec?.clusterIPs ?? (s.spec?.clusterIP ? [s.spec.clusterIP] : []));
        this.set('serviceSubnets', coveringPrefixes(ips), 'covering the ClusterIPs seen');
      });
      await this.first(services);
    }

    let podWatch: ListWatch<KubeObject> | undefined;
    const nodes = this.add<k8s.V1Node>('nodes', '/api/v1/nodes', () => api.core.listNode(), (items) => {
      const cidrs = unique([...items].flatMap((n) => n.spec?.podCIDRs ?? (n.spec?.podCIDR ? [n.spec.podCIDR] : [])));
      if (cidrs.length > 0) this.set('podSubnets', cidrs, 'the nodes\' spec.podCIDRs');
      else if (podWatch) this.podsFallback(podWatch);
    });
    await this.first(nodes);
    if (this.podSubnets.length === 0) {
      log.warn('no node has spec.podCIDRs (the CNI allocates pod addresses itself): pod subnets will cover the pod IPs seen');
      podWatch = this.add<k8s.V1Pod>('pods', '/api/v1/pods', () => api.core.listPodForAllNamespaces(), () => {
        if (this.podSource !== 'the nodes\' spec.podCIDRs') this.podsFallback(podWatch!);
      });
      await this.first(podWatch);
    }
  }

  stop(): void {
    for (const w of this.watches) w.stop();
  }

  private podsFallback(pods: ListWatch<KubeObject>): void {
    const ips = [...(pods.items.values() as Iterable<k8s.V1Pod>)]
      .filter((p) => !p.spec?.hostNetwork) // those have the node's address
      .flatMap((p) => (p.status?.podIPs ?? []).map((i) => i.ip));
    this.set('podSubnets', coveringPrefixes(ips), 'covering the pod IPs seen');
  }

  private add<T extends KubeObject>(what: string, path: string, list: () => Promise<{ items: T[] }>, changed: (items: Iterable<T>) => void): ListWatch<KubeObject> {
    const w: ListWatch<T> = new ListWatch<T>(this.api.kc, what, path, list, () => changed(w.items.values()));
    this.watches.push(w as unknown as ListWatch<KubeObject>);
    return w as unknown as ListWatch<KubeObject>;
  }

  private drop(w: ListWatch<KubeObject>): void {
    w.stop();
    this.watches.splice(this.watches.indexOf(w), 1);
  }

  private async first(w: ListWatch<KubeObject>): Promise<void> {
    try {
      await w.start();
    } catch (err) {
      throw this.failed(w.what, err);
    }
  }

  private failed(what: string, err: unknown): RdbgError {
    const status = apiStatus(err);
    const hint =
      status === 403
        ? 'the manager\'s ClusterRole must allow get/list/watch on it (see docs/kubernetes.md)'
        : status === 0
          ? `is the apiserver (${this.api.server}) reachable from here?`
          : undefined;
    return new RdbgError(Codes.MANAGER_UNREACHABLE, `cannot list ${what}: ${apiReason(err)}`, hint);
  }

  private set(field: 'serviceSubnets' | 'podSubnets' | 'namespaces', value: string[], source?: string): void {
    if (field !== 'namespaces') value = value.map((c) => parseCidr(c).text);
    const old = this[field];
    if (old.length === value.length && old.every((v, i) => v === value[i])) return;
    this[field] = value;
    if (field === 'serviceSubnets') this.serviceSource = source ?? '';
    if (field === 'podSubnets') this.podSource = source ?? '';
    if (field === 'namespaces') {
      const added = value.filter((n) => !old.includes(n));
      const removed = old.filter((n) => !value.includes(n));
      log.info('namespaces changed', { count: value.length, added, removed });
    } else {
      log.info(`${field === 'serviceSubnets' ? 'service' : 'pod'} subnets changed`, { subnets: value, was: old, from: source });
    }
  }
}

function unique(list: string[]): string[] {
  return [...new Set(list.filter(Boolean))];
}
