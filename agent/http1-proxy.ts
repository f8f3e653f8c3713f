import type { Socket } from 'node:net';
import { PassThrough, type Duplex } from 'node:stream';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { reset, splice } from '../src/tunnel/splice';
import { DivertError, guard, logBug } from './errors';
import { rawErrorResponse } from './http-headers';
import { BodyMeter, parseRequestHead, parseResponseHead, WireError, type Head } from './http1-wire';
import type { ActiveIntercept } from './intercept-table';
import { MIRROR_COPY_LIMIT } from './mirror-queue';
import { routeRequest } from './route';
import type { RouterDeps } from './router-deps';

const log = logger('agent.http1');

const MIRROR_TIMEOUT_MS = 30_000;
/** Caller bytes read ahead while a request waits for its turn (a switch of side, an upgrade). */
const READ_AHEAD = 256 * 1024;
const EMPTY = Buffer.alloc(0);

/** Why the app could not be reached, for the 502 a caller reads. */
export function appFailure(address: string, err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return `rdbg traffic agent could not reach the app at ${address}: ${errorMessage(err)}${code && !errorMessage(err).includes(code) ? ` (${code})` : ''}`;
}

function divertText(i: ActiveIntercept, err: Error): string {
  return err instanceof DivertError ? err.message : `rdbg intercept of ${i.workload} by ${i.owner} failed: ${errorMessage(err)}`;
}

function isUpgrade(h: Head): boolean {
  return h.method === 'CONNECT' || h.headers['upgrade'] !== undefined;
}

/** One request sent upstream and waiting for (or receiving) its response. */
interface Exchange {
  method: string;
  /** The request's head, kept to send it again (a bodyless request on a keep-alive connection the app just closed). */
  head: Buffer;
  bodyless: boolean;
  upgrade: boolean;
}

/**
 * One side a caller's requests go to: the app, or one intercept's laptop
 * (a diverted flow). Its responses are measured as they are passed back.
 */
class Upstream {
  sock?: Duplex;
  /** Writes while a diverted flow is still opening. */
  private queued: Buffer[] | undefined = [];
  err?: Error;
  /** Responses it completed: a connection that served one may have been closed by the app meanwhile. */
  served = 0;
  lastCloses = false;
  closed = false;
  // The response being read.
  buf: Buffer = EMPTY;
  head?: Head;
  meter?: BodyMeter;
  /** Bytes of the current response already passed to the caller. */
  started = false;

  constructor(
    readonly key: string,
    readonly failure: (err: Error) => string,
  ) {}

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  private readonly handlers: [string, (...a: any[]) => void][] = [];

  attach(sock: Duplex, conn: Http1Conn): void {
    this.sock = sock;
    const ended = (): void => conn.upstreamEnded(this);
    this.handlers.push(
      ['data', conn.guarded((d: Buffer) => conn.fromUpstream(this, d))],
      ['drain', () => conn.upstreamDrained()],
      ['error', (err: Error) => (this.err ??= err)],
      ['end', ended],
      ['close', ended],
    );
    for (const [ev, fn] of this.handlers) sock.on(ev, fn);
    const q = this.queued ?? [];
    this.queued = undefined;
    for (const b of q) sock.write(b);
  }

  /** false: hold on (backpressure). */
  write(b: Buffer): boolean {
    if (this.queued) {
      this.queued.push(b);
      return true;
    }
    return this.sock?.writable ? this.sock.write(b) : true;
  }

  detach(): void {
    if (!this.sock) return;
    for (const [ev, fn] of this.handlers.splice(0)) this.sock.removeListener(ev, fn);
    this.sock.on('error', () => undefined);
  }

  destroy(): void {
    this.closed = true;
    this.queued = undefined;
    if (this.sock) {
      this.detach();
      reset(this.sock);
    }
  }
}

/**
 * One caller connection. Each request is parsed as far as its head, routed
 * (the app, or the laptop of a matching intercept), and forwarded with its
 * body as the bytes come; responses come back as they are. Requests to one
 * side are pipelined; a request for the other side waits until the
 * responses before it are complete, so answers keep their order. Upgrades
 * (WebSocket) and CONNECT are spliced once their side accepts them.
 */
class Http1Conn {
  private buf: Buffer = EMPTY;
  /** The body of the request being forwarded. */
  private body?: BodyMeter;
  private current?: Upstream;
  private readonly ups = new Map<string, Upstream>();
  /** Requests sent to `current` and not answered yet, in order. */
  private readonly pending: Exchange[] = [];
  /** A request that must wait for the pending ones (another side, an upgrade). */
  private blocked = false;
  private callerEnded = false;
  /** The connection ends once the pending responses are out: the text (an error) or '' (it said close). */
  private ending?: string;
  private done = false;
  /** Copies of the current request's body for mirror intercepts. */
  private taps: PassThrough[] = [];

  constructor(
    private readonly deps: RouterDeps,
    private readonly caller: Socket,
    app?: Socket,
  ) {
    caller.on('data', this.onData);
    caller.on('end', this.onEnd);
    caller.on('close', this.onClose);
    caller.on('drain', this.onDrain);
    // The app's connection, opened when the caller's was accepted, is its upstream; without one, and
    // with nothing intercepted, it opens now, while the first request is still on its way.
    if (app) this.upstream(undefined, app);
    else if (deps.table.size === 0) this.upstream(undefined);
  }

  /** `fn` as a handler whose failure (a bug) costs this connection only, never the agent. */
  readonly guarded = guard('http1 connection handling', () => this.destroy());
  private readonly onData = this.guarded((d: Buffer): void => this.fromCaller(d));
  private readonly onEnd = (): void => this.callerEnd();
  private readonly onClose = (): void => this.close();
  private readonly onDrain = (): void => {
    for (const u of this.ups.values()) if (u.sock?.isPaused()) u.sock.resume();
  };

  private get source(): string {
    return `${this.caller.remoteAddress}:${this.caller.remotePort}`;
  }

  private fromCaller(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    this.pump();
  }

  /** Forward what the caller sent, as far as it may go now. */
  private pump(): void {
    try {
      while (!this.done && !this.blocked && this.ending === undefined && this.buf.length) {
        if (this.body) {
          const n = this.body.take(this.buf);
          const part = n === this.buf.length ? this.buf : this.buf.subarray(0, n);
          const more = this.current!.write(part);
          for (const tap of this.taps) tap.write(part);
          this.buf = n === this.buf.length ? EMPTY : this.buf.subarray(n);
          if (this.body.done) {
            this.body = undefined;
            for (const tap of this.taps.splice(0)) tap.end();
          }
          if (!more) this.caller.pause();
          continue;
        }
        const head = parseRequestHead(this.buf);
        if (!head) break;
        if (!this.request(head)) break;
      }
    } catch (err) {
      if (!(err instanceof WireError)) throw err;
      log.debug('malformed request', { err: err.message });
      if (this.body) {
        // A body that breaks off mid-way: its side has the head and waits for the rest, which will not come.
        this.body = undefined;
        const up = this.current!;
        this.forget(up);
        up.destroy();
        if (this.pending.length > 1) return this.destroy();
        this.pending.length = 0;
      }
      const reason = err.status === 431 ? 'Request Header Fields Too Large' : 'Bad Request';
      this.endWith(rawErrorResponse(err.status, reason, `rdbg traffic agent: malformed HTTP/1 request (${err.message})`));
    }
    if (this.buf.length > READ_AHEAD) this.caller.pause();
  }

  /** Route one request and send its head; false: it waits for its turn. */
  private request(head: Head): boolean {
    const route = routeRequest(this.deps.table, head.headers, head.target);
    const up = this.upstream(route.divert);
    if (this.pending.length && this.current !== up) {
      this.blocked = true;
      return false;
    }
    this.current = up;
    if (route.divert) {
      this.deps.link.countRequest(route.divert.id);
      log.debug('divert', { intercept: route.divert.id, method: head.method, url: head.target });
    }
    const bytes = this.buf.subarray(0, head.size);
    this.buf = this.buf.length === head.size ? EMPTY : this.buf.subarray(head.size);
    const meter = new BodyMeter(head.body);
    const upgrade = isUpgrade(head);
    this.pending.push({ method: head.method, head: Buffer.from(bytes), bodyless: meter.done, upgrade });
    for (const m of route.mirrors) this.mirror(m, bytes, head.method, meter.done);
    if (!up.write(bytes)) this.caller.pause();
    if (!meter.done) this.body = meter;
    // An upgrade's next bytes belong to the new protocol, or to the next request if it is refused.
    if (upgrade) this.blocked = true;
    return !upgrade;
  }

  /** The upstream for a route: one per side, opened on first use (the app's on `app` when given). */
  private upstream(divert: ActiveIntercept | undefined, app?: Socket): Upstream {
    const key = divert ? divert.id : '';
    const have = this.ups.get(key);
    if (have && !have.closed) return have;
    if (divert) {
      const up = new Upstream(key, (err) => divertText(divert, err));
      this.ups.set(key, up);
      this.deps.pools
        .get(divert)
        .open(this.source)
        .then(
          (flow) => {
            if (up.closed || this.done) return void flow.destroy();
            up.attach(flow, this);
          },
          (err: Error) => {
            up.err = err;
            this.upstreamEnded(up);
          },
        )
        .catch(logBug('http1 divert'));
      return up;
    }
    const target = this.deps.app;
    const up = new Upstream(key, (err) => appFailure(target.address, err));
    this.ups.set(key, up);
    up.attach(app ?? target.connect(), this);
    return up;
  }

  fromUpstream(up: Upstream, d: Buffer): void {
    if (this.done) return;
    if (up !== this.current || this.pending.length === 0) {
      // Bytes nobody asked for: the side is not speaking HTTP/1 to us.
      log.debug('unsolicited bytes from upstream', { side: up.key || 'app' });
      this.forget(up);
      up.destroy();
      return;
    }
    up.buf = up.buf.length ? Buffer.concat([up.buf, d]) : d;
    try {
      this.responses(up);
    } catch (err) {
      if (!(err instanceof WireError)) throw err;
      log.debug('malformed response', { side: up.key || 'app', err: err.message });
      if (up.started) return this.destroy();
      this.forget(up);
      up.destroy();
      this.pending.length = 0;
      this.endWith(rawErrorResponse(502, 'Bad Gateway', up.failure(new Error(`malformed response: ${err.message}`))));
    }
  }

  /** Pass on the responses in up.buf, noting where each ends. */
  private responses(up: Upstream): void {
    while (up.buf.length && this.pending.length && !this.done) {
      const ex = this.pending[0];
      if (!up.head) {
        const head = parseResponseHead(up.buf, ex.method);
        if (!head) return;
        up.head = head;
        up.meter = new BodyMeter(head.body);
        up.started = true;
        if (ex.upgrade && (head.status === 101 || (ex.method === 'CONNECT' && head.status >= 200 && head.status < 300))) return this.tunnel(up);
        const n = head.size + up.meter.take(up.buf, head.size);
        this.toCaller(up, n);
      } else {
        this.toCaller(up, up.meter!.take(up.buf));
      }
      if (!up.meter!.done) continue;
      const head = up.head;
      up.head = undefined;
      up.meter = undefined;
      up.started = false;
      if (head.status < 200) continue; // 100 Continue, 103 Early Hints: the final answer is still to come
      this.pending.shift();
      up.served++;
      up.lastCloses = head.close;
      if (head.close || ex.upgrade) {
        // The side closes after this answer, or refused an upgrade whose bytes may follow: so do we.
        this.pending.length = 0;
        this.forget(up);
        this.endWith('');
        return;
      }
      if (this.pending.length === 0) this.turn();
    }
  }

  private toCaller(up: Upstream, n: number): void {
    if (n === 0) return;
    const chunk = n === up.buf.length ? up.buf : up.buf.subarray(0, n);
    up.buf = n === up.buf.length ? EMPTY : up.buf.subarray(n);
    if (!this.caller.write(chunk)) up.sock?.pause();
  }

  /** The pending responses are all out: what waited may go, or the connection ends. */
  private turn(): void {
    if (this.ending !== undefined) return this.finish();
    if (this.blocked) {
      this.blocked = false;
      this.caller.resume();
      this.pump();
    }
    if (this.callerEnded && this.pending.length === 0 && !this.body) this.finish();
  }

  /** An accepted upgrade or CONNECT: from here on the two connections are spliced. */
  private tunnel(up: Upstream): void {
    this.done = true;
    const sock = up.sock!;
    up.detach();
    this.caller.removeListener('data', this.onData);
    this.caller.removeListener('end', this.onEnd);
    this.caller.removeListener('close', this.onClose);
    this.caller.removeListener('drain', this.onDrain);
    this.caller.write(up.buf); // the 101 (or 2xx) and what followed it
    if (this.buf.length) sock.write(this.buf);
    for (const u of this.ups.values()) if (u !== up) u.destroy();
    splice(this.caller, sock);
  }

  private forget(up: Upstream): void {
    if (this.ups.get(up.key) === up) this.ups.delete(up.key);
    up.closed = true;
  }

  upstreamDrained(): void {
    if (this.caller.isPaused() && this.buf.length <= READ_AHEAD && !this.blocked) this.caller.resume();
  }

  /** The upstream ended, closed or could not be opened. */
  upstreamEnded(up: Upstream): void {
    if (up.closed || this.done) return;
    this.forget(up);
    const mine = up === this.current && this.pending.length > 0;
    if (!mine) {
      if (up.lastCloses && up === this.current) this.endWith('');
      up.destroy();
      return;
    }
    if (up.head && up.head.body.kind === 'close') {
      // A close-delimited answer ends here, and so does the connection.
      this.pending.length = 0;
      up.destroy();
      return this.endWith('');
    }
    if (up.started) {
      up.destroy();
      return this.destroy();
    }
    if (up.served > 0 && !this.body && this.pending.every((e) => e.bodyless && !e.upgrade)) {
      // A keep-alive connection closed by the other side as we reused it: send the requests again.
      up.destroy();
      const again = this.upstream(up.key ? this.deps.table.get(up.key) : undefined);
      this.current = again;
      for (const e of this.pending) again.write(e.head);
      return;
    }
    const err = up.err ?? new Error('the connection closed before an answer');
    log.debug('upstream failed', { side: up.key || 'app', err: errorMessage(err) });
    up.destroy();
    this.pending.length = 0;
    this.body = undefined;
    this.endWith(rawErrorResponse(502, 'Bad Gateway', up.failure(err)));
  }

  private callerEnd(): void {
    this.callerEnded = true;
    if (this.body) return this.destroy(); // the request was cut short
    if (this.pending.length === 0 && !this.blocked) this.finish();
  }

  /** Stop reading requests; once the pending answers are out, end with `text`. */
  private endWith(text: string): void {
    if (this.ending !== undefined) return;
    this.ending = text;
    this.caller.pause();
    if (this.pending.length === 0) this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.ending) this.caller.end(this.ending);
    else this.caller.end();
    for (const u of this.ups.values()) u.destroy();
    this.ups.clear();
    if (this.ending) setTimeout(() => this.caller.destroy(), 1000).unref();
  }

  private destroy(): void {
    this.done = true;
    reset(this.caller);
    this.close();
  }

  close(): void {
    this.done = true;
    for (const u of this.ups.values()) u.destroy();
    this.ups.clear();
  }

  /** A copy of the request to a mirror intercept; its answer is read and dropped (see MirrorQueue). */
  private mirror(i: ActiveIntercept, head: Buffer, method: string, bodyless: boolean): void {
    this.deps.link.countRequest(i.id);
    const finish = this.deps.mirrors.admit(i.id);
    if (!finish) return;
    // Held whole in its readable buffer until the flow opens, so the queue's limits count each byte once.
    const copy = new PassThrough({ highWaterMark: MIRROR_COPY_LIMIT });
    copy.write(Buffer.from(head));
    if (bodyless) copy.end();
    else {
      const tap = new PassThrough();
      this.deps.mirrors.copy(i.id, tap, copy);
      this.taps.push(tap);
    }
    this.deps.pools
      .get(i)
      .open(this.source)
      .then(
        (flow) => {
          const meter = new ResponseDrain(method);
          const end = (): void => {
            clearTimeout(timer);
            flow.destroy();
            copy.destroy();
            finish();
          };
          const timer = setTimeout(end, MIRROR_TIMEOUT_MS);
          flow.on('error', end);
          flow.on('close', end);
          flow.on('data', (d: Buffer) => {
            try {
              if (meter.feed(d)) end();
            } catch {
              end();
            }
          });
          copy.pipe(flow, { end: false });
        },
        () => {
          copy.destroy();
          finish();
        },
      )
      .catch(logBug('http1 mirror'));
  }
}

/** Reads one response and drops it: feed() is true once its last byte came. */
class ResponseDrain {
  private buf: Buffer = EMPTY;
  private meter?: BodyMeter;

  constructor(private readonly method: string) {}

  feed(d: Buffer): boolean {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length || this.meter?.done) {
      if (!this.meter) {
        const h = parseResponseHead(this.buf, this.method);
        if (!h) return false;
        this.buf = this.buf.subarray(h.size);
        if (h.status < 200) continue;
        this.meter = new BodyMeter(h.body);
      }
      this.buf = this.buf.subarray(this.meter.take(this.buf));
      if (this.meter.done) return true;
    }
    return false;
  }
}

/**
 * The HTTP/1.x side of the agent: every request is routed on its own, the
 * bytes of heads and bodies are forwarded as they came (see Http1Conn).
 */
export class Http1Proxy {
  private readonly conns = new Set<Http1Conn>();

  constructor(private readonly deps: RouterDeps) {}

  /** Take a connection whose first bytes (`head`) were read to sniff the protocol, and the app's connection for it if one is open. */
  accept(socket: Socket, head: Buffer, app?: Socket): void {
    const c = new Http1Conn(this.deps, socket, app);
    this.conns.add(c);
    socket.once('close', () => this.conns.delete(c));
    if (head.length) socket.unshift(head);
    socket.resume();
  }

  close(): void {
    for (const c of this.conns) c.close();
    this.conns.clear();
  }
}
