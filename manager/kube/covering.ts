import { isIP } from 'node:net';
import { bigIntToIp, ipToBigInt, parseCidr } from '../../src/core/cidr';

/**
 * The smallest prefix (one per address family) that covers every address
 * given: the fallback when the cluster does not publish its subnets (no
 * ServiceCIDR API, nodes without spec.podCIDRs). It can only be as wide as
 * the addresses seen so far, so it grows as new ones appear.
 */
export function coveringPrefixes(addresses: Iterable<string>): string[] {
  const byFamily = new Map<4 | 6, { lo: bigint; hi: bigint }>();
  for (const a of addresses) {
    if (!isIP(a)) continue;
    const { family, value } = ipToBigInt(a);
    const r = byFamily.get(family);
    if (!r) byFamily.set(family, { lo: value, hi: value });
    else {
      if (value < r.lo) r.lo = value;
      if (value > r.hi) r.hi = value;
    }
  }
  const out: string[] = [];
  for (const family of [4, 6] as const) {
    const r = byFamily.get(family);
    if (!r) continue;
    const max = family === 4 ? 32 : 128;
    // The prefix length is the count of leading bits the lowest and highest addresses share.
    let bits = max;
    let diff = r.lo ^ r.hi;
    while (diff > 0n) {
      diff >>= 1n;
      bits--;
    }
    out.push(parseCidr(`${bigIntToIp(family, r.lo)}/${bits}`).text);
  }
  return out;
}
