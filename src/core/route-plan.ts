import { Codes, RdbgError } from './errors';
import { cidrContains, cidrOverlaps, cidrSetMinus, parseCidr, type Cidr } from './cidr';

/** A route of the laptop's routing table. */
export interface Route {
  dst: string; // CIDR, or "default"
  dev: string;
  via?: string;
}

export interface RoutePlan {
  /** CIDRs to route into the TUN. */
  routes: Cidr[];
  /** Manager/apiserver addresses inside those CIDRs: pinned to their current route. */
  pins: { ip: string }[];
}

/**
 * What to route into the TUN: the cluster's subnets plus --also-proxy, minus
 * --never-proxy. A subnet that overlaps a route the laptop already has (a VPN,
 * a docker bridge) is refused with both named, unless conflicts are allowed.
 */
export function planRoutes(opts: {
  serviceSubnets: string[];
  podSubnets: string[];
  alsoProxy: string[];
  neverProxy: string[];
  managerAddresses: string[];
  existing: Route[];
  tunName: string;
  allowConflicts: boolean;
}): RoutePlan {
  const wanted = [...opts.serviceSubnets, ...opts.podSubnets, ...opts.alsoProxy].map(parseCidr);
  const routes = cidrSetMinus(wanted, opts.neverProxy.map(parseCidr));
  if (!opts.allowConflicts) {
    for (const r of opts.existing) {
      if (r.dev === opts.tunName || r.dst === 'default' || !r.dst) continue;
      let theirs: Cidr;
      try {
        theirs = parseCidr(r.dst);
      } catch {
        continue;
      }
      if (theirs.bits === 0) continue;
      const clash = routes.find((c) => cidrOverlaps(c, theirs));
      if (clash) {
        throw new RdbgError(
          Codes.SUBNET_CONFLICT,
          `the cluster subnet ${clash.text} overlaps the route ${r.dst} dev ${r.dev}${r.via ? ` via ${r.via}` : ''} on this machine`,
          'rdbg would hide part of that network: add --never-proxy for the part you need locally, or --allow-conflicting-subnets to let the cluster win',
        );
      }
    }
  }
  const pins = opts.managerAddresses.filter((ip) => routes.some((c) => cidrContains(c, ip))).map((ip) => ({ ip }));
  return { routes, pins };
}
