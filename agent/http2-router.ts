import * as http2 from 'node:http2';
import type { Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { DivertError, logBug } from './errors';
import { appFailure } from './http1-proxy';
import type { ActiveIntercept } from './intercept-table';
import { routeRequest } from './route';
import type { RouterDeps } from './router-deps';
import { H2_SETTINGS, widenSession } from './upstreams';

const log = logger('agent.http2');

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants;
const END_STREAM = http2.constants.NGHTTP2_FLAG_END_STREAM;

/** Connection-specific headers that HTTP/2 forbids or that belong to one hop. */
const DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host']);

function forwardHeaders(h: http2.IncomingHttpHeaders): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || DROP.has(k)) continue;
    if (k === 'te' && v !== 'trailers') continue;
    out[k] = v;
  }
  return out;
}

function isGrpc(h: http2.IncomingHttpHeaders): boolean {
  const ct = h['content-type'];
  return typeof ct === 'string' && ct.startsWith('application/grpc');
}

/** grpc-message is percent-encoded (gRPC over HTTP/2 spec). */
function grpcMessage(text: string): string {
  return Buffer.from(text, 'utf8')
    .toString('latin1')
    .replace(/[^\x20-\x24\x26-\x7e]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'));
}

/**
 * The HTTP/2 (h2c, gRPC) side of the agent: every stream is routed on its
 * own. Streams for the app go over one app session per caller connection,
 * streams for a laptop over one session per intercept. Trailers are
 * forwarded both ways; trailers-only responses stay trailers-only.
 */
export class Http2Router {
  readonly server: http2.Http2Server;
  private readonly appSessions = new WeakMap<http2.ServerHttp2Session, http2.ClientHttp2Session>();

  constructor(private readonly deps: RouterDeps) {
    this.server = http2.createServer({ settings: H2_SETTINGS, maxSessionMemory: 64 });
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      session.on('error', (err) => log.debug('caller session error', { err: errorMessage(err) }));
      widenSession(session);
      session.on('close', () => {
        const app = this.appSessions.get(session);
        if (app && !app.destroyed) app.close();
      });
    });
    this.server.on('sessionError', (err) => log.debug('caller session failed', { err: errorMessage(err) }));
    this.server.on('stream', (stream, headers, flags) => {
      try {
        this.onStream(stream, headers, flags);
      } catch (err) {
        log.error('stream handling failed', { err: errorMessage(err), stack: (err as Error).stack });
        if (!stream.destroyed) stream.close(NGHTTP2_INTERNAL_ERROR);
      }
    });
  }

  /** Take a connection whose first bytes (`head`) were read to sniff the protocol. */
  accept(socket: Socket, head: Buffer): void {
    if (head.length) socket.unshift(head);
    // Left paused: the session reads what is buffered with socket.read(), then consumes the handle.
    this.server.emit('connection', socket);
  }

  close(): void {
    this.server.close();
  }

  private appSession(caller: http2.ServerHttp2Session): http2.ClientHttp2Session {
    let s = this.appSessions.get(caller);
    if (s && !s.closed && !s.destroyed) return s;
    s = this.deps.app.h2();
    s.on('error', (err) => log.debug('app session error', { err: errorMessage(err) }));
    this.appSessions.set(caller, s);
    return s;
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number): void {
    stream.on('error', (err) => log.debug('caller stream error', { err: errorMessage(err) }));
    const route = routeRequest(this.deps.table, headers, headers[':path'] ?? '');
    const endStream = (flags & END_STREAM) !== 0;
    for (const m of route.mirrors) this.mirror(stream, headers, endStream, m);
    const d = route.divert;
    if (d) {
      this.deps.link.countRequest(d.id);
      this.deps.pools
        .get(d)
        .h2()
        .then(
          (session) => this.proxy(stream, headers, endStream, session, (err) => divertText(d, err)),
          (err: Error) => this.fail(stream, headers, divertText(d, err)),
        )
        .catch(logBug('h2 divert'));
      return;
    }
    const app = this.deps.app;
    const caller = stream.session as http2.ServerHttp2Session;
    const fresh = (): http2.ClientHttp2Session => {
      this.appSessions.delete(caller);
      return this.appSession(caller);
    };
    this.proxy(stream, headers, endStream, this.appSession(caller), (err) => appFailure(app.address, err), fresh);
  }

  private proxy(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    endStream: boolean,
    session: http2.ClientHttp2Session,
    failure: (err: Error) => string,
    retry?: () => http2.ClientHttp2Session,
  ): void {
    if (stream.destroyed || stream.closed) return;
    let up: http2.ClientHttp2Stream;
    try {
      up = session.request(forwardHeaders(headers), { endStream, waitForTrailers: !endStream });
    } catch (err) {
      // A session that is going away (GOAWAY) refuses new streams: one fresh session, once.
      if (retry) return this.proxy(stream, headers, endStream, retry(), failure);
      this.fail(stream, headers, failure(err as Error));
      return;
    }
    let reqTrailers: http2.IncomingHttpHeaders | undefined;
    let resTrailers: http2.IncomingHttpHeaders | undefined;
    // node throws from respond/sendTrailers on what it will not send: that costs this stream only.
    const safe =
      <A extends unknown[]>(fn: (...a: A) => void) =>
      (...a: A): void => {
        try {
          fn(...a);
        } catch (err) {
          log.warn('cannot pass on a stream', { path: headers[':path'], err: errorMessage(err) });
          if (!stream.destroyed) stream.close(NGHTTP2_INTERNAL_ERROR);
          if (!up.destroyed) up.close(NGHTTP2_CANCEL);
        }
      };

    up.on('error', (err) => {
      if (!stream.headersSent) this.fail(stream, headers, failure(err));
    });
    up.on(
      'headers',
      safe((h: http2.IncomingHttpHeaders) => {
        // 1xx informational responses (100 Continue, 103 Early Hints).
        if (!stream.headersSent && !stream.destroyed) stream.additionalHeaders(h);
      }),
    );
    up.on(
      'response',
      safe((h: http2.IncomingHttpHeaders, flags: number) => {
        if (stream.destroyed || stream.closed) return;
        if (flags & END_STREAM) {
          // Trailers-only (a gRPC error without a message): one HEADERS frame with END_STREAM.
          stream.respond(forwardHeaders(h), { endStream: true });
          return;
        }
        stream.respond(forwardHeaders(h), { waitForTrailers: true });
        up.pipe(stream);
      }),
    );
    up.on('trailers', (t) => {
      resTrailers = t;
    });
    up.on(
      'wantTrailers',
      safe(() => up.sendTrailers(reqTrailers ?? {})),
    );
    stream.on(
      'wantTrailers',
      safe(() => stream.sendTrailers(resTrailers ?? {})),
    );
    up.on(
      'close',
      safe(() => {
        // The upstream reset the stream: pass the code on.
        if (stream.destroyed || stream.closed) return;
        const code = up.rstCode ?? NGHTTP2_NO_ERROR;
        if (code !== NGHTTP2_NO_ERROR && stream.headersSent) stream.close(code);
        else if (code !== NGHTTP2_NO_ERROR) this.fail(stream, headers, failure(new Error(`the stream was reset (code ${code})`)));
      }),
    );
    stream.on('close', () => {
      if (!up.closed && !up.destroyed) up.close(stream.rstCode || NGHTTP2_CANCEL);
    });
    if (!endStream) {
      stream.on('trailers', (t) => {
        reqTrailers = t;
      });
      stream.pipe(up);
    }
  }

  /** Answer a stream that could not be forwarded: 502, or grpc-status UNAVAILABLE for gRPC. */
  private fail(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, message: string): void {
    if (stream.destroyed || stream.closed) return;
    log.debug('stream failed', { path: headers[':path'], err: message });
    if (stream.headersSent) {
      stream.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    stream.resume();
    try {
      if (isGrpc(headers)) {
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': grpcMessage(message) },
          { endStream: true },
        );
        return;
      }
      stream.respond({ ':status': 502, 'content-type': 'text/plain; charset=utf-8' });
      stream.end(message + '\n');
    } catch {
      if (!stream.destroyed) stream.close(NGHTTP2_INTERNAL_ERROR);
    }
  }

  /** A copy of the stream to a mirror intercept, streamed (see MirrorQueue); never slows the caller, its answer is dropped. */
  private mirror(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, endStream: boolean, i: ActiveIntercept): void {
    this.deps.link.countRequest(i.id);
    const finish = this.deps.mirrors.admit(i.id);
    if (!finish) return;
    // Holds what arrives while the laptop's session opens, and whatever the laptop has not taken yet.
    const sink = new PassThrough({ highWaterMark: 64 * 1024 });
    if (!endStream) this.deps.mirrors.copy(i.id, stream, sink);
    this.deps.pools
      .get(i)
      .h2()
      .then((session) => {
        if (sink.destroyed) return finish();
        const m = session.request(forwardHeaders(headers), { endStream });
        m.on('close', finish);
        m.on('error', () => undefined);
        m.resume();
        m.setTimeout(30_000, () => m.close(NGHTTP2_CANCEL));
        if (!endStream) sink.pipe(m);
        sink.on('error', () => m.close(NGHTTP2_CANCEL));
        sink.on('close', () => {
          if (!sink.readableEnded && !m.closed) m.close(NGHTTP2_CANCEL);
        });
      })
      .catch((err: Error) => {
        log.debug('mirror failed', { intercept: i.id, err: errorMessage(err) });
        sink.destroy();
        finish();
      })
      .catch(logBug('h2 mirror'));
  }
}

function divertText(i: ActiveIntercept, err: Error): string {
  return err instanceof DivertError ? err.message : `rdbg intercept of ${i.workload} by ${i.owner} could not reach ${i.target}: ${errorMessage(err)}`;
}
