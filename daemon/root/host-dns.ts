import { logger } from '../../src/core/log';
import type { ClusterInfo__Output } from '../../src/gen/rdbg/v1/ClusterInfo';
import type { DNSResponse__Output } from '../../src/gen/rdbg/v1/DNSResponse';
import { RdbgError } from '../../src/core/errors';
import { DnsCodes } from './dns/dns-errors';
import { DEFAULT_EXCLUDE, DnsServer } from './dns/dns-server';
import * as resolvConf from './dns/resolv-conf';
import * as resolved from './dns/systemd-resolved';
import { parseCidrs, reverseZones } from './dns/reverse-name';
import type { Journal } from './journal';

const log = logger('rootd.dns');

export type DnsMode = 'auto' | 'resolv.conf' | 'none';

/**
 * Where resolv.conf sends the laptop: loopback addresses of the laptop's own
 * (all of 127/8 is local on Linux). When no rdbg process is left to listen
 * (kill -9, a crash, power loss) the kernel answers a query there at once
 * (ICMP port unreachable for UDP, RST for TCP), so glibc, dig and Go move to
 * the next nameserver, the original one, without waiting for a timeout. An
 * address on the TUN device gives no such guarantee: once the device is gone
 * a query to it follows the default route and waits out the resolver's
 * timeout. The next ones are taken when another rdbg holds the first.
 */
export const LOOPBACK_RESOLVERS = ['127.0.83.53', '127.0.83.54', '127.0.83.55', '127.0.83.56'];

/**
 * The laptop's DNS while connected: rdbg's resolver on a loopback address
 * (named in resolv.conf) and on the TUN addresses (reachable from containers
 * and VMs that route through the laptop), and the host pointed at it.
 */
export class HostDns {
  private server?: DnsServer;
  private namespaces: string[];
  private subnets: string[];
  mode: string = 'none';
  private linkConfig?: resolved.ResolvedLinkConfig;
  /** The address resolv.conf names while connected. */
  address = '';

  constructor(
    private readonly opts: {
      mode: DnsMode;
      resolvConf: string;
      /** Addresses served besides the loopback one (the TUN's). */
      listen: string[];
      /** Candidates for the address resolv.conf names; the first free one is taken. Default LOOPBACK_RESOLVERS. */
      resolvers?: string[];
      tunName: string;
      journal: Journal;
      cluster: ClusterInfo__Output;
      include?: string[];
      exclude?: string[];
      lookup: (name: string, qtype: number) => Promise<DNSResponse__Output>;
    },
  ) {
    this.namespaces = opts.cluster.namespaces;
    this.subnets = subnetsOf(opts.cluster);
  }

  update(cluster: ClusterInfo__Output): void {
    const subnets = subnetsOf(cluster);
    const changed = cluster.namespaces.join() !== this.namespaces.join() || subnets.join() !== this.subnets.join();
    this.namespaces = cluster.namespaces;
    if (subnets.join() !== this.subnets.join()) this.server?.setReverseCidrs(subnets);
    this.subnets = subnets;
    // resolved sends a name to this link only if it is under one of the link's domains: a namespace's
    // short names (`echo.NS`), reverse names of the cluster's subnets.
    if (changed && this.mode === 'systemd-resolved' && this.linkConfig) {
      this.linkConfig = { ...this.linkConfig, namespaces: cluster.namespaces, reverseZones: zonesOf(subnets) };
      const domain = resolved.applyCommands(this.linkConfig)[1];
      resolved.runCommand(domain).catch((err) => log.warn('could not update the link\'s DNS domains', { error: String(err) }));
    }
  }

  counters(): { queries: number } | undefined {
    return this.server?.counters();
  }

  async start(): Promise<void> {
    if (this.opts.mode === 'none') return;
    const c = this.opts.cluster;
    const search = c.dns_search.length ? c.dns_search : [`svc.${c.cluster_domain}`, c.cluster_domain];
    const useResolved = this.opts.mode === 'auto' && (await resolved.detect(this.opts.resolvConf));
    // resolved's stub (127.0.0.53) would send names back to us: forward to the servers resolved uses.
    const original = useResolved ? resolved.uplinkServers() : resolvConf.readNameservers(this.opts.resolvConf);
    const candidates = this.opts.resolvers ?? LOOPBACK_RESOLVERS;
    for (const [i, address] of candidates.entries()) {
      const listen = [address, ...this.opts.listen];
      const server = new DnsServer({
        listen: listen.map((a) => ({ address: a, port: 53 })),
        clusterDomain: c.cluster_domain,
        namespaces: () => this.namespaces,
        reverseCidrs: this.subnets,
        include: this.opts.include,
        exclude: [...DEFAULT_EXCLUDE, ...(this.opts.exclude ?? [])],
        lookupCluster: (name, qtype) => this.opts.lookup(name, qtype),
        // Ours from an earlier rdbg (any candidate) are never upstreams: a crashed one's resolv.conf may still name them.
        upstreams: original.filter((ns) => !listen.includes(ns) && !candidates.includes(ns)),
      });
      try {
        await server.start();
      } catch (err) {
        const inUse = (err as { cause?: NodeJS.ErrnoException }).cause?.code === 'EADDRINUSE';
        if (inUse && i < candidates.length - 1) {
          log.info('DNS address in use (another rdbg?); trying the next', { address });
          continue;
        }
        throw err instanceof RdbgError ? err : new RdbgError(DnsCodes.LISTEN, String(err));
      }
      this.server = server;
      this.address = address;
      break;
    }
    if (useResolved) {
      this.linkConfig = {
        iface: this.opts.tunName,
        dns: [this.address],
        clusterDomain: c.cluster_domain,
        namespaces: this.namespaces,
        extraDomains: this.opts.include,
        reverseZones: zonesOf(this.subnets),
        search,
      };
      await resolved.apply(this.linkConfig, this.opts.journal);
      this.mode = 'systemd-resolved';
    } else {
      resolvConf.apply(this.opts.resolvConf, { nameserver: this.address, search }, this.opts.journal);
      this.mode = 'resolv.conf';
    }
    log.info('DNS configured', { mode: this.mode, resolver: this.address, search });
  }

  async stop(): Promise<void> {
    if (this.mode === 'resolv.conf') resolvConf.restore(this.opts.journal, this.opts.resolvConf);
    if (this.mode === 'systemd-resolved') await resolved.restore(this.opts.journal);
    this.mode = 'none';
    await this.server?.stop();
  }
}

function subnetsOf(c: ClusterInfo__Output): string[] {
  return [...c.service_subnets, ...c.pod_subnets];
}

function zonesOf(subnets: readonly string[]): string[] {
  return [...new Set(parseCidrs(subnets).flatMap(reverseZones))];
}
