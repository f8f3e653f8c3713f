import type { Socket } from 'node:net';

export type Protocol = 'h2' | 'http1' | 'other';

export interface Sniffed {
  protocol: Protocol;
  /** The bytes read so far; they are handed on with the connection. */
  head: Buffer;
  /** The peer sent FIN (or the socket died) before the protocol was clear. */
  ended: boolean;
}

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]";
const REQUEST_LINE = new RegExp(`^${TOKEN}{1,32} [^\\s]+ HTTP/1\\.[0-9]\\r?$`);
// A prefix that could still grow into a request line: METHOD SP target SP HTTP/1.x, then CR (its LF may come in the next segment)
const REQUEST_LINE_PREFIX = new RegExp(`^${TOKEN}{1,32}(?: [^\\s]*(?: (?:H(?:T(?:T(?:P(?:/(?:1(?:\\.(?:[0-9]\\r?)?)?)?)?)?)?)?)?)?)?$`);
/** Longest request line we wait for before deciding on what we have. */
const MAX_HEAD = 16 * 1024;

/**
 * Decide the protocol from the first bytes: undefined means "need more".
 * HTTP/1 needs a whole request line ending in HTTP/1.x, so that plain-text
 * protocols with verbs (redis inline commands, SMTP) are not taken for HTTP.
 */
export function classify(head: Buffer): Protocol | undefined {
  if (head.length === 0) return undefined;
  const n = Math.min(head.length, H2_PREFACE.length);
  if (head.subarray(0, n).equals(H2_PREFACE.subarray(0, n))) {
    // "PRI * HTTP/2.0" could in theory be an HTTP/1 request with method PRI; the full preface decides.
    return head.length >= H2_PREFACE.length ? 'h2' : undefined;
  }
  const nl = head.indexOf(0x0a);
  const line = head.subarray(0, nl === -1 ? Math.min(head.length, MAX_HEAD) : nl).toString('latin1');
  if (nl !== -1) return REQUEST_LINE.test(line) ? 'http1' : 'other';
  if (!REQUEST_LINE_PREFIX.test(line)) return 'other';
  return head.length >= MAX_HEAD ? 'http1' : undefined;
}

/** The decision when no more bytes will come (timeout or FIN). */
function classifyFinal(head: Buffer): Protocol {
  return classify(head) ?? 'other';
}

/**
 * Read a connection's first bytes until its protocol is clear, or until
 * `timeoutMs` passes without a decision (server-speaks-first protocols send
 * nothing): those are 'other'. The socket is left paused; the caller puts
 * `head` back with unshift (unless `ended`).
 */
export function sniffProtocol(sock: Socket, timeoutMs: number): Promise<Sniffed> {
  return new Promise((resolve) => {
    let head: Buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (protocol: Protocol, ended: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeListener('data', onData);
      sock.removeListener('end', onEnd);
      sock.removeListener('error', onEnd);
      sock.pause();
      resolve({ protocol, head, ended });
    };
    const onData = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const p = classify(head);
      if (p) finish(p, false);
    };
    const onEnd = (): void => finish(classifyFinal(head), true);
    const timer = setTimeout(() => finish(classifyFinal(head), false), timeoutMs);
    sock.on('data', onData);
    sock.once('end', onEnd);
    sock.once('error', onEnd);
  });
}

export interface HeaderBlock {
  head: Buffer;
  ended: boolean;
  /** The first request's headers, lower-case names (the last value of repeated ones). */
  headers: Record<string, string>;
}

const MAX_HEADER_BLOCK = 64 * 1024;

/**
 * Read on from an HTTP/1 head until the first request's header block is
 * complete (or `timeoutMs`, or 64 KB). Leaves the socket paused.
 */
export function readHeaderBlock(sock: Socket, head: Buffer, timeoutMs: number): Promise<HeaderBlock> {
  return new Promise((resolve) => {
    let buf = head;
    let settled = false;
    const finish = (ended: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeListener('data', onData);
      sock.removeListener('end', onEnd);
      sock.pause();
      resolve({ head: buf, ended, headers: parseHeaders(buf) });
    };
    const complete = (): boolean => buf.indexOf('\r\n\r\n') !== -1 || buf.indexOf('\n\n') !== -1 || buf.length >= MAX_HEADER_BLOCK;
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      if (complete()) finish(false);
    };
    const onEnd = (): void => finish(true);
    const timer = setTimeout(() => finish(false), timeoutMs);
    if (complete()) {
      finish(false);
      return;
    }
    sock.on('data', onData);
    sock.once('end', onEnd);
    sock.resume();
  });
}

function parseHeaders(buf: Buffer): Record<string, string> {
  const text = buf.subarray(0, MAX_HEADER_BLOCK).toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  const lines = (end === -1 ? text : text.slice(0, end)).split(/\r?\n/).slice(1);
  const out: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) out[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return out;
}
