/**
 * A loopback listener whose every connection is a port-forward to a ready pod
 * chosen by label selector. The user daemon dials the manager through it, so
 * grpc-js and node:http2 see a plain TCP port. The chosen pod is cached for a
 * few seconds and re-resolved when it fails or disappears.
 */
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { Codes, RdbgError, errorMessage } from '../core/errors';
import { logger } from '../core/log';
import type { Kube } from './config';
import { openPortForward, type PortForwardOptions, type PortForwardStream } from './portforward';
import { openPodConnection, type PortForwardTunnel, type SpdyPortForwardStream } from './spdy-portforward';
import { waitForReadyPod, type PodQuery } from './ready-pod';

const log = logger('kube.forward');

export interface PodForwarderOptions extends PodQuery {
  /** the pod port to reach */
  port: number;
  /** a name for logs and status, e.g. "manager-grpc" */
  name?: string;
  listenHost?: string;
  /** 0 (default) picks a free port */
  listenPort?: number;
  /** how long a connection waits for a ready pod (default 30 s) */
  readyTimeoutMs?: number;
  /** how long a resolved pod is trusted before it is listed again (default 5 s) */
  podTtlMs?: number;
  portForward?: PortForwardOptions;
  /**
   * `auto` (default): SPDY tunnelled over WebSocket, one tunnel per pod, if
   * the apiserver offers it (chosen at the first connection), else v4 with one
   * WebSocket per connection. `spdy` / `v4` force one.
   */
  protocol?: 'auto' | 'spdy' | 'v4';
  /** close a pod's SPDY tunnel after this long without connections (default 60 s) */
  tunnelIdleMs?: number;
  /** a ready pod the caller has just listed: the first connection uses it without listing again (for podTtlMs) */
  knownPod?: string;
}

/** A forwarded connection, over either protocol. */
export type ForwardStream = PortForwardStream | SpdyPortForwardStream;

export interface ForwarderStats {
  name: string;
  listen: string;
  target: string;
  pod?: string;
  connections: number;
  active: number;
  failures: number;
  bytesIn: number;
  bytesOut: number;
  lastError?: string;
  /** the protocol in use: spdy, v4, or auto before the first connection */
  protocol: string;
  tunnels: number;
}

/**
 * Events: 'connection' (pod), 'pod' (pod, previous) when the target changes,
 * 'failure' (err) when a connection could not be forwarded or broke.
 */
export class PodForwarder extends EventEmitter {
  private readonly server = net.createServer({ noDelay: true, pauseOnConnect: true, allowHalfOpen: true });
  private readonly streams = new Set<ForwardStream>();
  /** SPDY tunnels by pod; resolves to undefined when the apiserver chose v4 */
  private readonly tunnels = new Map<string, Promise<PortForwardTunnel | undefined>>();
  private protocol: 'auto' | 'spdy' | 'v4';
  private readonly sockets = new Set<net.Socket>();
  private cached?: { pod: string; at: number };
  private resolving?: Promise<string>;
  private counters = { connections: 0, failures: 0, bytesIn: 0, bytesOut: 0 };
  private lastError?: string;
  private closed = false;
  private bound: net.AddressInfo = { address: '', family: '', port: 0 };

  private constructor(private readonly kube: Kube, readonly opts: PodForwarderOptions) {
    super();
    this.protocol = opts.protocol ?? 'auto';
    this.server.on('connection', (sock) => void this.forward(sock));
  }

  /** Starts listening (127.0.0.1:0 unless told otherwise). */
  static async start(kube: Kube, opts: PodForwarderOptions): Promise<PodForwarder> {
    const f = new PodForwarder(kube, opts);
    if (opts.knownPod) f.cached = { pod: opts.knownPod, at: Date.now() };
    await new Promise<void>((resolve, reject) => {
      f.server.once('error', reject);
      f.server.listen(opts.listenPort ?? 0, opts.listenHost ?? '127.0.0.1', () => {
        f.server.off('error', reject);
        f.bound = f.server.address() as net.AddressInfo;
        resolve();
      });
    });
    log.info('forwarding', { name: f.name, listen: f.address, target: f.target });
    return f;
  }

  get name(): string {
    return this.opts.name ?? `${this.opts.namespace}/${this.opts.selector}:${this.opts.port}`;
  }

  get port(): number {
    return this.bound.port;
  }

  get address(): string {
    return `${this.bound.address}:${this.bound.port}`;
  }

  private get target(): string {
    return `${this.opts.namespace} pods ${this.opts.selector} port ${this.opts.port}`;
  }

  stats(): ForwarderStats {
    let bytesIn = this.counters.bytesIn;
    let bytesOut = this.counters.bytesOut;
    for (const s of this.streams) {
      bytesIn += s.bytesIn;
      bytesOut += s.bytesOut;
    }
    return {
      name: this.name, listen: this.address, target: this.target, pod: this.cached?.pod,
      connections: this.counters.connections, active: this.sockets.size, failures: this.counters.failures,
      bytesIn, bytesOut, lastError: this.lastError, protocol: this.protocol, tunnels: this.tunnels.size,
    };
  }

  /** The pod to use now: the cached one while fresh, else a newly resolved ready pod. */
  async pod(avoid?: string): Promise<string> {
    const ttl = this.opts.podTtlMs ?? 5000;
    if (this.cached && this.cached.pod !== avoid && Date.now() - this.cached.at < ttl) return this.cached.pod;
    this.resolving ??= waitForReadyPod(this.kube, this.opts, this.opts.readyTimeoutMs ?? 30_000, avoid)
      .then((pod) => {
        const previous = this.cached?.pod;
        this.cached = { pod, at: Date.now() };
        if (pod !== previous) {
          log.info('target pod', { name: this.name, pod, previous });
          this.emit('pod', pod, previous);
        }
        return pod;
      })
      .finally(() => { this.resolving = undefined; });
    return this.resolving;
  }

  /** Forgets a pod that failed, so the next connection lists pods again. */
  private invalidate(pod: string): void {
    if (this.cached?.pod === pod) this.cached = undefined;
  }

  /** A port-forward to a ready pod; one retry on another pod when the first is gone or broken. */
  private async dial(): Promise<ForwardStream> {
    let avoid: string | undefined;
    for (let attempt = 0; ; attempt++) {
      const pod = await this.pod(avoid);
      try {
        return await this.dialPod(pod);
      } catch (err) {
        // Permission and reachability do not depend on the pod: retrying would only hide them.
        const podFault = err instanceof RdbgError && (err.code === Codes.POD_NOT_FOUND || err.code === Codes.PORT_FORWARD);
        if (!podFault || attempt > 0) throw err;
        log.info('pod failed, resolving again', { name: this.name, pod, error: errorMessage(err) });
        this.invalidate(pod);
        avoid = pod;
      }
    }
  }

  /** A connection to the pod: a stream pair on its SPDY tunnel, or a v4 WebSocket. */
  private async dialPod(pod: string): Promise<ForwardStream> {
    const target = { namespace: this.opts.namespace, pod, port: this.opts.port };
    const pf = this.opts.portForward ?? {};
    if (this.protocol === 'v4') return openPortForward(this.kube, target, pf);
    for (let fresh = false; ; fresh = true) {
      let tunnel = this.tunnels.get(pod);
      if (!tunnel) {
        // The first connection to a pod opens its tunnel; on a v4-only apiserver it is the connection.
        const opening = openPodConnection(this.kube, target, { ...pf, idleMs: this.opts.tunnelIdleMs });
        tunnel = opening.then((c) => (c.kind === 'spdy' ? c.tunnel : undefined));
        this.tunnels.set(pod, tunnel);
        const entry = tunnel;
        tunnel.then((t) => this.track(pod, entry, t), () => { if (this.tunnels.get(pod) === entry) this.tunnels.delete(pod); });
        const c = await opening;
        if (c.kind === 'v4') {
          log.info('the apiserver offers no SPDY tunnel: one WebSocket per connection (v4)', { name: this.name });
          this.protocol = 'v4';
          return c.stream;
        }
        this.protocol = 'spdy';
      }
      const t = await tunnel;
      if (!t) return openPortForward(this.kube, target, pf);
      try {
        return await t.open(this.opts.port, pf);
      } catch (err) {
        // A tunnel that died under us (apiserver restart, idle close) is replaced once before the pod is blamed.
        if (!t.closed || fresh) throw err;
        if (this.tunnels.get(pod) === tunnel) this.tunnels.delete(pod);
      }
    }
  }

  /** Forgets a tunnel once it closes. */
  private track(pod: string, entry: Promise<PortForwardTunnel | undefined>, t: PortForwardTunnel | undefined): void {
    if (!t) { if (this.tunnels.get(pod) === entry) this.tunnels.delete(pod); return; }
    t.session.once('close', () => { if (this.tunnels.get(pod) === entry) this.tunnels.delete(pod); });
    if (this.closed) t.close();
  }

  private fail(err: unknown): void {
    this.counters.failures++;
    this.lastError = errorMessage(err);
    log.warn('connection failed', { name: this.name, error: this.lastError });
    if (this.listenerCount('failure') > 0) this.emit('failure', err);
  }

  private async forward(sock: net.Socket): Promise<void> {
    this.counters.connections++;
    this.sockets.add(sock);
    sock.on('error', () => sock.destroy());
    sock.once('close', () => this.sockets.delete(sock));
    let stream: ForwardStream;
    try {
      stream = await this.dial();
    } catch (err) {
      this.fail(err);
      // A reset tells the client at once that this connection went nowhere.
      if (!sock.destroyed) sock.resetAndDestroy();
      return;
    }
    if (sock.destroyed || this.closed) {
      stream.destroy();
      return;
    }
    this.streams.add(stream);
    this.emit('connection', stream.target.pod);
    stream.once('close', () => {
      this.streams.delete(stream);
      this.counters.bytesIn += stream.bytesIn;
      this.counters.bytesOut += stream.bytesOut;
    });
    stream.on('error', (err) => {
      // The error channel spoke (e.g. nothing listens in the pod): the pod may be restarting.
      if (err instanceof RdbgError && err.code === Codes.PORT_FORWARD) this.invalidate(stream.target.pod);
      this.fail(err);
      sock.resetAndDestroy();
    });
    // Local FIN -> stream.end() (a linger, see portforward.ts); pod FIN -> sock.end().
    sock.pipe(stream);
    stream.pipe(sock);
    sock.once('close', () => stream.destroy());
    sock.resume();
  }

  /** Stops listening and ends every forwarded connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const closing = new Promise<void>((r) => this.server.close(() => r()));
    for (const s of this.sockets) s.destroy();
    for (const s of this.streams) s.destroy();
    for (const t of this.tunnels.values()) void t.then((tunnel) => tunnel?.close(), () => undefined);
    this.tunnels.clear();
    await closing;
    log.info('stopped', { ...this.stats() });
  }
}
