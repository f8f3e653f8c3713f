/**
 * SPDY/3.1 framing (http://dev.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1):
 * frame encoders, an incremental frame reader, and the zlib header-block
 * codec. Only what a port-forward client needs; the peer in Kubernetes is
 * moby/spdystream (kubelet / container runtime), reached through the
 * apiserver's WebSocket tunnel.
 *
 * Wire layout (big endian):
 *   control: 1 | version(15) | type(16) | flags(8) | length(24) | payload
 *   data:    0 | stream id(31)           | flags(8) | length(24) | payload
 */
import * as zlib from 'node:zlib';

export const SPDY_VERSION = 3;

export const FrameType = {
  SYN_STREAM: 1,
  SYN_REPLY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PING: 6,
  GOAWAY: 7,
  HEADERS: 8,
  WINDOW_UPDATE: 9,
} as const;

/** FIN on data frames and on SYN_STREAM / SYN_REPLY / HEADERS. */
export const FLAG_FIN = 0x01;

export const RstStatus = {
  PROTOCOL_ERROR: 1,
  INVALID_STREAM: 2,
  REFUSED_STREAM: 3,
  UNSUPPORTED_VERSION: 4,
  CANCEL: 5,
  INTERNAL_ERROR: 6,
  FLOW_CONTROL_ERROR: 7,
  STREAM_IN_USE: 8,
  STREAM_ALREADY_CLOSED: 9,
  FRAME_TOO_LARGE: 11,
} as const;

export const SETTINGS_INITIAL_WINDOW_SIZE = 7;
/** SPDY/3.1's initial stream and session window. */
export const DEFAULT_WINDOW = 64 * 1024;
export const MAX_FRAME_LENGTH = 0xffffff;
/** Control frames we accept; header blocks of a port-forward are tens of bytes. */
const MAX_CONTROL_LENGTH = 1024 * 1024;

export type Headers = Record<string, string>;

export type ControlFrame =
  | { type: typeof FrameType.SYN_STREAM; flags: number; streamId: number; associatedId: number; priority: number; block: Buffer }
  | { type: typeof FrameType.SYN_REPLY | typeof FrameType.HEADERS; flags: number; streamId: number; block: Buffer }
  | { type: typeof FrameType.RST_STREAM; flags: number; streamId: number; status: number }
  | { type: typeof FrameType.SETTINGS; flags: number; settings: Array<{ flags: number; id: number; value: number }> }
  | { type: typeof FrameType.PING; flags: number; id: number }
  | { type: typeof FrameType.GOAWAY; flags: number; lastGoodStreamId: number; status: number }
  | { type: typeof FrameType.WINDOW_UPDATE; flags: number; streamId: number; delta: number };

export class SpdyProtocolError extends Error {
  constructor(message: string) {
    super(`SPDY protocol error: ${message}`);
    this.name = 'SpdyProtocolError';
  }
}

function controlHeader(type: number, flags: number, length: number, payload: number): Buffer {
  const b = Buffer.allocUnsafe(8 + payload);
  b.writeUInt16BE(0x8000 | SPDY_VERSION, 0);
  b.writeUInt16BE(type, 2);
  b.writeUInt32BE(((flags & 0xff) << 24 | length) >>> 0, 4);
  return b;
}

/** The 8-byte header of a data frame; the payload follows it on the wire. */
export function dataFrameHeader(streamId: number, length: number, fin = false): Buffer {
  if (length > MAX_FRAME_LENGTH) throw new RangeError(`data frame of ${length} bytes`);
  const b = Buffer.allocUnsafe(8);
  b.writeUInt32BE(streamId & 0x7fffffff, 0);
  b.writeUInt32BE(((fin ? FLAG_FIN : 0) << 24 | length) >>> 0, 4);
  return b;
}

export function synStreamFrame(streamId: number, block: Buffer, opts: { fin?: boolean; priority?: number; associatedId?: number } = {}): Buffer {
  const b = controlHeader(FrameType.SYN_STREAM, opts.fin ? FLAG_FIN : 0, 10 + block.length, 10);
  b.writeUInt32BE(streamId & 0x7fffffff, 8);
  b.writeUInt32BE((opts.associatedId ?? 0) & 0x7fffffff, 12);
  b[16] = ((opts.priority ?? 0) & 0x7) << 5;
  b[17] = 0; // credential slot
  return Buffer.concat([b, block]);
}

/** SYN_REPLY (a client never sends one, but tests play the server with it) and HEADERS share a layout. */
export function replyFrame(type: typeof FrameType.SYN_REPLY | typeof FrameType.HEADERS, streamId: number, block: Buffer, fin = false): Buffer {
  const b = controlHeader(type, fin ? FLAG_FIN : 0, 4 + block.length, 4);
  b.writeUInt32BE(streamId & 0x7fffffff, 8);
  return Buffer.concat([b, block]);
}

export function rstStreamFrame(streamId: number, status: number): Buffer {
  const b = controlHeader(FrameType.RST_STREAM, 0, 8, 8);
  b.writeUInt32BE(streamId & 0x7fffffff, 8);
  b.writeUInt32BE(status, 12);
  return b;
}

export function settingsFrame(settings: Array<{ id: number; value: number; flags?: number }>): Buffer {
  const b = controlHeader(FrameType.SETTINGS, 0, 4 + 8 * settings.length, 4 + 8 * settings.length);
  b.writeUInt32BE(settings.length, 8);
  settings.forEach((s, i) => {
    b.writeUInt32BE(((s.flags ?? 0) << 24 | (s.id & 0xffffff)) >>> 0, 12 + 8 * i);
    b.writeUInt32BE(s.value, 16 + 8 * i);
  });
  return b;
}

export function pingFrame(id: number): Buffer {
  const b = controlHeader(FrameType.PING, 0, 4, 4);
  b.writeUInt32BE(id >>> 0, 8);
  return b;
}

export function goAwayFrame(lastGoodStreamId: number, status = 0): Buffer {
  const b = controlHeader(FrameType.GOAWAY, 0, 8, 8);
  b.writeUInt32BE(lastGoodStreamId & 0x7fffffff, 8);
  b.writeUInt32BE(status, 12);
  return b;
}

/** Stream id 0 updates the session window (SPDY/3.1). */
export function windowUpdateFrame(streamId: number, delta: number): Buffer {
  const b = controlHeader(FrameType.WINDOW_UPDATE, 0, 8, 8);
  b.writeUInt32BE(streamId & 0x7fffffff, 8);
  b.writeUInt32BE(delta & 0x7fffffff, 12);
  return b;
}

export interface FrameSink {
  control(frame: ControlFrame): void;
  /** a piece of a data frame's payload as it arrives (a frame may come in several pieces); `fin` on the last */
  data(streamId: number, payload: Buffer, fin: boolean): void;
}

/**
 * Turns a byte stream cut anywhere (WebSocket messages) into frames. Data
 * payloads are handed on in the pieces they arrived in, without copying;
 * only headers and control payloads are assembled.
 */
export class FrameReader {
  private pending: Buffer[] = [];
  private pendingLength = 0;
  /** inside a data frame: its stream, the payload bytes still to come, and its flags */
  private data?: { streamId: number; left: number; fin: boolean };

  constructor(private readonly sink: FrameSink) {}

  push(chunk: Buffer): void {
    let buf = chunk;
    while (buf.length > 0) {
      if (this.data) {
        const n = Math.min(this.data.left, buf.length);
        const d = this.data;
        d.left -= n;
        if (d.left === 0) this.data = undefined;
        this.sink.data(d.streamId, buf.subarray(0, n), d.left === 0 && d.fin);
        buf = buf.subarray(n);
        continue;
      }
      // A frame header, and for control frames the whole payload, may span chunks.
      if (this.pendingLength > 0 || buf.length < 8) {
        this.pending.push(buf);
        this.pendingLength += buf.length;
        if (this.pendingLength < 8) return;
        buf = Buffer.concat(this.pending, this.pendingLength);
        this.pending = [];
        this.pendingLength = 0;
      }
      const word = buf.readUInt32BE(0);
      const flags = buf[4];
      const length = buf.readUIntBE(5, 3);
      if ((word & 0x80000000) === 0) {
        const streamId = word & 0x7fffffff;
        if (streamId === 0) throw new SpdyProtocolError('data frame on stream 0');
        buf = buf.subarray(8);
        if (length === 0) {
          this.sink.data(streamId, buf.subarray(0, 0), (flags & FLAG_FIN) !== 0);
          continue;
        }
        this.data = { streamId, left: length, fin: (flags & FLAG_FIN) !== 0 };
        continue;
      }
      if (length > MAX_CONTROL_LENGTH) throw new SpdyProtocolError(`control frame of ${length} bytes`);
      if (buf.length < 8 + length) {
        this.pending.push(buf);
        this.pendingLength = buf.length;
        return;
      }
      const version = (word >>> 16) & 0x7fff;
      if (version !== SPDY_VERSION) throw new SpdyProtocolError(`version ${version}, expected ${SPDY_VERSION}`);
      const frame = parseControl(word & 0xffff, flags, buf.subarray(8, 8 + length));
      buf = buf.subarray(8 + length);
      if (frame) this.sink.control(frame);
    }
  }
}

function need(p: Buffer, n: number, what: string): void {
  if (p.length < n) throw new SpdyProtocolError(`${what} frame of ${p.length} bytes`);
}

/** Unknown control types are ignored, as the spec asks. */
function parseControl(type: number, flags: number, p: Buffer): ControlFrame | undefined {
  switch (type) {
    case FrameType.SYN_STREAM:
      need(p, 10, 'SYN_STREAM');
      return { type, flags, streamId: p.readUInt32BE(0) & 0x7fffffff, associatedId: p.readUInt32BE(4) & 0x7fffffff, priority: p[8] >> 5, block: p.subarray(10) };
    case FrameType.SYN_REPLY:
    case FrameType.HEADERS:
      need(p, 4, 'SYN_REPLY/HEADERS');
      return { type, flags, streamId: p.readUInt32BE(0) & 0x7fffffff, block: p.subarray(4) };
    case FrameType.RST_STREAM:
      need(p, 8, 'RST_STREAM');
      return { type, flags, streamId: p.readUInt32BE(0) & 0x7fffffff, status: p.readUInt32BE(4) };
    case FrameType.SETTINGS: {
      need(p, 4, 'SETTINGS');
      const n = p.readUInt32BE(0);
      need(p, 4 + 8 * n, 'SETTINGS');
      const settings = [];
      for (let i = 0; i < n; i++) {
        const w = p.readUInt32BE(4 + 8 * i);
        settings.push({ flags: w >>> 24, id: w & 0xffffff, value: p.readUInt32BE(8 + 8 * i) });
      }
      return { type, flags, settings };
    }
    case FrameType.PING:
      need(p, 4, 'PING');
      return { type, flags, id: p.readUInt32BE(0) };
    case FrameType.GOAWAY:
      need(p, 4, 'GOAWAY');
      return { type, flags, lastGoodStreamId: p.readUInt32BE(0) & 0x7fffffff, status: p.length >= 8 ? p.readUInt32BE(4) : 0 };
    case FrameType.WINDOW_UPDATE:
      need(p, 8, 'WINDOW_UPDATE');
      return { type, flags, streamId: p.readUInt32BE(0) & 0x7fffffff, delta: p.readUInt32BE(4) & 0x7fffffff };
    default:
      return undefined;
  }
}

/** A header block before compression: count, then (name, value) pairs, all lengths 32-bit. Names lower case. */
export function encodeHeaderBlock(headers: Headers): Buffer {
  const entries = Object.entries(headers);
  const parts: Buffer[] = [u32(entries.length)];
  for (const [name, value] of entries) {
    const n = Buffer.from(name.toLowerCase(), 'utf8');
    const v = Buffer.from(value, 'utf8');
    parts.push(u32(n.length), n, u32(v.length), v);
  }
  return Buffer.concat(parts);
}

/** Multiple values of one name (NUL separated on the wire) are kept joined with NUL. */
export function decodeHeaderBlock(b: Buffer): Headers {
  const out: Headers = {};
  let off = 0;
  const take = (n: number): Buffer => {
    if (off + n > b.length) throw new SpdyProtocolError('truncated header block');
    const s = b.subarray(off, off + n);
    off += n;
    return s;
  };
  const count = take(4).readUInt32BE(0);
  for (let i = 0; i < count; i++) {
    const name = take(take(4).readUInt32BE(0)).toString('utf8');
    out[name] = take(take(4).readUInt32BE(0)).toString('utf8');
  }
  return out;
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

/**
 * SPDY/3's zlib dictionary (spec section 2.6.10.1): length-prefixed header
 * names and values, then a run of common text.
 */
export const SPDY3_DICTIONARY: Buffer = (() => {
  const words = [
    'options', 'head', 'post', 'put', 'delete', 'trace', 'accept', 'accept-charset', 'accept-encoding', 'accept-language',
    'accept-ranges', 'age', 'allow', 'authorization', 'cache-control', 'connection', 'content-base', 'content-encoding',
    'content-language', 'content-length', 'content-location', 'content-md5', 'content-range', 'content-type', 'date', 'etag',
    'expect', 'expires', 'from', 'host', 'if-match', 'if-modified-since', 'if-none-match', 'if-range', 'if-unmodified-since',
    'last-modified', 'location', 'max-forwards', 'pragma', 'proxy-authenticate', 'proxy-authorization', 'range', 'referer',
    'retry-after', 'server', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'user-agent', 'vary', 'via', 'warning',
    'www-authenticate', 'method', 'get', 'status', '200 OK', 'version', 'HTTP/1.1', 'url', 'public', 'set-cookie', 'keep-alive',
    'origin',
  ];
  const tail = '100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505'
    + '203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized'
    + '403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable'
    + 'Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT'
    + 'chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,'
    + 'text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.';
  return Buffer.concat([...words.flatMap((w) => [u32(w.length), Buffer.from(w, 'latin1')]), Buffer.from(tail, 'latin1')]);
})();

/**
 * One zlib context for a whole session and direction, as SPDY requires:
 * every header block is a Z_SYNC_FLUSH of the same deflate (or inflate)
 * stream. Calls complete in the order they were made.
 */
export class HeaderCodec {
  private readonly z: zlib.Deflate | zlib.Inflate;
  private failed?: Error;
  /** calls not yet answered: a zlib error fails them all (zlib calls back no more after one) */
  private readonly waiting = new Set<(err: Error) => void>();

  constructor(readonly mode: 'deflate' | 'inflate') {
    this.z = mode === 'deflate'
      ? zlib.createDeflate({ dictionary: SPDY3_DICTIONARY })
      : zlib.createInflate({ dictionary: SPDY3_DICTIONARY });
    this.z.on('error', (err) => {
      this.failed = new SpdyProtocolError(`header block: ${err.message}`);
      for (const reject of this.waiting) reject(this.failed);
      this.waiting.clear();
    });
  }

  /** Compresses (or decompresses) one header block. */
  process(input: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.failed) { reject(this.failed); return; }
      this.waiting.add(reject);
      this.z.write(input);
      this.z.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        this.waiting.delete(reject);
        if (this.failed) { reject(this.failed); return; }
        const out: Buffer[] = [];
        for (let b = this.z.read() as Buffer | null; b !== null; b = this.z.read() as Buffer | null) out.push(b);
        resolve(Buffer.concat(out));
      });
    });
  }

  close(): void {
    this.z.destroy();
  }
}
