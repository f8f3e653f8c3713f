/**
 * HTTP/1.1 message framing for a proxy that forwards bytes as they are: a
 * message's head is parsed (start line, headers, how its body is framed), its
 * body is only measured. The agent and the app must agree on where every
 * message ends, or one caller could smuggle a request past the routing: so
 * anything RFC 9112 calls ambiguous (two different Content-Lengths, both
 * Content-Length and Transfer-Encoding, a bare LF, obs-fold) is refused.
 */

/** The longest head the agent reads (start line and headers). */
export const MAX_HEAD = 64 * 1024;
const MAX_CHUNK_LINE = 4096;

export class WireError extends Error {
  constructor(
    readonly status: 400 | 431 | 502,
    message: string,
  ) {
    super(message);
  }
}

export type Headers = Record<string, string | string[]>;

export type Body = { kind: 'none' } | { kind: 'length'; n: number } | { kind: 'chunked' } | { kind: 'close' };

export interface Head {
  /** Bytes of the head, its final empty line included. */
  size: number;
  /** Request: method and target; response: status. */
  method: string;
  target: string;
  status: number;
  /** HTTP/1.x minor version. */
  minor: number;
  /** Lower-case names; a repeated header's values joined with ", " (set-cookie: a list). */
  headers: Headers;
  body: Body;
  /** The connection ends after this message (Connection: close, or HTTP/1.0 without keep-alive). */
  close: boolean;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([!-~\x80-\xff]+) HTTP\/1\.([0-9])$/;
const STATUS_LINE = /^HTTP\/1\.([0-9]) ([0-9]{3})(?: [\t !-~\x80-\xff]*)?$/;
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');

function headerLines(buf: Buffer, what: string): { lines: string[]; size: number } | undefined {
  const end = buf.indexOf(CRLFCRLF);
  if (end === -1) {
    if (buf.length > MAX_HEAD) throw new WireError(431, `${what} head larger than ${MAX_HEAD} bytes`);
    // A bare LF ending the head would otherwise leave us waiting forever.
    if (buf.indexOf('\n\n') !== -1 || buf.indexOf('\n\r\n') !== -1) throw new WireError(400, `${what} head with a bare LF`);
    return undefined;
  }
  if (end + 4 > MAX_HEAD) throw new WireError(431, `${what} head larger than ${MAX_HEAD} bytes`);
  const text = buf.toString('latin1', 0, end);
  const lines = text.split('\r\n');
  for (const l of lines) if (l.includes('\n') || l.includes('\r')) throw new WireError(400, `${what} head with a bare CR or LF`);
  return { lines, size: end + 4 };
}

function parseHeaders(lines: string[], what: string): Headers {
  const headers: Headers = {};
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(':');
    if (colon <= 0) throw new WireError(400, `${what} header line without a name: ${JSON.stringify(line.slice(0, 40))}`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new WireError(400, `${what} header name is not a token: ${JSON.stringify(name.slice(0, 40))}`);
    const value = line.slice(colon + 1).trim();
    if (BAD_VALUE.test(value)) throw new WireError(400, `${what} header ${name} has a control character`);
    const key = name.toLowerCase();
    const prev = headers[key];
    if (prev === undefined) headers[key] = key === 'set-cookie' ? [value] : value;
    else if (Array.isArray(prev)) prev.push(value);
    else headers[key] = `${prev}, ${value}`;
  }
  return headers;
}

function tokens(v: string | string[] | undefined): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v.join(',') : v)
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

function contentLength(h: Headers, what: string): number | undefined {
  const v = h['content-length'];
  if (v === undefined) return undefined;
  const values = (Array.isArray(v) ? v.join(',') : v).split(',').map((s) => s.trim());
  if (!values.every((s) => /^[0-9]{1,15}$/.test(s)) || new Set(values).size !== 1) throw new WireError(400, `${what} with an invalid Content-Length: ${JSON.stringify(String(v).slice(0, 40))}`);
  return Number(values[0]);
}

function closes(h: Headers, minor: number): boolean {
  const c = tokens(h['connection']);
  return c.includes('close') || (minor === 0 && !c.includes('keep-alive'));
}

/** A request head, or undefined while it is incomplete. */
export function parseRequestHead(buf: Buffer): Head | undefined {
  const got = headerLines(buf, 'request');
  if (!got) return undefined;
  const m = REQUEST_LINE.exec(got.lines[0]);
  if (!m) throw new WireError(400, `not an HTTP/1 request line: ${JSON.stringify(got.lines[0].slice(0, 60))}`);
  const minor = Number(m[3]);
  const headers = parseHeaders(got.lines, 'request');
  const te = tokens(headers['transfer-encoding']);
  const cl = contentLength(headers, 'request');
  let body: Body = { kind: 'none' };
  if (te.length) {
    if (cl !== undefined) throw new WireError(400, 'request with both Content-Length and Transfer-Encoding');
    if (minor === 0) throw new WireError(400, 'HTTP/1.0 request with Transfer-Encoding');
    if (te[te.length - 1] !== 'chunked') throw new WireError(400, 'request Transfer-Encoding does not end in chunked');
    body = { kind: 'chunked' };
  } else if (cl) body = { kind: 'length', n: cl };
  return { size: got.size, method: m[1], target: m[2], status: 0, minor, headers, body, close: closes(headers, minor) };
}

/** A response head to a request with `method`, or undefined while it is incomplete. */
export function parseResponseHead(buf: Buffer, method: string): Head | undefined {
  const got = headerLines(buf, 'response');
  if (!got) return undefined;
  const m = STATUS_LINE.exec(got.lines[0]);
  if (!m) throw new WireError(502, `not an HTTP/1 status line: ${JSON.stringify(got.lines[0].slice(0, 60))}`);
  const minor = Number(m[1]);
  const status = Number(m[2]);
  const headers = parseHeaders(got.lines, 'response');
  let body: Body;
  if (method === 'HEAD' || status < 200 || status === 204 || status === 304 || (method === 'CONNECT' && status < 300)) body = { kind: 'none' };
  else {
    const te = tokens(headers['transfer-encoding']);
    const cl = te.length ? undefined : contentLength(headers, 'response');
    if (te.length) body = te[te.length - 1] === 'chunked' ? { kind: 'chunked' } : { kind: 'close' };
    else if (cl !== undefined) body = cl ? { kind: 'length', n: cl } : { kind: 'none' };
    else body = { kind: 'close' };
  }
  const close = closes(headers, minor) || body.kind === 'close';
  return { size: got.size, method, target: '', status, minor, headers, body, close };
}

/**
 * Measures one message body as its bytes go by: take() says how many bytes
 * of a chunk belong to the body, `done` turns true at its last byte.
 */
export class BodyMeter {
  done = false;
  private left: number;
  /** chunked: 'size' line, 'data', its 'crlf', 'trailer' lines. */
  private state: 'size' | 'data' | 'crlf' | 'trailer' = 'size';
  private line = '';

  constructor(private readonly body: Body) {
    this.left = body.kind === 'length' ? body.n : 0;
    if (body.kind === 'none' || (body.kind === 'length' && body.n === 0)) this.done = true;
  }

  take(chunk: Buffer, from = 0): number {
    if (this.done) return 0;
    const n = chunk.length - from;
    switch (this.body.kind) {
      case 'length': {
        const k = Math.min(this.left, n);
        this.left -= k;
        if (this.left === 0) this.done = true;
        return k;
      }
      case 'close':
        return n;
      case 'chunked':
        return this.chunked(chunk, from) - from;
      default:
        return 0;
    }
  }

  private chunked(buf: Buffer, from: number): number {
    let i = from;
    while (i < buf.length && !this.done) {
      if (this.state === 'data') {
        const k = Math.min(this.left, buf.length - i);
        this.left -= k;
        i += k;
        if (this.left === 0) this.state = 'crlf';
        continue;
      }
      const nl = buf.indexOf(0x0a, i);
      const end = nl === -1 ? buf.length : nl + 1;
      this.line += buf.toString('latin1', i, end);
      i = end;
      if (this.line.length > (this.state === 'trailer' ? MAX_HEAD : MAX_CHUNK_LINE)) throw new WireError(400, 'chunked body line too long');
      if (nl === -1) break;
      const line = this.line;
      this.line = '';
      if (!line.endsWith('\r\n') || line.indexOf('\r') !== line.length - 2) throw new WireError(400, 'chunked body with a bare CR or LF');
      const text = line.slice(0, -2);
      if (this.state === 'crlf') {
        if (text !== '') throw new WireError(400, 'chunk data longer than its size');
        this.state = 'size';
      } else if (this.state === 'size') {
        const m = /^([0-9A-Fa-f]{1,12})[ \t]*(?:;.*)?$/.exec(text);
        if (!m) throw new WireError(400, `bad chunk size line: ${JSON.stringify(text.slice(0, 40))}`);
        this.left = parseInt(m[1], 16);
        this.state = this.left === 0 ? 'trailer' : 'data';
      } else if (text === '') this.done = true;
      else if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+:/.test(text)) throw new WireError(400, 'bad trailer line');
    }
    return i;
  }
}
