import { ipFromBytes, ipToBytes } from './address';
import { Codes, RdbgError } from './errors';

/** An IPv4 or IPv6 subnet, held as a bigint range so that overlap checks are exact. */
export interface Cidr {
  readonly family: 4 | 6;
  readonly base: bigint;
  readonly bits: number;
  readonly text: string;
}

export function ipToBigInt(ip: string): { family: 4 | 6; value: bigint } {
  const bytes = ipToBytes(ip);
  let value = 0n;
  for (const b of bytes) value = (value << 8n) | BigInt(b);
  return { family: bytes.length === 4 ? 4 : 6, value };
}

export function bigIntToIp(family: 4 | 6, value: bigint): string {
  const bytes = Buffer.alloc(family === 4 ? 4 : 16);
  for (let i = bytes.length - 1, v = value; i >= 0; i--, v >>= 8n) bytes[i] = Number(v & 0xffn);
  return ipFromBytes(bytes);
}

export function parseCidr(text: string): Cidr {
  const [addr, len] = text.trim().split('/');
  const { family, value } = ipToBigInt(addr);
  const max = family === 4 ? 32 : 128;
  const bits = len === undefined ? max : Number(len);
  if (!Number.isInteger(bits) || bits < 0 || bits > max || (len !== undefined && !/^\d+$/.test(len))) {
    throw new RdbgError(Codes.BAD_ARGUMENT, `"${text}" is not a CIDR (expected ADDRESS/BITS, BITS 0-${max})`);
  }
  const hostBits = BigInt(max - bits);
  const base = (value >> hostBits) << hostBits;
  return { family, base, bits, text: `${bigIntToIp(family, base)}/${bits}` };
}

function lastOf(c: Cidr): bigint {
  const max = c.family === 4 ? 32 : 128;
  return c.base + (1n << BigInt(max - c.bits)) - 1n;
}

export function cidrContains(c: Cidr, ip: string): boolean {
  const { family, value } = ipToBigInt(ip);
  return family === c.family && value >= c.base && value <= lastOf(c);
}

export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && a.base <= lastOf(b) && b.base <= lastOf(a);
}

/** `a` minus `b`, as the fewest CIDRs that cover exactly what is left. */
export function subtractCidr(a: Cidr, b: Cidr): Cidr[] {
  if (!cidrOverlaps(a, b)) return [a];
  if (b.bits <= a.bits) return []; // b covers a
  const max = a.family === 4 ? 32 : 128;
  const out: Cidr[] = [];
  let cur = a;
  // Split cur in halves until the half holding b is b itself; keep the other halves.
  while (cur.bits < b.bits) {
    const bits = cur.bits + 1;
    const half = 1n << BigInt(max - bits);
    const lo: Cidr = { family: a.family, base: cur.base, bits, text: `${bigIntToIp(a.family, cur.base)}/${bits}` };
    const hi: Cidr = { family: a.family, base: cur.base + half, bits, text: `${bigIntToIp(a.family, cur.base + half)}/${bits}` };
    if (cidrOverlaps(lo, b)) {
      out.push(hi);
      cur = lo;
    } else {
      out.push(lo);
      cur = hi;
    }
  }
  return out;
}

/** Every CIDR of `include`, minus every CIDR of `exclude`. */
export function cidrSetMinus(include: Cidr[], exclude: Cidr[]): Cidr[] {
  let set = include;
  for (const x of exclude) set = set.flatMap((c) => subtractCidr(c, x));
  return set;
}
