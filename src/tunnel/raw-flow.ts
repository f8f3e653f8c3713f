import { readFileSync } from 'node:fs';
import { splitHostPort } from '../core/address';
import * as net from 'node:net';
import { DialError, type DialCode } from './messages';
import { SOCKET_HWM, dialCodeFrom, decodeMessage, encodeMessage } from './h2-flows';

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
 * src/tunnel/half-close.ts, or as POST /rdbg.v1/half-close on the HTTP/2
 * data plane), and the laptop's FIN only answers the manager's:
 * so the manager's side keeps each closed connection's TIME_WAIT, not the
 * laptop's ports (see RawFlowBudget), and over port-forward no FIN reaches
 * the container runtime, which would close the pod's side a second later
 * (see JoinOptions.halfCloseB). A FIN from the laptop is still a half-close
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
/** The longest request or reply line either side accepts. */
export const MAX_LINE = 2048;

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

/** `flow` names an accepted flow to the manager (see halfCloseB in joinSockets); none on refusals. */
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
 * Sockets that read into a buffer of their own (node's `onread`), 256 KiB at
 * a time, instead of a fresh 64 KB buffer per read pushed through a
 * Readable: a relay makes a quarter of the reads and no allocations. The
 * buffer is reused, so a chunk is valid only while its sink runs: a sink
 * writes it and pauses the socket until that write is done, or copies it.
 * Only FAST_READERS_MAX sockets at once get one, from a pool (allocating a
 * buffer per connection cut the connection rate to a third): the rest read
 * as usual, so the buffers cost at most 8 MiB however many flows there are.
 * Measured through the sandbox (1 GiB, A/B in the same runs): SOCKS5 about
 * 420 -> 950 MB/s, TUN 350 -> 660 MB/s; 1 MiB buffers gave 10-15% more but
 * would allow only 8 of them in the same memory.
 */
const FAST_READ_BYTES = 256 * 1024;
const FAST_READERS_MAX = 32;
let fastReaders = 0;
const fastBuffers: Buffer[] = [];

interface FastRead {
  /** Takes a chunk that is valid only during the call; false pauses the socket. */
  sink?: (chunk: Buffer) => boolean;
  /** Copies of what came while there was no sink. */
  stash: Buffer[];
  /** Called when the stash grows; true: keep reading. */
  wake?: () => boolean;
}

const fastReads = new WeakMap<net.Socket, FastRead>();

/** Connect a socket that carries a flow: a fast reader while there are free ones (see FAST_READ_BYTES). */
export function connectFlowSocket(opts: net.NetConnectOpts): net.Socket {
  if (fastReaders >= FAST_READERS_MAX) return net.connect(opts);
  fastReaders++;
  const fr: FastRead = { stash: [] };
  const buffer = fastBuffers.pop() ?? Buffer.allocUnsafeSlow(FAST_READ_BYTES);
  const sock = net.connect({
    ...opts,
    onread: {
      buffer,
      callback: (n: number, buf: Buffer): boolean => {
        const chunk = buf.subarray(0, n);
        if (fr.sink) return fr.sink(chunk);
        fr.stash.push(Buffer.from(chunk));
        // nobody takes the bytes yet: read no more until someone does, unless a reader wants more
        return fr.wake?.() ?? false;
      },
    },
  } as net.NetConnectOpts);
  sock.once('close', () => {
    fastReaders--;
    fastBuffers.push(buffer); // nothing reads into it any more
  });
  fastReads.set(sock, fr);
  return sock;
}

/**
 * Read one newline-terminated line from a paused or fresh socket. Bytes after
 * the newline are put back (unshift, or a fast reader's stash), so they reach
 * whoever reads next.
 */
export function readLine(sock: net.Socket, head: Buffer, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const fr = fastReads.get(sock);
    let buf = head;
    let settled = false;
    const done = (err?: Error, line?: string): void => {
      settled = true;
      clearTimeout(timer);
      if (fr) fr.wake = undefined;
      sock.removeListener('data', onData);
      sock.removeListener('end', onEnd);
      sock.removeListener('error', onError);
      sock.removeListener('close', onEnd);
      sock.pause();
      if (err) reject(err);
      else resolve(line!);
    };
    const check = (): void => {
      const nl = buf.indexOf(0x0a);
      if (nl === -1) {
        if (buf.length > MAX_LINE) done(new Error(`no newline in the first ${MAX_LINE} bytes`));
        return;
      }
      // Stop reading first: an unshift while flowing would hand the rest straight back to onData.
      done(undefined, buf.subarray(0, nl).toString('latin1'));
      const rest = buf.subarray(nl + 1);
      if (!rest.length) return;
      if (fr) fr.stash.unshift(Buffer.from(rest));
      else sock.unshift(rest);
    };
    const onData = (d: Buffer): void => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      check();
    };
    const onEnd = (): void => done(new Error('the connection closed before a whole line came'));
    const onError = (err: Error): void => done(err);
    const timer = setTimeout(() => done(new Error(`no line within ${timeoutMs / 1000} s`)), timeoutMs);
    // A fast reader's bytes come to its stash instead of 'data' events.
    const take = (): void => {
      const got = fr!.stash.splice(0);
      if (got.length) onData(Buffer.concat(got));
    };
    if (fr) {
      fr.wake = () => {
        take();
        return !settled;
      };
      take();
    }
    if (!settled) check();
    if (settled) return;
    if (!fr) sock.on('data', onData);
    sock.once('end', onEnd);
    sock.once('close', onEnd);
    sock.once('error', onError);
    sock.resume();
  });
}

/**
 * Open a raw flow through the manager's data port at `dataAddress` and wait
 * for its dial. Resolves with the connected socket (paused, allowHalfOpen),
 * ready to be joined; rejects with the manager's DialError. A `fast` socket
 * (see connectFlowSocket) emits no 'data' events: only joinSockets reads it.
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
        return sock;
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

export interface JoinCounters {
  bytesOut: number; // a -> b
  bytesIn: number; // b -> a
}

export interface JoinOptions {
  /** Sees every chunk carried from b to a, once it is written to a (so a may be ended then). */
  countBA?: (n: number) => void;
  /**
   * When a ends while b is still open: tell the far end another way that a
   * sent `sentAB` bytes and no more, and leave b open until it ends too.
   * Its FIN then only answers the far end's, which keeps TIME_WAIT there
   * (see RawFlowBudget).
   * Resolves false when that failed: b is then ended after all.
   */
  halfCloseB?: (sentAB: number) => Promise<boolean>;
  /** Called when b gets a FIN from us before it sent one (its port then waits in TIME_WAIT here). */
  onClosedFirstB?: () => void;
  /**
   * The far side of halfCloseB: true once b's half-close arrived beside it
   * (and a was ended for it). b's own FIN only answers ours then, so a
   * closing before b ended is the normal end of the flow, not a failure.
   */
  halfClosedB?: () => boolean;
}

/**
 * Join two TCP sockets (both allowHalfOpen) with backpressure both ways: a FIN
 * on one becomes a FIN on the other, and an error or reset on one resets the
 * other. `onDone` runs once, with the reason when the flow did not end cleanly.
 */
export function joinSockets(a: net.Socket, b: net.Socket, counters?: JoinCounters, onDone?: (err?: string) => void, opts: JoinOptions = {}): void {
  let aEnded = false;
  let bEnded = false;
  let sentAB = 0;
  let done = false;
  const finish = (err?: string): void => {
    if (done) return;
    done = true;
    onDone?.(err);
  };
  const reset = (s: net.Socket): void => {
    if (s.destroyed) return;
    // libuv refuses an RST while our FIN is in flight (EINVAL) and node then leaks the handle.
    if (s.writableEnded && !s.writableFinished) s.destroy();
    else s.resetAndDestroy();
  };
  const fail = (why: string): void => {
    reset(a);
    reset(b);
    finish(why);
  };
  const carry = (from: net.Socket, to: net.Socket, count: (n: number) => void): void => {
    const fr = fastReads.get(from);
    if (!fr) {
      from.on('data', (d: Buffer) => {
        const more = to.write(d);
        count(d.length);
        if (!more) from.pause();
      });
      to.on('drain', () => from.resume());
      return;
    }
    // A fast reader's chunk lives in its buffer: when its write does not complete at once,
    // read again only after that very write is done (earlier writes may finish first).
    // Writes complete in order: counting them tells when a given one is done.
    let sent = 0;
    let written = 0;
    let waitingFor = 0;
    const onWritten = (): void => {
      written++;
      if (waitingFor === 0 || written < waitingFor) return;
      waitingFor = 0;
      from.resume();
    };
    fr.sink = (chunk: Buffer): boolean => {
      sent++;
      to.write(chunk, onWritten);
      count(chunk.length);
      if (to.writableLength === 0) return true;
      waitingFor = sent;
      return false;
    };
    fr.wake = undefined;
    for (const c of fr.stash.splice(0)) {
      sent++;
      to.write(c, onWritten); // copies: they may wait in the queue
      count(c.length);
    }
  };
  carry(a, b, (n) => {
    sentAB += n;
    if (counters) counters.bytesOut += n;
  });
  const { countBA, halfCloseB } = opts;
  carry(b, a, (n) => {
    countBA?.(n);
    if (counters) counters.bytesIn += n;
  });
  const endBFirst = (): void => {
    if (!bEnded && !b.destroyed) opts.onClosedFirstB?.();
    b.end();
  };
  a.on('end', () => {
    aEnded = true;
    if (bEnded) return void b.end();
    if (!halfCloseB) return endBFirst();
    halfCloseB(sentAB).then(
      (ok) => ok || endBFirst(),
      endBFirst,
    );
  });
  b.on('end', () => {
    bEnded = true;
    a.end();
    if (aEnded && halfCloseB) b.end(); // its FIN was held back
  });
  a.on('error', (err: NodeJS.ErrnoException) => fail(`${err.code ?? err.message}`));
  b.on('error', (err: NodeJS.ErrnoException) => fail(`${err.code ?? err.message}`));
  const closed = (): void => {
    if (aEnded && bEnded) {
      if (a.destroyed && b.destroyed) finish();
    } else if (!(aEnded && a.destroyed && !b.destroyed && opts.halfClosedB?.())) fail('connection closed');
  };
  a.on('close', closed);
  b.on('close', closed);
  a.resume();
  b.resume();
}

/** How long a closed connection's port stays in TIME_WAIT on Linux (2 x MSL, fixed at 60 s). */
const TIME_WAIT_MS = 60_000;

/**
 * How many raw flows a process opens, at once and per minute; past either
 * limit new flows go over the shared HTTP/2 connection instead.
 *
 * At once: a raw flow costs a descriptor more than a flow on the HTTP/2
 * connection, so at most a quarter of the open-file limit (10,000
 * connections then still fit under a limit of 20,000).
 *
 * Per minute: a raw flow that the laptop side closes first (sends its FIN
 * before the manager's) leaves its local port in TIME_WAIT towards the
 * manager's one address for a minute, and connect() has only about half of
 * the ephemeral range (the even ports) before it slows down and then fails
 * with EADDRNOTAVAIL. Measured here: past about 14,000 such closes in a
 * minute, new connections took 0.4-1 s. So at most a quarter of the range
 * per minute (about 7,000). A raw flow normally does not close first: its
 * half-close goes beside it (JoinOptions.halfCloseB) and its FIN only
 * answers the manager's, which leaves the TIME_WAIT on the manager's side,
 * where it holds no port of the laptop's. Only the closes that did go first
 * are counted (closedFirst), so a burst of short flows stays raw.
 */
export class RawFlowBudget {
  private used = 0;
  /** raw flows closed first by this side, per second over the last minute (a ring of 60 counters) */
  private readonly closed = new Array<number>(60).fill(0);
  private closedTotal = 0;
  private lastSecond = 0;

  constructor(
    readonly max: number,
    readonly maxPerMinute = Infinity,
    private readonly now: () => number = Date.now,
  ) {}

  static forLimits(fileLimit: number, ephemeralPorts: number): RawFlowBudget {
    return new RawFlowBudget(Math.max(0, Math.floor((fileLimit - 512) / 4)), Math.floor(ephemeralPorts / 4));
  }

  /** max (RDBG_RAW_FLOWS_MAX) sets the number at once (0: every flow over HTTP/2); else it follows the limits. */
  static forThisProcess(fileLimit: number, max?: number): RawFlowBudget {
    const b = RawFlowBudget.forLimits(fileLimit, ephemeralPortCount());
    return max !== undefined ? new RawFlowBudget(max, b.maxPerMinute) : b;
  }

  /** Take one raw flow, if there is room; `release` gives it back (once). */
  take(): (() => void) | undefined {
    this.advance();
    if (this.used >= this.max || this.closedTotal >= this.maxPerMinute) return undefined;
    this.used++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used--;
    };
  }

  /** A raw connection this side closed first: its local port waits in TIME_WAIT for a minute. */
  closedFirst(): void {
    this.advance();
    this.closed[this.lastSecond % 60]++;
    this.closedTotal++;
  }

  /** Forget the seconds that left the window. */
  private advance(): void {
    const second = Math.floor(this.now() / 1000);
    if (second - this.lastSecond >= TIME_WAIT_MS / 1000) {
      this.closed.fill(0);
      this.closedTotal = 0;
    } else {
      for (let s = this.lastSecond + 1; s <= second; s++) {
        this.closedTotal -= this.closed[s % 60];
        this.closed[s % 60] = 0;
      }
    }
    this.lastSecond = second;
  }

  get inUse(): number {
    return this.used;
  }

  /** Raw connections this side closed first within the last minute. */
  get closedFirstLastMinute(): number {
    this.advance();
    return this.closedTotal;
  }
}

/** The size of the ephemeral port range connect() draws from (Linux's default where it cannot be read). */
export function ephemeralPortCount(read: () => string = () => readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')): number {
  try {
    const [lo, hi] = read().trim().split(/\s+/).map(Number);
    if (Number.isInteger(lo) && Number.isInteger(hi) && hi >= lo) return hi - lo + 1;
  } catch {
    // not Linux: take Linux's default range
  }
  return 60999 - 32768 + 1;
}

/** A flow whose dial succeeded, waiting for its local socket. */
export interface JoinableFlow {
  join(sock: net.Socket, onDone: (err?: string) => void): void;
  cancel(): void;
}

export interface RawFlowOptions {
  counters?: JoinCounters;
  /** how long the manager may take to answer (default 15 s) */
  timeoutMs?: number;
  /** sends the flow's half-close beside it (see JoinOptions.halfCloseB); without it a FIN carries it */
  halfClose?: (flow: string, sentBytes: number) => Promise<boolean>;
  /** called when this side closes the connection first (RawFlowBudget.closedFirst) */
  onClosedFirst?: () => void;
}

/** Open a raw flow that holds `release` (from RawFlowBudget.take) until it ends. */
export async function openRawFlow(
  dataAddress: string,
  req: RawFlowRequest,
  release: () => void,
  { counters, timeoutMs = 15_000, halfClose, onClosedFirst }: RawFlowOptions = {},
): Promise<JoinableFlow> {
  let remote: net.Socket;
  try {
    remote = await openRawTcp(dataAddress, req, timeoutMs, true);
  } catch (err) {
    release();
    throw err;
  }
  return {
    join: (sock, onDone) => {
      const flow = rawFlowId(remote);
      const halfCloseB = halfClose && flow ? (sent: number) => halfClose(flow, sent) : undefined;
      joinSockets(
        sock,
        remote,
        counters,
        (err) => {
          release();
          onDone(err);
        },
        { halfCloseB, onClosedFirstB: onClosedFirst },
      );
    },
    // A flow that already ended has nothing to cancel (and did not close first).
    cancel: () => {
      release();
      if (remote.destroyed) return;
      onClosedFirst?.();
      remote.destroy();
    },
  };
}
