import { logger } from '../../src/core/log';
import type { ClusterInfo__Output } from '../../src/gen/rdbg/v1/ClusterInfo';
import type { DNSResponse__Output } from '../../src/gen/rdbg/v1/DNSResponse';
import { DEFAULT_EXCLUDE, DnsServer } from './dns/dns-server';
import * as resolvConf from './dns/resolv-conf';
import type { Journal, JournalEntry } from './journal';

const log = logger('rootd.dns');

export type DnsMode = 'auto' | 'resolv.conf' | 'none';

/**
 * The laptop's DNS while connected: rdbg's resolver on the TUN address, and
 * the host pointed at it (resolv.conf here; systemd-resolved where it runs).
 */
export class HostDns {
  private server?: DnsServer;
  private namespaces: string[];
  mode: string = 'none';

  constructor(
    private readonly opts: {
      mode: DnsMode;
      resolvConf: string;
      listen: string[];
      tunName: string;
      journal: Journal;
      cluster: ClusterInfo__Output;
      include?: string[];
      exclude?: string[];
      lookup: (name: string, qtype: number) => Promise<DNSResponse__Output>;
    },
  ) {
    this.namespaces = opts.cluster.namespaces;
  }

  static undoers(path: string): Record<string, (e: JournalEntry) => void> {
    return {
      'resolv-conf': (e) => resolvConf.restoreEntry(e, path),
    };
  }

  update(cluster: ClusterInfo__Output): void {
    this.namespaces = cluster.namespaces;
  }

  counters(): { queries: number } | undefined {
    return this.server?.counters();
  }

  async start(): Promise<void> {
    if (this.opts.mode === 'none') return;
    const c = this.opts.cluster;
    const search = c.dns_search.length ? c.dns_search : [`svc.${c.cluster_domain}`, c.cluster_domain];
    const original = resolvConf.readNameservers(this.opts.resolvConf);
    this.server = new DnsServer({
      listen: this.opts.listen.map((address) => ({ address, port: 53 })),
      clusterDomain: c.cluster_domain,
      namespaces: () => this.namespaces,
      reverseCidrs: [...c.service_subnets, ...c.pod_subnets],
      include: this.opts.include,
      exclude: [...DEFAULT_EXCLUDE, ...(this.opts.exclude ?? [])],
      lookupCluster: (name, qtype) => this.opts.lookup(name, qtype),
      upstreams: original.filter((ns) => !this.opts.listen.includes(ns)),
    });
    await this.server.start();
    resolvConf.apply(this.opts.resolvConf, { nameserver: this.opts.listen[0], search }, this.opts.journal);
    this.mode = 'resolv.conf';
    log.info('DNS configured', { mode: this.mode, resolver: this.opts.listen[0], search });
  }

  async stop(): Promise<void> {
    if (this.mode === 'resolv.conf') resolvConf.restore(this.opts.journal, this.opts.resolvConf);
    this.mode = 'none';
    await this.server?.stop();
  }
}
