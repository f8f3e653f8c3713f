import * as http2 from 'node:http2';

/**
 * The data plane: one HTTP/2 stream per flow, carrying the flow's raw bytes.
 * HTTP/2 gives each flow its own flow control, END_STREAM is a half-close and
 * RST_STREAM is a reset, so no framing of our own is needed (UDP adds a
 * 2-byte length before each datagram). The opener names the flow in request
 * headers; the manager answers with the dial result in response headers.
 *
 *   POST /rdbg.v1/flow    rdbg-session, rdbg-protocol (tcp|udp), rdbg-host, rdbg-port
 *   POST /rdbg.v1/divert  rdbg-agent, rdbg-intercept[, rdbg-kind: files]  (an agent's diverted flow, or its files for a mount)
 *   POST /rdbg.v1/accept  rdbg-session, rdbg-flow, rdbg-dial[, rdbg-message]  (the owner's answer)
 *   response:             rdbg-dial (OK|REFUSED|...), rdbg-message, rdbg-address
 *   POST /rdbg.v1/dns     rdbg-session, rdbg-name, rdbg-qtype -> a DNSResponse as JSON
 *                         (the root daemon's cluster lookups: one hop instead of two gRPC calls)
 *
 * Flows are not gRPC calls because those cost a protobuf message and grpc-js
 * call machinery per chunk on Node.
 */
export const PATH = { flow: '/rdbg.v1/flow', divert: '/rdbg.v1/divert', accept: '/rdbg.v1/accept', dns: '/rdbg.v1/dns', halfClose: '/rdbg.v1/half-close' } as const;
export const H = {
  session: 'rdbg-session',
  agent: 'rdbg-agent',
  protocol: 'rdbg-protocol',
  host: 'rdbg-host',
  port: 'rdbg-port',
  intercept: 'rdbg-intercept',
  flow: 'rdbg-flow',
  dial: 'rdbg-dial',
  message: 'rdbg-message',
  address: 'rdbg-address',
  source: 'rdbg-source',
  name: 'rdbg-name',
  qtype: 'rdbg-qtype',
  bytes: 'rdbg-bytes',
  kind: 'rdbg-kind',
} as const;

export const WINDOW = 16 * 1024 * 1024;
export const H2_SETTINGS: http2.Settings = {
  initialWindowSize: WINDOW,
  maxConcurrentStreams: 1 << 20,
  maxFrameSize: 1 << 20,
  enablePush: false,
};
/** Megabytes of buffered data nghttp2 may hold for one session before it refuses new streams. */
export const MAX_SESSION_MEMORY = 4096;

export function header(headers: http2.IncomingHttpHeaders, name: string): string {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : (v ?? '');
}

/** Splits a byte stream of [u16 length][datagram] frames. */
export class DatagramFramer {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly onDatagram: (d: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (this.buf.length >= 2) {
      const n = this.buf.readUInt16BE(0);
      if (this.buf.length < 2 + n) break;
      this.onDatagram(this.buf.subarray(2, 2 + n));
      this.buf = this.buf.subarray(2 + n);
    }
  }

  static frame(d: Buffer): Buffer {
    const head = Buffer.alloc(2);
    head.writeUInt16BE(d.length);
    return Buffer.concat([head, d]);
  }
}

/** One UDP flow as its users see it: a datagram in, a datagram out. */
export interface DatagramChannel {
  send(d: Buffer): void;
  onDatagram(fn: (d: Buffer) => void): void;
  onClose(fn: () => void): void;
  close(): void;
}

/** How long a closed UDP flow waits for the manager's end of the stream before it resets it. */
const UDP_CLOSE_GRACE_MS = 5000;

/** A UDP flow carried by an HTTP/2 stream of length-prefixed datagrams. */
export function datagramChannel(stream: http2.Http2Stream): DatagramChannel {
  let deliver: (d: Buffer) => void = () => undefined;
  const closeFns: (() => void)[] = [];
  const framer = new DatagramFramer((d) => deliver(d));
  stream.on('data', (c: Buffer) => framer.push(c));
  stream.on('close', () => closeFns.forEach((f) => f()));
  stream.on('error', () => undefined);
  return {
    send: (d) => void stream.write(DatagramFramer.frame(d)),
    onDatagram: (fn) => (deliver = fn),
    onClose: (fn) => void closeFns.push(fn),
    // END_STREAM, not RST_STREAM: thousands of flows let go at once (an idle sweep, a flood's evictions) would trip
    // the manager's guard against rapid resets, which ends the whole connection and every flow on it.
    close: () => {
      if (stream.closed || stream.destroyed) return;
      stream.end();
      setTimeout(() => stream.close(), UDP_CLOSE_GRACE_MS).unref();
    },
  };
}
