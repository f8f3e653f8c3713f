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
