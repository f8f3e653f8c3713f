import type { Cidr } from '../../../src/core/cidr';
import { isReverseName, parseCidrs, reverseNameIn } from './reverse-name';

/**
 * Telepresence's default: names under these suffixes never go to the cluster,
 * so a namespace that happens to be called `com` or `io` cannot capture the
 * internet's names.
 */
export const DEFAULT_EXCLUDE: readonly string[] = ['com', 'io', 'net', 'org', 'ru'];

export interface RoutingOptions {
  clusterDomain: string; // e.g. cluster.local
  namespaces: () => readonly string[];
  include?: readonly string[];
  exclude?: readonly string[];
  reverseCidrs?: readonly string[];
}

export type Route = 'cluster' | 'upstream';

/** Lower case, no trailing dot, no leading dot. */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/^\.+|\.+$/g, '');
}

function under(name: string, suffix: string): boolean {
  return suffix !== '' && (name === suffix || name.endsWith('.' + suffix));
}

/**
 * Decides which names are the cluster's. In order:
 * 1. reverse names of the cluster's subnets (`reverseCidrs`) are the cluster's;
 * 2. an exclude suffix wins over everything else, except that an exclude
 *    suffix outside the cluster domain (`net`) never takes names under it
 *    (a cluster domain `corp.net` keeps working with the default excludes);
 * 3. names under the cluster domain, names under an include suffix, and the
 *    short forms `svc.NS` (last label a known namespace) and `svc.NS.svc`
 *    are the cluster's;
 * 4. everything else goes to the original resolvers.
 */
export class DnsRouter {
  readonly clusterDomain: string;
  private readonly include: string[];
  private readonly exclude: string[];
  private reverse: Cidr[];

  constructor(private readonly opts: RoutingOptions) {
    this.clusterDomain = normalizeName(opts.clusterDomain);
    this.include = (opts.include ?? []).map(normalizeName).filter(Boolean);
    this.exclude = (opts.exclude ?? DEFAULT_EXCLUDE).map(normalizeName).filter(Boolean);
    this.reverse = parseCidrs(opts.reverseCidrs ?? []);
  }

  setReverseCidrs(cidrs: readonly string[]): void {
    this.reverse = parseCidrs(cidrs);
  }

  route(rawName: string): Route {
    const name = normalizeName(rawName);
    if (name === '') return 'upstream';
    if (isReverseName(name)) return reverseNameIn(name, this.reverse) ? 'cluster' : 'upstream';
    const inDomain = under(name, this.clusterDomain);
    const excluded = this.exclude.some((s) => under(name, s) && (!inDomain || under(s, this.clusterDomain)));
    if (excluded) return 'upstream';
    if (inDomain) return 'cluster';
    if (this.include.some((s) => under(name, s))) return 'cluster';
    const labels = name.split('.');
    if (labels.length >= 2) {
      const namespaces = this.opts.namespaces();
      const last = labels[labels.length - 1];
      if (namespaces.includes(last)) return 'cluster';
      if (labels.length >= 3 && last === 'svc' && namespaces.includes(labels[labels.length - 2])) return 'cluster';
    }
    return 'upstream';
  }

  /**
   * The name to ask the manager for. Names under the cluster domain are
   * absolute (a trailing dot: the manager then skips the search path); short
   * forms are sent bare so the manager expands them as a pod would.
   */
  managerName(rawName: string): string {
    const name = normalizeName(rawName);
    return under(name, this.clusterDomain) || isReverseName(name) ? `${name}.` : name;
  }
}
