import { promises as dns } from 'node:dns';
import { isIP } from 'node:net';
import type { DNSRecord } from '../src/gen/rdbg/v1/DNSRecord';
import type { DNSResponse } from '../src/gen/rdbg/v1/DNSResponse';

export const QTYPE = { A: 1, CNAME: 5, PTR: 12, TXT: 16, AAAA: 28, SRV: 33 } as const;
const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4 } as const;

/** Records whose answer carries no TTL from the resolver get this one (seconds). */
const DEFAULT_TTL = 5;

/**
 * Resolves names the way a pod in a given namespace would: the cluster's DNS
 * server (whatever the manager's own resolver is) and a pod's search path
 * (`NS.svc.DOMAIN svc.DOMAIN DOMAIN`, ndots 5).
 */
export class ClusterDNS {
  private readonly resolver = new dns.Resolver({ timeout: 2000, tries: 2 });
  /**
   * Questions on the wire, by type and name: a burst of flows to one name (a
   * client opening a thousand connections to a Service at once) asks the
   * cluster DNS once per search candidate, not once per flow, so the burst
   * cannot overflow the server's queue and fail as timeouts. Nothing is kept
   * after the answer: the next question asks again.
   */
  private readonly asking = new Map<string, Promise<DNSRecord[]>>();

  /** `servers`: the cluster DNS (Kubernetes mode: from the pod's resolv.conf); default: this host's resolver. */
  constructor(
    private readonly domain: string,
    servers?: string[],
  ) {
    if (servers?.length) this.resolver.setServers(servers);
  }

  searchPath(namespace: string): string[] {
    return [`${namespace}.svc.${this.domain}`, `svc.${this.domain}`, this.domain];
  }

  servers(): string[] {
    return this.resolver.getServers();
  }

  /** The names to try for `name`, in the order a pod's resolver would. */
  candidates(name: string, namespace: string): string[] {
    const bare = name.replace(/\.$/, '');
    if (name.endsWith('.')) return [bare];
    const search = this.searchPath(namespace).map((s) => `${bare}.${s}`);
    const dots = bare.split('.').length - 1;
    // A name already under the cluster domain is what it says: asking it first
    // saves the three misses a pod's resolver (ndots 5) would make.
    if (dots >= 5 || bare.endsWith(`.${this.domain}`)) return [bare, ...search];
    return [...search, bare];
  }

  async lookup(name: string, qtype: number, namespace: string): Promise<DNSResponse> {
    if (qtype === QTYPE.PTR) return this.reverse(name);
    let sawNoData: string | undefined;
    let failed: string | undefined;
    for (const candidate of this.candidates(name, namespace)) {
      try {
        const answers = await this.query(candidate, qtype);
        if (answers.length > 0) return { rcode: RCODE.NOERROR, name: candidate, answers };
        sawNoData ??= candidate;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENODATA') sawNoData ??= candidate;
        // A candidate the server could not answer does not hide the others (as a pod's resolver goes on).
        else if (code !== 'ENOTFOUND') failed ??= candidate;
      }
    }
    if (sawNoData) return { rcode: RCODE.NOERROR, name: sawNoData, answers: [] };
    if (failed) return { rcode: RCODE.SERVFAIL, name: failed, answers: [] };
    return { rcode: RCODE.NXDOMAIN, name, answers: [] };
  }

  /** Resolve a name to addresses for dialling (A first, then AAAA). */
  async addresses(name: string, namespace: string): Promise<string[]> {
    if (isIP(name)) return [name];
    for (const qtype of [QTYPE.A, QTYPE.AAAA]) {
      const r = await this.lookup(name, qtype, namespace);
      const ips = r.answers!.filter((a) => a.address).map((a) => a.address!);
      if (ips.length > 0) return ips;
      if (r.rcode === RCODE.SERVFAIL) break;
    }
    return [];
  }

  private query(name: string, qtype: number): Promise<DNSRecord[]> {
    const key = `${qtype} ${name}`;
    let q = this.asking.get(key);
    if (!q) {
      q = this.ask(name, qtype).finally(() => this.asking.delete(key));
      this.asking.set(key, q);
    }
    return q;
  }

  private async ask(name: string, qtype: number): Promise<DNSRecord[]> {
    switch (qtype) {
      case QTYPE.A:
        return (await this.resolver.resolve4(name, { ttl: true })).map((r) => ({ name, type: qtype, ttl: r.ttl, address: r.address }));
      case QTYPE.AAAA:
        return (await this.resolver.resolve6(name, { ttl: true })).map((r) => ({ name, type: qtype, ttl: r.ttl, address: r.address }));
      case QTYPE.SRV:
        return (await this.resolver.resolveSrv(name)).map((r) => ({
          name, type: qtype, ttl: DEFAULT_TTL, target: r.name, priority: r.priority, weight: r.weight, port: r.port,
        }));
      case QTYPE.CNAME:
        return (await this.resolver.resolveCname(name)).map((target) => ({ name, type: qtype, ttl: DEFAULT_TTL, target }));
      case QTYPE.TXT:
        return (await this.resolver.resolveTxt(name)).map((txt) => ({ name, type: qtype, ttl: DEFAULT_TTL, txt }));
      default: {
        const err = new Error(`query type ${qtype} is not supported`) as NodeJS.ErrnoException;
        err.code = 'ENOTIMP';
        throw err;
      }
    }
  }

  private async reverse(name: string): Promise<DNSResponse> {
    const ip = ptrNameToIp(name);
    if (!ip) return { rcode: RCODE.NXDOMAIN, name, answers: [] };
    try {
      const names = await this.resolver.reverse(ip);
      return { rcode: RCODE.NOERROR, name, answers: names.map((target) => ({ name, type: QTYPE.PTR, ttl: DEFAULT_TTL, target })) };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTFOUND') return { rcode: RCODE.NXDOMAIN, name, answers: [] };
      if (code === 'ENODATA') return { rcode: RCODE.NOERROR, name, answers: [] };
      return { rcode: RCODE.SERVFAIL, name, answers: [] };
    }
  }
}

/** `4.3.2.1.in-addr.arpa` -> `1.2.3.4`; nibble form for ip6.arpa. */
export function ptrNameToIp(name: string): string | undefined {
  const n = name.toLowerCase().replace(/\.$/, '');
  if (n.endsWith('.in-addr.arpa')) {
    const parts = n.slice(0, -'.in-addr.arpa'.length).split('.');
    if (parts.length !== 4) return undefined;
    const ip = parts.reverse().join('.');
    return isIP(ip) === 4 ? ip : undefined;
  }
  if (n.endsWith('.ip6.arpa')) {
    const nibbles = n.slice(0, -'.ip6.arpa'.length).split('.');
    if (nibbles.length !== 32 || nibbles.some((x) => !/^[0-9a-f]$/.test(x))) return undefined;
    const hex = nibbles.reverse().join('');
    const ip = hex.match(/.{4}/g)!.join(':');
    return isIP(ip) === 6 ? ip : undefined;
  }
  return undefined;
}
