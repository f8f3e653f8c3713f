/**
 * Port-forward over SPDY/3.1 tunnelled through the apiserver's WebSocket
 * (KEP-4006, WebSocket subprotocol `SPDY/3.1+portforward.k8s.io`), as
 * kubectl does: the apiserver ends the WebSocket and hands the SPDY bytes to
 * the kubelet / container runtime, whose SPDY code is far cheaper than their
 * WebSocket frame decoder. One tunnel per pod; every forwarded TCP
 * connection is a pair of streams on it (client-go's portforward.go):
 * an error stream and a data stream with headers streamType, port and
 * requestID. A new connection costs one round trip, not a TLS+WebSocket
 * handshake.
 *
 * Half-close: our FIN travels as a FIN on the data stream, but the runtime
 * (containerd) then closes the pod connection about 1 s later whatever the
 * pod still sends, and never half-closes it. So, as on the v4 path, after the
 * local side ends we keep the stream open while the pod keeps sending and
 * send the FIN once it has been quiet for `halfCloseLingerMs`.
 */
import { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import { Codes, RdbgError, errorMessage } from '../core/errors';
import type { Kube } from './config';
import { PORT_FORWARD_PROTOCOL, PortForwardStream, describeForwardError, openPortForwardSocket, type PortForwardOptions, type PortForwardTarget } from './portforward';
import { SpdySession, type SpdyStream, type StreamHandler } from './spdy-session';

export const SPDY_TUNNEL_PROTOCOL = 'SPDY/3.1+portforward.k8s.io';

export interface TunnelOptions {
  /** how long a new stream pair waits for the kubelet's replies (default 15 s) */
  replyTimeoutMs?: number;
  /** close the tunnel after this long without streams (default 60 s; 0 = never) */
  idleMs?: number;
  /**
   * PING the kubelet this often while connections are open (default 30 s; 0 =
   * never): keeps the runtime's idle timeout away from quiet connections and
   * finds a dead tunnel (no answer within the interval) so new connections get
   * a new one.
   */
  keepaliveMs?: number;
}

export type PodConnection = { kind: 'spdy'; tunnel: PortForwardTunnel } | { kind: 'v4'; stream: PortForwardStream };

/**
 * Opens a WebSocket to the pod's portforward subresource offering both
 * protocols: an apiserver with KEP-4006 picks the SPDY tunnel, an older one
 * (or one with PortForwardWebsockets off) passes the request to the kubelet,
 * which picks v4; then this first socket is itself the connection to `port`.
 */
export async function openPodConnection(kube: Kube, target: PortForwardTarget, opts: PortForwardOptions & TunnelOptions = {}): Promise<PodConnection> {
  const { ws, early } = await openPortForwardSocket(kube, target, [SPDY_TUNNEL_PROTOCOL, PORT_FORWARD_PROTOCOL], opts);
  if (ws.protocol === SPDY_TUNNEL_PROTOCOL) return { kind: 'spdy', tunnel: new PortForwardTunnel(ws, target.namespace, target.pod, opts, early) };
  return { kind: 'v4', stream: new PortForwardStream(ws, target, opts.halfCloseLingerMs ?? 1000, early) };
}

/** One WebSocket to a pod's portforward subresource, carrying a SPDY session. */
export class PortForwardTunnel {
  readonly session: SpdySession;
  private requestId = 0;
  private idleTimer?: NodeJS.Timeout;
  private keepalive?: NodeJS.Timeout;
  private readonly streams = new Set<SpdyPortForwardStream>();

  constructor(private readonly ws: WebSocket, readonly namespace: string, readonly pod: string, private readonly opts: TunnelOptions = {}, early: Buffer[] = []) {
    this.session = new SpdySession({
      send: (data, cb) => ws.send(data, { binary: true }, cb),
      get bufferedAmount() { return ws.bufferedAmount; },
      pause: () => ws.pause(),
      resume: () => ws.resume(),
      close: () => ws.close(1000),
    }, { replyTimeoutMs: opts.replyTimeoutMs });
    for (const data of early) this.session.receive(data);
    ws.on('message', (data: Buffer) => this.session.receive(data));
    ws.on('close', (code, reason) => this.session.end(new Error(`the port-forward tunnel to pod ${namespace}/${pod} closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`)));
    ws.on('error', (err) => this.session.end(err));
    this.session.once('close', () => { clearTimeout(this.idleTimer); clearInterval(this.keepalive); });
    const every = opts.keepaliveMs ?? 30_000;
    if (every > 0) {
      this.keepalive = setInterval(() => {
        if (this.streams.size === 0) return;
        this.session.ping(every).catch((err: unknown) => {
          if (this.session.closed) return;
          this.session.end(new Error(`the port-forward tunnel to pod ${namespace}/${pod} stopped answering PINGs: ${errorMessage(err)}`));
          ws.terminate();
        });
      }, every);
      this.keepalive.unref();
    }
    this.armIdle();
  }

  get closed(): boolean {
    return this.session.closed || this.session.goneAway;
  }

  get activeConnections(): number {
    return this.streams.size;
  }

  /** A new TCP connection to `port` in the pod. */
  async open(port: number, opts: { halfCloseLingerMs?: number } = {}): Promise<SpdyPortForwardStream> {
    clearTimeout(this.idleTimer);
    const target = { namespace: this.namespace, pod: this.pod, port };
    const stream = new SpdyPortForwardStream(this.session, target, opts.halfCloseLingerMs ?? 1000);
    this.streams.add(stream);
    stream.once('close', () => {
      this.streams.delete(stream);
      this.armIdle();
    });
    try {
      await stream.start(String(this.requestId++));
    } catch (err) {
      stream.destroy();
      throw new RdbgError(Codes.PORT_FORWARD, `port-forward to pod ${this.namespace}/${this.pod} port ${port}: ${errorMessage(err)}`, undefined, { cause: err });
    }
    return stream;
  }

  close(): void {
    clearTimeout(this.idleTimer);
    clearInterval(this.keepalive);
    for (const s of this.streams) s.destroy();
    this.session.close();
  }

  private armIdle(): void {
    const idleMs = this.opts.idleMs ?? 60_000;
    clearTimeout(this.idleTimer);
    if (idleMs <= 0 || this.streams.size > 0 || this.session.closed) return;
    this.idleTimer = setTimeout(() => { if (this.streams.size === 0) this.close(); }, idleMs);
    this.idleTimer.unref();
  }
}

/** One forwarded TCP connection: an error stream and a data stream on the pod's tunnel. */
export class SpdyPortForwardStream extends Duplex {
  bytesIn = 0;
  bytesOut = 0;
  /** the kubelet's raw error text, when the error stream spoke */
  remoteError = '';

  private data?: SpdyStream;
  private error?: SpdyStream;
  private dataEnded = false;
  private errorEnded = false;
  /** bytes pushed past the readable high-water mark, granted back on _read */
  private owed = 0;
  private lingerTimer?: NodeJS.Timeout;
  private endTimer?: NodeJS.Timeout;
  private lastInput = Date.now();
  /** until start() returns, nobody listens: an error then (the kubelet can answer with the replies) waits */
  private started = false;
  private earlyError?: Error;

  constructor(private readonly session: SpdySession, readonly target: PortForwardTarget, private readonly lingerMs: number) {
    super({ allowHalfOpen: true, readableHighWaterMark: 256 * 1024, writableHighWaterMark: 256 * 1024 });
  }

  /** Opens both streams (pipelined: one round trip) and half-closes the error stream, as client-go does. */
  async start(requestId: string): Promise<void> {
    const headers = { port: String(this.target.port), requestid: requestId };
    const errorHandler: StreamHandler = {
      data: (p) => { this.remoteError += p.toString('utf8'); },
      end: () => { this.errorEnded = true; this.onErrorEnd(); },
      reset: () => { this.errorEnded = true; this.onErrorEnd(); },
    };
    const dataHandler: StreamHandler = {
      data: (p) => this.onData(p),
      end: () => { this.dataEnded = true; this.maybeEnd(); },
      reset: (err) => {
        this.dataEnded = true;
        // A reset after both of our sides are done is only cleanup.
        if (this.readableEnded && this.writableFinished) return;
        this.fail(err);
      },
    };
    const [error, data] = await Promise.allSettled([
      this.session.open({ streamtype: 'error', ...headers }, errorHandler),
      this.session.open({ streamtype: 'data', ...headers }, dataHandler),
    ]);
    if (error.status === 'fulfilled') this.error = error.value;
    if (data.status === 'fulfilled') this.data = data.value;
    if (error.status === 'rejected' || data.status === 'rejected') {
      this.error?.reset();
      this.data?.reset();
      throw (error.status === 'rejected' ? error.reason : (data as PromiseRejectedResult).reason) as Error;
    }
    // We never write on the error stream.
    this.error!.end();
    this.started = true;
    // After the caller's continuation (microtasks) has attached its listeners.
    if (this.earlyError) setImmediate(() => this.fail(this.earlyError!));
  }

  private onData(payload: Buffer): void {
    this.bytesIn += payload.length;
    this.lastInput = Date.now();
    if (this.push(payload)) {
      this.data?.consumed(payload.length);
    } else {
      this.owed += payload.length;
      if (this.data) this.session.pauseReading(this.data);
    }
  }

  private onErrorEnd(): void {
    if (this.remoteError) {
      const err = new RdbgError(Codes.PORT_FORWARD, describeForwardError(this.target, this.remoteError));
      this.fail(Object.assign(err, { detail: this.remoteError }));
      return;
    }
    this.maybeEnd();
  }

  /** The pod's FIN. The kubelet closes the error stream first, so an error can still be heard before the end. */
  private maybeEnd(): void {
    if (!this.dataEnded || this.destroyed || this.readableEnded) return;
    if (this.errorEnded) {
      clearTimeout(this.endTimer);
      this.push(null);
      return;
    }
    this.endTimer ??= setTimeout(() => { if (!this.destroyed) this.push(null); }, 1000);
  }

  private fail(err: Error): void {
    if (this.destroyed) return;
    if (!this.started) { this.earlyError ??= err; return; }
    this.destroy(err instanceof RdbgError ? err : new RdbgError(Codes.PORT_FORWARD,
      `port-forward to pod ${this.target.namespace}/${this.target.pod} port ${this.target.port}: ${errorMessage(err)}`, undefined, { cause: err }));
  }

  override _read(): void {
    if (!this.data) return;
    if (this.owed > 0) {
      this.data.consumed(this.owed);
      this.owed = 0;
    }
    this.session.resumeReading(this.data);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.send([chunk], cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    this.send(chunks.map((c) => c.chunk), cb);
  }

  private send(chunks: Buffer[], cb: (err?: Error | null) => void): void {
    if (!this.data) { cb(new Error('port-forward stream not started')); return; }
    for (const c of chunks) this.bytesOut += c.length;
    this.data.write(chunks, false, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    const data = this.data;
    if (!data) { cb(); return; }
    // Linger while the pod talks (see the file comment), then FIN.
    const check = (): void => {
      const quiet = Date.now() - this.lastInput;
      if (!this.readableEnded && (this.owed > 0 || this.readableLength > 0 || quiet < this.lingerMs)) {
        this.lingerTimer = setTimeout(check, Math.max(10, this.lingerMs - quiet));
        return;
      }
      data.end();
    };
    if (this.readableEnded || data.remoteFin) data.end();
    else this.lingerTimer = setTimeout(check, this.lingerMs);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    clearTimeout(this.lingerTimer);
    clearTimeout(this.endTimer);
    if (this.data) this.session.resumeReading(this.data);
    // Whatever is not finished on both sides is cancelled.
    for (const s of [this.data, this.error]) {
      if (!s || s.closed || (s.localFin && s.remoteFin)) continue;
      // The pod already closed and we are done: a FIN, not a reset.
      if (!err && s.remoteFin) s.end();
      else s.reset();
    }
    cb(err);
  }
}
