import { parseCidr, type Cidr } from '../../../src/core/cidr';

/**
 * The address named by a full reverse name (`10.128.19.198.in-addr.arpa`, or
 * 32 nibbles under `ip6.arpa`), as a bigint; undefined for partial or bad names.
 */
export function reverseNameToAddress(name: string): { family: 4 | 6; value: bigint } | undefined {
  const n = name.toLowerCase().replace(/\.$/, '');
  if (n.endsWith('.in-addr.arpa')) {
    const parts = n.slice(0, -'.in-addr.arpa'.length).split('.');
    if (parts.length !== 4 || parts.some((p) => !/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > 255)) return undefined;
    const value = parts.reduceRight((acc, p) => (acc << 8n) + BigInt(p), 0n);
    return { family: 4, value };
  }
  if (n.endsWith('.ip6.arpa')) {
    const nibbles = n.slice(0, -'.ip6.arpa'.length).split('.');
    if (nibbles.length !== 32 || nibbles.some((x) => !/^[0-9a-f]$/.test(x))) return undefined;
    const value = nibbles.reduceRight((acc, x) => (acc << 4n) + BigInt(parseInt(x, 16)), 0n);
    return { family: 6, value };
  }
  return undefined;
}

export function isReverseName(name: string): boolean {
  return /\.(in-addr|ip6)\.arpa\.?$/i.test(name);
}

/** True when `name` is the full reverse name of an address inside one of `cidrs`. */
export function reverseNameIn(name: string, cidrs: readonly Cidr[]): boolean {
  const addr = reverseNameToAddress(name);
  if (!addr) return false;
  return cidrs.some((c) => {
    if (c.family !== addr.family) return false;
    const hostBits = BigInt((c.family === 4 ? 32 : 128) - c.bits);
    return addr.value >> hostBits === c.base >> hostBits;
  });
}

export function parseCidrs(texts: readonly string[]): Cidr[] {
  return texts.map((t) => parseCidr(t));
}

/** More zones than this for one subnet: its covering zone is named instead (rdbg relays what is not the cluster's). */
const MAX_ZONES_PER_SUBNET = 16;

/**
 * The reverse zones that hold exactly the addresses of `cidr`, as DNS
 * delegates them: octets under `in-addr.arpa`, nibbles under `ip6.arpa`
 * (10.96.0.0/16 -> 96.10.in-addr.arpa; a /20 is 16 zones of a /24 each;
 * 2001:db8:96::/112 -> 28 nibbles). A prefix that would need more than 16
 * zones gets its covering zone; a /0 gets the family's root zone.
 */
export function reverseZones(cidr: Cidr): string[] {
  const unit = cidr.family === 4 ? 8 : 4;
  const total = cidr.family === 4 ? 32 : 128;
  const suffix = cidr.family === 4 ? 'in-addr.arpa' : 'ip6.arpa';
  let labels = Math.ceil(cidr.bits / unit);
  if (2 ** (labels * unit - cidr.bits) > MAX_ZONES_PER_SUBNET) labels = Math.floor(cidr.bits / unit);
  const count = 2n ** BigInt(Math.max(0, labels * unit - cidr.bits));
  const step = 1n << BigInt(total - labels * unit);
  const zones: string[] = [];
  for (let i = 0n; i < count; i++) {
    const value = (cidr.base + i * step) >> BigInt(total - labels * unit);
    const parts: string[] = [];
    for (let l = 0; l < labels; l++) parts.push(((value >> BigInt(l * unit)) & BigInt(2 ** unit - 1)).toString(cidr.family === 4 ? 10 : 16));
    zones.push([...parts, suffix].join('.'));
  }
  return zones;
}
