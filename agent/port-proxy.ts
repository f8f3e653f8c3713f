import * as net from 'node:net';
import { PassThrough, type Duplex } from 'node:stream';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { logBug } from './errors';
import { rawErrorResponse } from './http-headers';
import { Http1Proxy } from './http1-proxy';
import { H2Router } from './h2-router';
import { SplicedH2 } from './h2-splice';
import type { ActiveIntercept } from './intercept-table';
import { readHeaderBlock, sniffProtocol, type Sniffed } from './protocol-sniff';
import { isKubeProbe } from './route';
import type { RouterDeps } from './router-deps';
import { reset, splice } from '../src/tunnel/splice';

const log = logger('agent.port');

export interface PortProxyOptions {
  /** How long to wait for a caller's first bytes before taking it for a server-speaks-first protocol. */
  sniffTimeoutMs?: number;
}

/**
 * The port the Service sends to. Each connection's first bytes decide its
 * path: HTTP/2 and HTTP/1 go to the routers (per-request routing), anything
 * else is spliced to the app untouched - unless a global intercept takes the
 * whole port, in which case the connection is diverted at the TCP level.
 */
export class PortProxy {
  readonly server: net.Server;
  readonly h1: Http1Proxy;
  readonly h2: H2Router;
  private readonly conns = new Set<net.Socket>();
  /** h2c connections spliced to the app while no intercept applied to the port. */
  private readonly splicedH2 = new Set<SplicedH2>();
  private readonly sniffTimeoutMs: number;

  constructor(
    private readonly deps: RouterDeps,
    opts: PortProxyOptions = {},
  ) {
    this.sniffTimeoutMs = opts.sniffTimeoutMs ?? 300;
    this.h1 = new Http1Proxy(deps);
    this.h2 = new H2Router(deps);
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, (sock) => this.onConnection(sock));
    this.server.on('error', (err) => log.error('listener error', { err: errorMessage(err) }));
  }

  listen(port: number, host?: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ port, host }, () => {
        this.server.removeListener('error', reject);
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.conns) c.destroy();
    this.h1.close();
    this.h2.close();
    await closed;
  }

  /**
   * The intercept table changed. h2c connections spliced while nothing was
   * intercepted are asked to move to a new connection, which is routed per
   * stream (HTTP/1 connections are routed per request already).
   */
  interceptsChanged(): void {
    if (this.deps.table.size === 0) return;
    for (const c of this.splicedH2) c.drain();
    this.splicedH2.clear();
  }

  private onConnection(sock: net.Socket): void {
    this.conns.add(sock);
    sock.on('close', () => this.conns.delete(sock));
    sock.on('error', (err) => log.debug('caller connection error', { err: errorMessage(err) }));
    // Unless the whole port goes to a laptop, the connection will need the app's: it opens while
    // the caller's first bytes are on their way, not after them.
    const app = this.deps.table.globalDivert() ? undefined : new EarlyApp(this.deps.app.connect());
    sniffProtocol(sock, this.sniffTimeoutMs)
      .then((s) => this.dispatch(sock, s, app))
      .catch((err: unknown) => {
        log.error('connection dispatch failed', { err: errorMessage(err), stack: (err as Error).stack });
        app?.drop();
        reset(sock);
      });
  }

  private async dispatch(sock: net.Socket, sniffed: Sniffed, early: EarlyApp | undefined): Promise<void> {
    if (sock.destroyed) return early?.drop();
    const global = this.deps.table.globalDivert();
    if (global) early?.drop();
    /** The app's connection for this caller's: the one opened at accept, or a new one. */
    const app = (): net.Socket => early?.take() ?? this.deps.app.connect();
    if (global) {
      if (sniffed.protocol === 'http1' && !sniffed.ended) {
        // kubelet's probes still reach the app: look at the first request's headers.
        const block = await readHeaderBlock(sock, sniffed.head, 2000);
        sniffed = { ...sniffed, head: block.head, ended: block.ended };
        if (!isKubeProbe(block.headers)) return this.divertConnection(sock, sniffed, global);
        // Replaced, the app is stopped: the agent answers for it, so the kubelet neither restarts it nor takes the pod out of the Service.
        if (global.spec.replace) return void sock.end(probeAnswer(global.owner));
      } else {
        return this.divertConnection(sock, sniffed, global);
      }
    }
    if (sniffed.protocol === 'http1' && !sniffed.ended) return this.h1.accept(sock, sniffed.head, early?.take());
    if (sniffed.protocol === 'h2' && !sniffed.ended) {
      if (this.deps.table.size > 0) return this.h2.accept(sock, sniffed.head, app());
      return this.spliceH2(sock, sniffed.head, app());
    }
    for (const m of this.deps.table.globalMirrors()) this.mirrorConnection(sock, sniffed, m);
    this.join(sock, sniffed, app());
  }

  /** Hand the caller's connection (and its sniffed head) to an upstream byte stream. */
  private join(sock: net.Socket, sniffed: Sniffed, upstream: Duplex): void {
    if (sniffed.ended) {
      // The caller already sent FIN: deliver its bytes and FIN, then carry the answer back.
      upstream.on('error', () => reset(sock));
      upstream.end(sniffed.head);
      upstream.pipe(sock);
      return;
    }
    if (sniffed.head.length) sock.unshift(sniffed.head);
    splice(sock, upstream);
    sock.resume();
  }

  /** No rule can match a stream of this connection: the caller and the app speak HTTP/2 to each other (see SplicedH2). */
  private spliceH2(sock: net.Socket, head: Buffer, app: net.Socket): void {
    sock.unshift(head);
    const c = new SplicedH2(sock, app, () => this.splicedH2.delete(c));
    this.splicedH2.add(c);
    sock.resume();
  }

  private divertConnection(sock: net.Socket, sniffed: Sniffed, i: ActiveIntercept): void {
    this.deps.link.countRequest(i.id);
    const source = `${sock.remoteAddress}:${sock.remotePort}`;
    log.debug('divert connection', { intercept: i.id, source, protocol: sniffed.protocol });
    this.deps.pools
      .get(i)
      .open(source)
      .then(
        (flow) => {
          if (sock.destroyed) {
            flow.destroy();
            return;
          }
          this.join(sock, sniffed, flow);
        },
        (err: Error) => {
          log.debug('divert failed', { intercept: i.id, err: errorMessage(err) });
          if (sniffed.protocol === 'http1' && !sock.destroyed) sock.end(rawErrorResponse(502, 'Bad Gateway', errorMessage(err)));
          else reset(sock);
        },
      )
      .catch(logBug('divert connection'));
  }

  /** A global mirror of a non-HTTP connection: a copy of the caller's bytes goes to the laptop. */
  private mirrorConnection(sock: net.Socket, sniffed: Sniffed, i: ActiveIntercept): void {
    this.deps.link.countRequest(i.id);
    const sink = new PassThrough({ highWaterMark: 64 * 1024 });
    // An unshifted head comes round again as 'data'; only an ended caller's head must be copied here.
    this.deps.mirrors.copy(i.id, sock, sink, sniffed.ended ? sniffed.head : undefined);
    if (sniffed.ended) sink.end();
    this.deps.pools
      .get(i)
      .open(`${sock.remoteAddress}:${sock.remotePort}`)
      .then(
        (flow) => {
          flow.on('error', () => undefined);
          flow.resume();
          if (sink.destroyed) flow.destroy();
          else sink.pipe(flow);
          sink.on('close', () => {
            if (!sink.readableEnded) flow.destroy();
          });
        },
        () => sink.destroy(),
      )
      .catch(logBug('mirror connection'));
  }
}

/**
 * The app's connection opened when a caller's was accepted, before anyone
 * knows whether it is needed. Its errors are nobody's until it is taken; one
 * that failed or closed by then is not handed on (a new connection reports
 * the failure where it is used).
 */
class EarlyApp {
  private sock?: net.Socket;

  constructor(sock: net.Socket) {
    sock.on('error', ignore);
    this.sock = sock;
  }

  take(): net.Socket | undefined {
    const s = this.sock;
    this.sock = undefined;
    if (!s) return undefined;
    s.removeListener('error', ignore);
    if (!s.destroyed && !s.readableEnded) return s;
    s.destroy();
    return undefined;
  }

  /** Not needed after all (the connection is diverted or gone). */
  drop(): void {
    this.sock?.destroy();
    this.sock = undefined;
  }
}

const ignore = (): void => undefined;

/** The answer to a kubelet probe while the app is replaced. */
function probeAnswer(owner: string): string {
  const body = `replaced by rdbg (${owner})\n`;
  return `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}
