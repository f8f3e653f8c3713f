import * as net from 'node:net';
import { splitHostPort } from '../../core/address';
import { SOCKET_HWM, connectFlowSocket, readLine } from '../fast-socket';
import { DialError, dialCodeFrom, decodeMessage, encodeMessage, type DialCode } from '../messages';
import { parked, splice, type ByteCounters, type JoinableFlow, type SpliceOptions } from '../splice';

/**
 * Raw flows: a TCP flow to the cluster carried by a TCP connection of its own
 * to the manager's data port, with no framing after one line each way.
 *
 *   client:  RDBG-FLOW/1 <session> tcp <host> <port> <source>\n
 *   manager: <dial code> <address> <message, percent-encoded> [<flow id>]\n
 *
 * and from then on the connection is the flow: its bytes are the flow's
 * bytes, and RST is a reset, because TCP already has those. The laptop's
 * half-close goes beside the flow, by its id (on the half-close connection,
 * raw/half-close.ts, or as POST /rdbg.v1/half-close on the HTTP/2
 * data plane), and the laptop's FIN only answers the manager's:
 * so the manager's side keeps each closed connection's TIME_WAIT, not the
 * laptop's ports (see RawFlowBudget), and over port-forward no FIN reaches
 * the container runtime, which would close the pod's side a second later
 * (see SpliceOptions.halfCloseB). A FIN from the laptop is still a half-close
 * (the fallback when the manager did not take one).
 * The data port tells these apart from HTTP/2 connections by the first byte
 * ('R' here, 'P' for the HTTP/2 preface).
 *
 * Why beside the HTTP/2 data plane: with one connection per flow there is no
 * stream layer in either process (each byte is read once and written once),
 * which roughly doubles bulk throughput and saves about 100 us per round trip
 * on this machine. HTTP/2 stays for diverted flows, DNS, UDP, and the
 * port-forward transport, where a new connection costs a new stream through
 * the apiserver and kubelet (milliseconds) and one multiplexed connection wins.
 */
export const RAW_MAGIC = 'RDBG-FLOW/1';
/** TCP keepalive on raw flows, both ends (HTTP/2 flows have the connection's PINGs instead). */
export const KEEPALIVE_MS = 30_000;

export interface RawFlowRequest {
  session: string;
  protocol: string;
  host: string;
  port: number;
  source: string;
}

const FIELD = /^[\x21-\x7e]{1,512}$/; // visible ASCII, no spaces

export function formatRequest(r: RawFlowRequest): string {
  const source = r.source || '-';
  for (const f of [r.session, r.protocol, r.host, source]) {
    if (!FIELD.test(f)) throw new DialError('FAILED', `cannot send "${f.slice(0, 60)}" in a flow request`);
  }
  return `${RAW_MAGIC} ${r.session} ${r.protocol} ${r.host} ${r.port} ${source}\n`;
}

/** Parse a request line (without its newline); a string is the reason it is malformed. */
export function parseRequest(line: string): RawFlowRequest | string {
  const parts = line.split(' ');
  if (parts[0] !== RAW_MAGIC) return `not a flow request (expected "${RAW_MAGIC}")`;
  if (parts.length !== 6 || parts.slice(1).some((p) => !FIELD.test(p))) return 'malformed flow request';
  const [, session, protocol, host, portText, source] = parts;
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535) || host.length > 253) return `invalid destination "${host.slice(0, 100)}:${portText.slice(0, 10)}"`;
  return { session, protocol, host, port, source: source === '-' ? '' : source };
}

/** `flow` names an accepted flow to the manager (see SpliceOptions.halfCloseB); none on refusals. */
export function formatReply(code: DialCode, address: string, message: string, flow = ''): string {
  // '-' stands for an empty field, so a message that is itself "-" goes percent-encoded.
  const m = message === '-' ? '%2D' : encodeMessage(message) || '-';
  return `${code} ${address || '-'} ${m}${flow ? ` ${flow}` : ''}\n`;
}

export function parseReply(line: string): { code: DialCode; address: string; message: string; flow: string } {
  const [code, address, message, flow] = line.split(' ');
  return { code: dialCodeFrom(code), address: address === '-' ? '' : (address ?? ''), message: message === '-' ? '' : decodeMessage(message), flow: flow ?? '' };
}

/**
 * Open a raw flow through the manager's data port at `dataAddress` and wait
 * for its dial. Resolves with the connected socket (paused, allowHalfOpen),
 * ready to be joined; rejects with the manager's DialError. A `fast` socket
 * (see connectFlowSocket) emits no 'data' events: only splice reads it.
 */
export function openRawTcp(dataAddress: string, req: RawFlowRequest, timeoutMs: number, fast = false): Promise<net.Socket> {
  let line: string;
  let host: string;
  let port: number;
  try {
    line = formatRequest(req);
    ({ host, port } = splitHostPort(dataAddress, "the manager's data address"));
  } catch (err) {
    return Promise.reject(err);
  }
  const opts = { host, port, noDelay: true, allowHalfOpen: true, highWaterMark: SOCKET_HWM } as net.NetConnectOpts;
  const sock = fast ? connectFlowSocket(opts) : net.connect(opts);
  sock.write(line);
  return readLine(sock, Buffer.alloc(0), timeoutMs).then(
    (replyLine) => {
      const reply = parseReply(replyLine);
      if (reply.code === 'OK') {
        if (reply.flow) flowIds.set(sock, reply.flow);
        // An idle flow must outlive NAT and firewall timeouts between the laptop and the manager.
        sock.setKeepAlive(true, KEEPALIVE_MS);
        return parked(sock);
      }
      sock.destroy();
      throw new DialError(reply.code, reply.message || reply.code);
    },
    (err: NodeJS.ErrnoException) => {
      sock.destroy();
      throw new DataPortError(`cannot reach the traffic manager's data port at ${dataAddress}: ${err.message}`);
    },
  );
}

const flowIds = new WeakMap<net.Socket, string>();

/** The manager's name for the raw flow on `sock` (from its reply), if it gave one. */
export function rawFlowId(sock: net.Socket): string | undefined {
  return flowIds.get(sock);
}

/** The connection to the data port failed before the manager answered: the dial may not have been tried. */
export class DataPortError extends DialError {
  constructor(message: string) {
    super('UNREACHABLE', message);
  }
}

export interface RawFlowOptions {
  counters?: ByteCounters;
  /** how long the manager may take to answer (default 15 s) */
  timeoutMs?: number;
  /** sends the flow's half-close beside it (see SpliceOptions.halfCloseB); without it a FIN carries it */
  halfClose?: (flow: string, sentBytes: number) => Promise<boolean>;
  /** called when this side closes the connection first (RawFlowBudget.closedFirst) */
  onClosedFirst?: () => void;
}

/** Open a raw flow that holds `release` (from RawFlowBudget.take) until it ends. */
export async function openRawFlow(dataAddress: string, req: RawFlowRequest, release: () => void, opts: RawFlowOptions = {}): Promise<JoinableFlow> {
  let remote: net.Socket;
  try {
    remote = await openRawTcp(dataAddress, req, opts.timeoutMs ?? 15_000, true);
  } catch (err) {
    release();
    throw err;
  }
  return new RawFlow(remote, release, opts);
}

/**
 * A dialled raw flow, and once joined its splice's options: one object per
 * flow whose methods are the splice's callbacks (an idle daemon holds
 * thousands, see Splice).
 */
class RawFlow implements JoinableFlow, SpliceOptions {
  readonly counters?: ByteCounters;
  private onDoneJoin?: (err?: string) => void;

  constructor(
    private readonly remote: net.Socket,
    private readonly release: () => void,
    private readonly opts: RawFlowOptions,
  ) {
    this.counters = opts.counters;
    // Without a flow id from the manager, or without a way to send one, the half-close is a FIN.
    if (!opts.halfClose || !rawFlowId(remote)) this.halfCloseB = undefined;
  }

  join(sock: net.Socket, onDone: (err?: string) => void): void {
    this.onDoneJoin = onDone;
    splice(sock, this.remote, this);
  }

  halfCloseB?(sent: number): Promise<boolean> {
    return this.opts.halfClose!(rawFlowId(this.remote)!, sent);
  }

  onClosedFirstB(): void {
    this.opts.onClosedFirst?.();
  }

  onDone(err?: string): void {
    this.release();
    this.onDoneJoin?.(err);
  }

  // A flow that already ended has nothing to cancel (and did not close first).
  cancel(): void {
    this.release();
    if (this.remote.destroyed) return;
    this.opts.onClosedFirst?.();
    this.remote.destroy();
  }
}
