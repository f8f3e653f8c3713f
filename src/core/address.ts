import { isIP } from 'node:net';
import { Codes, RdbgError } from './errors';

/**
 * The 4 or 16 bytes of an IPv4 or IPv6 address written as text. IPv6 may end
 * in a dotted quad (::ffff:10.0.0.1); a zone (%eth0) is not part of the bytes.
 */
export function ipToBytes(text: string): Buffer {
  const family = isIP(text);
  if (family === 4) return Buffer.from(text.split('.').map(Number));
  if (family !== 6) throw new RdbgError(Codes.BAD_ARGUMENT, `"${text}" is not an IP address`);
  const out = Buffer.alloc(16);
  let s = text.replace(/%.*$/, '');
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (quad) s = s.slice(0, -quad[1].length) + '0:0';
  const [h, t] = s.split('::');
  const head = h ? h.split(':') : [];
  const tail = t ? t.split(':') : [];
  const groups = t === undefined ? head : [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  if (quad) ipToBytes(quad[1]).copy(out, 12);
  return out;
}

/**
 * The text of a 4- or 16-byte address: a dotted quad, or IPv6 as RFC 5952 and
 * Node's sockets write it (lower case, the longest run of zero groups as ::,
 * ::ffff:a.b.c.d for a mapped IPv4 address), so that texts compare equal with
 * the addresses Node reports.
 */
export function ipFromBytes(b: Uint8Array): string {
  if (b.length === 4) return b.join('.');
  if (b.length !== 16) throw new RdbgError(Codes.BAD_ARGUMENT, `an IP address has 4 or 16 bytes, not ${b.length}`);
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i] << 8) | b[i + 1]);
  let best = -1;
  let bestLen = 1; // a single zero group stays "0"
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  // A mapped (::ffff:0:0/96) or compatible (::/96) IPv4 address ends in its dotted quad, as inet_ntop writes it.
  if (best === 0 && (bestLen === 6 || (bestLen === 5 && g[5] === 0xffff))) {
    return `::${bestLen === 5 ? 'ffff:' : ''}${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** The IPv4 address inside an IPv4-mapped IPv6 one (::ffff:127.0.0.1 is 127.0.0.1); any other address as it is. */
export function unmapIPv4(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1] : address;
}

/** HOST:PORT or [IPV6]:PORT, as a user writes it on the command line. */
export function splitHostPort(text: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new RdbgError(Codes.BAD_ARGUMENT, `${what} "${text}" must look like HOST:PORT`);
  return { host: m[1] ?? m[2] ?? '', port };
}

/** The inverse of splitHostPort: an IPv6 address goes in brackets. */
export function joinHostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}
