/**
 * Header hygiene for a transparent HTTP/1 proxy: connection-scoped headers
 * belong to each hop and are not forwarded; everything else is, in order
 * and with its original case.
 */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection']);

const UPGRADE_DROP = new Set(['keep-alive', 'proxy-connection']);

/**
 * rawHeaders (name, value, name, value...) without the hop-by-hop ones. For
 * an upgrade (`upgrading`), Connection and what it names are the request itself.
 */
export function forwardRaw(raw: string[], upgrading = false): string[] {
  if (upgrading) return withoutHeaders(raw, UPGRADE_DROP);
  let drop = HOP_BY_HOP;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].toLowerCase() !== 'connection') continue;
    // Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1), except upgrade negotiation.
    const named = raw[i + 1]
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s && s !== 'upgrade' && s !== 'close' && !HOP_BY_HOP.has(s));
    if (named.length) drop = new Set([...drop, ...named]);
  }
  return withoutHeaders(raw, drop);
}

/** rawHeaders without the named ones (lower-case names). */
export function withoutHeaders(raw: string[], drop: Set<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    if (!drop.has(raw[i].toLowerCase())) out.push(raw[i], raw[i + 1]);
  }
  return out;
}

/** Pairs for addTrailers() from rawTrailers. */
export function trailerPairs(raw: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i], raw[i + 1]]);
  return out;
}

/** A response head written straight to a socket (upgrades, CONNECT, errors on taken-over sockets). */
export function rawResponseHead(status: number, reason: string, raw: string[]): string {
  let s = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (let i = 0; i < raw.length; i += 2) s += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return s + '\r\n';
}

export function rawErrorResponse(status: number, reason: string, message: string): string {
  const body = message + '\n';
  return (
    rawResponseHead(status, reason, ['Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(Buffer.byteLength(body)), 'Connection', 'close']) +
    body
  );
}
