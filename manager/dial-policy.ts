import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { ipFromBytes, ipToBytes, joinHostPort, unmapIPv4 } from '../src/core/address';
import { cidrContains, parseCidr, type Cidr } from '../src/core/cidr';

/**
 * Which destinations the manager dials for a client. Every dial path (HTTP/2
 * and raw flows, TCP and UDP) asks `refusal()` after names
 * are resolved, so a name that points at 127.0.0.1 is refused like the address.
 *
 * Always refused: loopback, link-local (the cloud metadata address is one),
 * unspecified, multicast and broadcast, and the manager's own addresses (its
 * gRPC and data ports, and whatever else listens in its pod). Outside the
 * cluster's service and pod subnets, only what the admin allows
 * (`--allow-cidr`, Helm `manager.allowCidrs`): a client's --also-proxy is a
 * request, not a permission.
 */
export interface DialPolicyOptions {
  /** The cluster's service and pod subnets, read at each check: discovery may change them. */
  clusterSubnets: () => readonly string[];
  /** What the admin allows beyond the cluster's subnets. */
  allowCidrs?: readonly string[];
  /** The manager's own addresses; default: its interfaces', re-read every few seconds. */
  ownAddresses?: () => readonly { address: string; loopbackDevice: boolean }[];
  /**
   * Let loopback destinations through: for tests that run their servers on
   * 127.0.0.1 beside an in-process manager. The CLI never sets it.
   */
  allowLoopback?: boolean;
}

const ALLOW_HINT = 'rdbg manager serve --allow-cidr / Helm manager.allowCidrs';

/** Ranges no client may reach through the manager, with the reason it gives. */
const NEVER: readonly { cidr: Cidr; why: string; loopback?: boolean }[] = [
  { cidr: parseCidr('127.0.0.0/8'), why: 'a loopback address (the manager\'s own host)', loopback: true },
  { cidr: parseCidr('::1/128'), why: 'a loopback address (the manager\'s own host)', loopback: true },
  { cidr: parseCidr('0.0.0.0/8'), why: 'an unspecified address (it means this host)' },
  { cidr: parseCidr('::/128'), why: 'an unspecified address (it means this host)' },
  { cidr: parseCidr('169.254.0.0/16'), why: 'link-local (the cloud metadata address is one)' },
  { cidr: parseCidr('fe80::/10'), why: 'link-local' },
  { cidr: parseCidr('224.0.0.0/4'), why: 'a multicast address' },
  { cidr: parseCidr('ff00::/8'), why: 'a multicast address' },
  { cidr: parseCidr('255.255.255.255/32'), why: 'the broadcast address' },
];

const OWN_TTL_MS = 5000;

export class DialPolicy {
  private readonly allow: Cidr[];
  private subnetsKey = '';
  private subnets: Cidr[] = [];
  private own: { at: number; list: readonly { address: string; loopbackDevice: boolean }[] } = { at: -Infinity, list: [] };

  constructor(private readonly opts: DialPolicyOptions) {
    this.allow = (opts.allowCidrs ?? []).map((c) => parseCidr(c));
  }

  /** Every destination allowed: for tests of other parts that dial loopback servers. */
  static permissive(): DialPolicy {
    return new DialPolicy({ clusterSubnets: () => [], allowCidrs: ['0.0.0.0/0', '::/0'], allowLoopback: true, ownAddresses: () => [] });
  }

  get allowCidrs(): string[] {
    return this.allow.map((c) => c.text);
  }

  /** Why the manager will not dial `address` (an IP), or undefined when it will. */
  refusal(address: string, port: number): string | undefined {
    if (!isIP(address)) return `${address} is not an IP address`;
    // One text per address, so the comparison with the manager's own addresses cannot be dodged by spelling.
    const ip = ipKey(address);
    const dst = joinHostPort(ip, port);
    for (const n of NEVER) {
      if (!cidrContains(n.cidr, ip)) continue;
      if (n.loopback && this.opts.allowLoopback) return undefined;
      return `${dst} is ${n.why}: the manager never dials it`;
    }
    const named = this.clusterSubnets().some((c) => cidrContains(c, ip)) || this.allow.some((c) => cidrContains(c, ip));
    if (this.isOwn(ip, named)) return `${dst} is the traffic manager's own address: the manager never dials it`;
    if (named) return undefined;
    return `${dst} is outside the cluster's subnets and the manager's allow list (${ALLOW_HINT})`;
  }

  private clusterSubnets(): Cidr[] {
    const texts = this.opts.clusterSubnets();
    const key = texts.join(',');
    if (key !== this.subnetsKey) {
      this.subnets = texts.flatMap((t) => {
        try {
          return [parseCidr(t)];
        } catch {
          return [];
        }
      });
      this.subnetsKey = key;
    }
    return this.subnets;
  }

  private isOwn(ip: string, named: boolean): boolean {
    const now = Date.now();
    if (now - this.own.at > OWN_TTL_MS) {
      const list = (this.opts.ownAddresses ?? interfaceAddresses)().filter((a) => isIP(a.address));
      this.own = { at: now, list: list.map((a) => ({ ...a, address: ipKey(a.address) })) };
    }
    // An address held on the loopback device that the cluster's subnets or the allow list
    // name is a service address put there (the test sandbox does this), not the manager's interface.
    return this.own.list.some((a) => a.address === ip && !(a.loopbackDevice && named));
  }
}

function interfaceAddresses(): { address: string; loopbackDevice: boolean }[] {
  return Object.values(networkInterfaces()).flatMap((list) =>
    (list ?? []).map((a) => ({ address: a.address.replace(/%.*$/, ''), loopbackDevice: a.internal })),
  );
}

/** The canonical text of an address; ::ffff:127.0.0.1 dials 127.0.0.1, so it is the IPv4 address it carries. */
function ipKey(address: string): string {
  return unmapIPv4(ipFromBytes(ipToBytes(address)));
}
