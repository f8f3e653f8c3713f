import * as http from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { DivertError, logBug } from './errors';
import { forwardRaw, rawErrorResponse, rawResponseHead, trailerPairs, withoutHeaders } from './http-headers';
import type { ActiveIntercept } from './intercept-table';
import { routeRequest } from './route';
import { reset, splice } from '../src/tunnel/splice';
import type { RouterDeps } from './router-deps';

const log = logger('agent.http1');

const MIRROR_TIMEOUT_MS = 30_000;
/** A refused upgrade's body is passed on close-delimited. */
const CLOSE_DELIMITED = new Set(['transfer-encoding', 'content-length']);

interface Target {
  agent: http.Agent;
  host: string;
  port: number;
  /** The 502 text for a failure to reach this target. */
  failure(err: Error): string;
}

/** Why the app could not be reached, for the 502 a caller reads. */
export function appFailure(address: string, err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return `rdbg traffic agent could not reach the app at ${address}: ${errorMessage(err)}${code && !errorMessage(err).includes(code) ? ` (${code})` : ''}`;
}

function bodyless(req: http.IncomingMessage): boolean {
  const cl = req.headers['content-length'];
  return (cl === undefined || cl === '0') && req.headers['transfer-encoding'] === undefined;
}

/**
 * The HTTP/1.x side of the agent: every request is routed on its own (app,
 * or the laptop of a matching intercept) and proxied on keep-alive pools, so
 * keep-alive and pipelining behave as without the agent. Upgrades (WebSocket)
 * and CONNECT take the connection over and are spliced raw.
 */
export class Http1Router {
  readonly server: http.Server;

  constructor(private readonly deps: RouterDeps) {
    this.server = http.createServer({ maxHeaderSize: 64 * 1024 });
    // A caller that half-closes after its last request still gets its answers (node's default aborts them).
    (this.server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    // The app, not the agent, decides how long requests and idle connections may take.
    this.server.requestTimeout = 0;
    this.server.headersTimeout = 60_000;
    this.server.keepAliveTimeout = 65_000;
    this.server.on('request', (req, res) => this.guard(() => this.onRequest(req, res), req.socket));
    this.server.on('upgrade', (req, socket: Socket, head: Buffer) => this.guard(() => this.takeover(req, socket, head), socket));
    this.server.on('connect', (req, socket: Socket, head: Buffer) => this.guard(() => this.takeover(req, socket, head), socket));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket));
  }

  /** Take a connection whose first bytes (`head`) were read to sniff the protocol. */
  accept(socket: Socket, head: Buffer): void {
    if (head.length) socket.unshift(head);
    socket.resume();
    this.server.emit('connection', socket);
  }

  close(): void {
    this.server.closeAllConnections();
    this.server.close(() => undefined);
  }

  /** A bug here must cost one connection, never the agent. */
  private guard(fn: () => void, socket: Duplex): void {
    try {
      fn();
    } catch (err) {
      log.error('request handling failed', { err: errorMessage(err), stack: (err as Error).stack });
      reset(socket);
    }
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    log.debug('malformed request or broken connection', { code: err.code, err: errorMessage(err) });
    const busy = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent;
    if (err.code !== 'ECONNRESET' && socket.writable && !busy) {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      const reason = status === 431 ? 'Request Header Fields Too Large' : 'Bad Request';
      socket.end(rawErrorResponse(status, reason, `rdbg traffic agent: malformed HTTP/1 request (${err.code ?? errorMessage(err)})`));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    socket.destroy();
  }

  private source(req: http.IncomingMessage): string {
    return `${req.socket.remoteAddress}:${req.socket.remotePort}`;
  }

  private appTarget(): Target {
    const app = this.deps.app;
    return { agent: app.agent, host: app.host, port: app.port, failure: (err) => appFailure(app.address, err) };
  }

  private divertTarget(i: ActiveIntercept): Target {
    const pool = this.deps.pools.get(i);
    return {
      agent: pool.agent,
      host: i.spec.local_host || '127.0.0.1',
      port: i.spec.local_port,
      failure: (err) => (err instanceof DivertError ? err.message : `rdbg intercept of ${i.workload} by ${i.owner} failed: ${errorMessage(err)}`),
    };
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const route = routeRequest(this.deps.table, req.headers, req.url ?? '/');
    for (const m of route.mirrors) this.mirror(req, res, m);
    if (route.divert) {
      this.deps.link.countRequest(route.divert.id);
      log.debug('divert', { intercept: route.divert.id, method: req.method, url: req.url });
      this.forward(req, res, this.divertTarget(route.divert), 0);
    } else {
      this.forward(req, res, this.appTarget(), 0);
    }
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse, target: Target, attempt: number): void {
    let up: http.ClientRequest;
    try {
      up = this.request(req, target);
    } catch (err) {
      // Something node's client refuses to send (a header it finds invalid): 400, this request only.
      const body = `rdbg traffic agent cannot forward this request: ${errorMessage(err)}\n`;
      res.writeHead(400, 'Bad Request', ['Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(Buffer.byteLength(body))]);
      res.end(body);
      req.resume();
      return;
    }
    this.pipeRequest(req, res, target, attempt, up);
  }

  private request(req: http.IncomingMessage, target: Target): http.ClientRequest {
    const headers = forwardRaw(req.rawHeaders);
    // We speak HTTP/1.1 upstream, which requires Host; an HTTP/1.0 caller may have sent none.
    if (req.headers.host === undefined) headers.push('Host', `${target.host}:${target.port}`);
    return http.request({
      agent: target.agent,
      host: target.host,
      port: target.port,
      method: req.method,
      path: req.url,
      headers,
      setHost: false,
      rdbgSource: this.source(req),
    } as http.RequestOptions);
  }

  private pipeRequest(req: http.IncomingMessage, res: http.ServerResponse, target: Target, attempt: number, up: http.ClientRequest): void {
    let responded = false;

    up.on('response', (upRes) => {
      responded = true;
      upRes.on('error', () => res.destroy());
      upRes.on('aborted', () => res.destroy());
      try {
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, forwardRaw(upRes.rawHeaders));
      } catch (err) {
        // An answer node will not repeat (a bad status or header): the caller's connection ends.
        log.warn('cannot pass on a response', { url: req.url, err: errorMessage(err) });
        upRes.destroy();
        res.destroy();
        return;
      }
      upRes.pipe(res, { end: false });
      upRes.on('end', () => {
        try {
          if (upRes.rawTrailers.length) res.addTrailers(trailerPairs(upRes.rawTrailers));
        } catch (err) {
          log.debug('dropped bad trailers', { err: errorMessage(err) });
        }
        res.end();
      });
    });
    res.on('error', () => undefined);

    up.on('error', (err: NodeJS.ErrnoException) => {
      if (res.destroyed) return;
      if (!responded && attempt === 0 && up.reusedSocket && bodyless(req) && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
        // A keep-alive connection that the other side closed just as we reused it: try once more.
        this.forward(req, res, target, 1);
        return;
      }
      if (responded || res.headersSent) {
        res.destroy();
        return;
      }
      const msg = target.failure(err);
      log.debug('upstream failed', { url: req.url, err: msg });
      const body = msg + '\n';
      res.writeHead(502, 'Bad Gateway', ['Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(Buffer.byteLength(body))]);
      res.end(body);
      req.resume();
    });

    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });

    if (attempt > 0 || (bodyless(req) && req.method !== 'CONNECT')) {
      // Nothing to stream: send the head now rather than a turn later on 'end'.
      up.end();
      req.resume();
      return;
    }
    req.pipe(up, { end: false });
    req.on('end', () => {
      if (req.rawTrailers.length) up.addTrailers(trailerPairs(req.rawTrailers));
      up.end();
    });
  }

  /** A copy of the request to a mirror intercept, its body streamed (see MirrorQueue); its answer is read and dropped. */
  private mirror(req: http.IncomingMessage, res: http.ServerResponse, i: ActiveIntercept): void {
    this.deps.link.countRequest(i.id);
    const finish = this.deps.mirrors.admit(i.id);
    if (!finish) return;
    let m: http.ClientRequest;
    try {
      m = this.request(req, this.divertTarget(i));
    } catch {
      finish();
      return;
    }
    m.setTimeout(MIRROR_TIMEOUT_MS, () => m.destroy());
    m.on('error', (err) => {
      log.debug('mirror failed', { intercept: i.id, err: errorMessage(err) });
      finish();
    });
    m.on('response', (r) => {
      r.resume();
      r.on('end', finish);
      r.on('error', finish);
    });
    m.on('close', finish);
    if (bodyless(req)) m.end();
    else this.deps.mirrors.copy(i.id, req, m);
    res.on('close', () => {
      if (!req.complete) m.destroy();
    });
  }

  /** Upgrade (WebSocket, h2c) or CONNECT: routed like a request, then the two connections are spliced. */
  private takeover(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', () => undefined);
    const isConnect = req.method === 'CONNECT';
    const route = routeRequest(this.deps.table, req.headers, req.url ?? '/');
    const d = route.divert;
    if (d) this.deps.link.countRequest(d.id);
    const target = d ? this.divertTarget(d) : this.appTarget();
    const source = this.source(req);
    const up = http.request({
      host: target.host,
      port: target.port,
      method: req.method,
      path: req.url,
      headers: forwardRaw(req.rawHeaders, true),
      setHost: false,
      createConnection: (_opts: unknown, cb: (err: Error | null, s?: Duplex) => void) => {
        if (d)
          this.deps.pools
            .get(d)
            .open(source)
            .then((flow) => cb(null, flow), (err: Error) => cb(err))
            .catch(logBug('upgrade divert'));
        else cb(null, this.deps.app.connect());
        return undefined;
      },
    } as http.RequestOptions);

    const joined = (upRes: http.IncomingMessage, upSocket: Duplex, upHead: Buffer): void => {
      const ok = isConnect ? (upRes.statusCode ?? 0) >= 200 && (upRes.statusCode ?? 0) < 300 : true;
      socket.removeListener('close', onClose);
      upSocket.on('error', () => undefined);
      if (socket.destroyed) {
        reset(upSocket);
        return;
      }
      socket.write(rawResponseHead(upRes.statusCode ?? 502, upRes.statusMessage ?? '', upRes.rawHeaders));
      if (!ok) {
        socket.end();
        reset(upSocket);
        return;
      }
      if (upHead.length) socket.write(upHead);
      if (head.length) upSocket.write(head);
      splice(socket, upSocket);
    };
    up.on('upgrade', joined);
    up.on('connect', joined);
    up.on('response', (upRes) => {
      // The upgrade was refused: pass the answer on and close, as the app would.
      socket.removeListener('close', onClose);
      const raw = withoutHeaders(forwardRaw(upRes.rawHeaders), CLOSE_DELIMITED);
      socket.write(rawResponseHead(upRes.statusCode ?? 502, upRes.statusMessage ?? '', [...raw, 'Connection', 'close']));
      upRes.pipe(socket);
      upRes.on('error', () => reset(socket));
    });
    up.on('error', (err) => {
      if (socket.destroyed) return;
      socket.end(rawErrorResponse(502, 'Bad Gateway', target.failure(err)));
    });
    const onClose = (): void => {
      up.destroy();
    };
    socket.on('close', onClose);
    up.end();
  }
}
