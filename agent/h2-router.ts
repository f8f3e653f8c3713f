import * as http2 from 'node:http2';
import type { Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { reset } from '../src/tunnel/splice';
import { DivertError, guard, logBug } from './errors';
import * as h2 from './h2-frames';
import { E, F, T } from './h2-frames';
import { encodeHeaders, HpackDecoder, HpackError, type HeaderList } from './hpack';
import { appFailure } from './http1-proxy';
import type { ActiveIntercept } from './intercept-table';
import { routeRequest } from './route';
import type { RouterDeps } from './router-deps';

const log = logger('agent.http2');

/** Connection window the agent gives the app beyond the initial 64 KiB: what it may hold for a caller that reads slowly. */
const APP_WINDOW_EXTRA = 256 * 1024;
/** The app's window is topped up once this much was passed on: a WINDOW_UPDATE per chunk would double the agent's writes. */
const APP_GRANT_BATCH = 128 * 1024;
/** The largest request header block the agent reads (HEADERS and its CONTINUATIONs): past it a caller is flooding. */
const MAX_HEADER_BLOCK = 256 * 1024;
/** Connection-specific headers HTTP/2 forbids. */
const DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']);
/** And in a request node sends: :authority stands for host. */
const DROP_REQUEST = new Set([...DROP, 'host']);

class ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

function headerObject(list: HeaderList): Record<string, string | string[]> {
  const o: Record<string, string | string[]> = {};
  for (const [k, v] of list) {
    const prev = o[k];
    if (prev === undefined) o[k] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else o[k] = k === 'cookie' ? `${prev}; ${v}` : [prev, v];
  }
  return o;
}

/** node's header object (a response, trailers) as an HPACK list: pseudo-headers first, values as latin1 of their UTF-8. */
function headerList(h: http2.IncomingHttpHeaders): HeaderList {
  const pseudo: HeaderList = [];
  const rest: HeaderList = [];
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || DROP.has(k)) continue;
    for (const one of Array.isArray(v) ? v : [String(v)]) (k.startsWith(':') ? pseudo : rest).push([k, Buffer.from(one, 'utf8').toString('latin1')]);
  }
  return [...pseudo, ...rest];
}

/** The request for node's client: header values back from latin1 to UTF-8, hop-by-hop ones left out. */
function requestHeaders(list: HeaderList): http2.OutgoingHttpHeaders {
  const o: http2.OutgoingHttpHeaders = {};
  for (const [k, v] of list) {
    if (DROP_REQUEST.has(k) || (k === 'te' && v !== 'trailers')) continue;
    const val = Buffer.from(v, 'latin1').toString('utf8');
    const prev = o[k];
    if (prev === undefined) o[k] = val;
    else o[k] = Array.isArray(prev) ? [...prev, val] : [String(prev), val];
  }
  return o;
}

function isGrpc(h: Record<string, string | string[]>): boolean {
  const ct = h['content-type'];
  return typeof ct === 'string' && ct.startsWith('application/grpc');
}

/** grpc-message is percent-encoded (gRPC over HTTP/2). */
function grpcMessage(text: string): string {
  return Buffer.from(text, 'utf8')
    .toString('latin1')
    .replace(/[^\x20-\x24\x26-\x7e]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'));
}

function divertText(i: ActiveIntercept, err: Error): string {
  return err instanceof DivertError ? err.message : `rdbg intercept of ${i.workload} by ${i.owner} could not reach ${i.target}: ${errorMessage(err)}`;
}

/**
 * A stream diverted to a laptop: the caller's frames for it become a request
 * on the laptop's HTTP/2 session, its response comes back as frames the
 * agent writes to the caller, within the caller's flow-control windows.
 */
class Diverted {
  up?: http2.ClientHttp2Stream;
  /** The caller's send window for this stream's response (the agent is its sender). */
  window: number;
  /** Response frames waiting for window: data, then maybe trailers. */
  private out: Buffer[] = [];
  private trailers?: HeaderList;
  private endAfterOut = false;
  private responded = false;
  private closed = false;
  /** Request bytes that came while the laptop's session was opening. */
  private early: { data: Buffer; len: number }[] = [];
  private earlyEnd = false;
  private reqTrailers?: http2.IncomingHttpHeaders;

  constructor(
    private readonly conn: H2Conn,
    readonly id: number,
    private readonly headers: HeaderList,
    private readonly endStream: boolean,
    readonly intercept: ActiveIntercept,
  ) {
    this.window = conn.callerStreamWindow;
  }

  open(session: Promise<http2.ClientHttp2Session>): void {
    session.then(
      this.conn.guarded((s: http2.ClientHttp2Session) => {
        if (this.closed) return;
        let up: http2.ClientHttp2Stream;
        try {
          up = s.request(requestHeaders(this.headers), { endStream: this.endStream, waitForTrailers: !this.endStream });
        } catch (err) {
          return this.fail(err as Error);
        }
        this.up = up;
        const g = this.conn.guarded;
        up.on('error', () => undefined);
        up.on('response', g((h: http2.IncomingHttpHeaders, flags: number) => this.onResponse(h, (flags & F.END_STREAM) !== 0)));
        up.on('data', g((d: Buffer) => this.onData(d)));
        up.on('trailers', g((t: http2.IncomingHttpHeaders) => (this.trailers = headerList(t))));
        up.on('end', g(() => this.onEnd()));
        up.on('close', g(() => this.onUpClose()));
        up.on('wantTrailers', () => {
          try {
            up.sendTrailers(this.reqTrailers ?? {});
          } catch {
            up.close(http2.constants.NGHTTP2_CANCEL);
          }
        });
        for (const e of this.early.splice(0)) this.write(e.data, e.len);
        if (this.earlyEnd) up.end();
      }),
      this.conn.guarded((err: Error) => this.fail(err)),
    );
  }

  /** Request DATA from the caller; `len` is the whole frame's flow-controlled size. */
  data(payload: Buffer, len: number, end: boolean): void {
    if (this.closed) return this.conn.credit(this.id, len, false);
    if (!this.up) {
      this.early.push({ data: payload, len });
      if (end) this.earlyEnd = true;
      return;
    }
    this.write(payload, len);
    if (end) this.up.end();
  }

  private write(payload: Buffer, len: number): void {
    const up = this.up!;
    if (up.destroyed) return this.conn.credit(this.id, len, false);
    // The caller gets its window back once the laptop's stream took the bytes.
    up.write(payload, () => this.conn.credit(this.id, len, !this.closed));
  }

  requestTrailers(list: HeaderList): void {
    this.reqTrailers = requestHeaders(list) as http2.IncomingHttpHeaders;
    if (this.up) this.up.end();
    else this.earlyEnd = true;
  }

  /** The caller reset the stream. */
  reset(code: number): void {
    this.closed = true;
    this.conn.forget(this.id);
    if (this.up && !this.up.closed) this.up.close(code || http2.constants.NGHTTP2_CANCEL);
  }

  private onResponse(h: http2.IncomingHttpHeaders, end: boolean): void {
    this.responded = true;
    this.conn.sendHeaders(this.id, headerList(h), end);
    if (end) this.finish();
    else this.flush();
  }

  private onData(d: Buffer): void {
    this.out.push(d);
    this.flush();
  }

  private onEnd(): void {
    this.endAfterOut = true;
    this.flush();
  }

  /** Send what the caller's windows allow. */
  flush(): void {
    // node may emit a stream's first 'data' before its 'response'.
    if (!this.responded) return;
    while (this.out.length && !this.closed) {
      const d = this.out[0];
      const n = this.conn.take(Math.min(d.length, this.window));
      if (n === 0) break;
      this.window -= n;
      this.conn.sendData(this.id, n === d.length ? d : d.subarray(0, n), false);
      if (n === d.length) this.out.shift();
      else this.out[0] = d.subarray(n);
    }
    if (this.out.length) {
      this.up?.pause();
      return;
    }
    this.up?.resume();
    if (this.endAfterOut && !this.closed && this.responded) {
      if (this.trailers) this.conn.sendHeaders(this.id, this.trailers, true);
      else this.conn.sendData(this.id, Buffer.alloc(0), true);
      this.finish();
    }
  }

  private onUpClose(): void {
    if (this.closed) return;
    const code = this.up?.rstCode ?? http2.constants.NGHTTP2_NO_ERROR;
    if (code === http2.constants.NGHTTP2_NO_ERROR && this.endAfterOut) return; // flush() finishes it
    if (!this.responded) return this.fail(new Error(`the stream was reset (code ${code})`));
    this.closed = true;
    this.conn.forget(this.id);
    this.conn.toCaller([h2.rstStream(this.id, code || E.CANCEL)]);
  }

  private finish(): void {
    this.closed = true;
    this.conn.forget(this.id);
    if (this.up && !this.up.closed && this.endAfterOut) this.up.close();
  }

  /** The laptop could not be reached: 502, or gRPC status UNAVAILABLE. */
  fail(err: Error): void {
    if (this.closed) return;
    const text = divertText(this.intercept, err);
    log.debug('diverted stream failed', { stream: this.id, err: text });
    if (this.responded) {
      this.closed = true;
      this.conn.forget(this.id);
      return this.conn.toCaller([h2.rstStream(this.id, E.INTERNAL_ERROR)]);
    }
    const req = headerObject(this.headers);
    this.up?.close(http2.constants.NGHTTP2_CANCEL);
    if (isGrpc(req)) {
      this.conn.sendHeaders(this.id, [[':status', '200'], ['content-type', 'application/grpc'], ['grpc-status', '14'], ['grpc-message', grpcMessage(text)]], true);
      return;
    }
    const body = Buffer.from(text + '\n', 'utf8');
    this.conn.sendHeaders(this.id, [[':status', '502'], ['content-type', 'text/plain; charset=utf-8'], ['content-length', String(body.length)]], false);
    // The body goes out within the caller's windows, as any other.
    this.closed = false;
    this.up = undefined;
    this.responded = true;
    this.out.push(body);
    this.endAfterOut = true;
    this.flush();
  }
}

/**
 * One caller's h2c connection while an intercept applies to the port. The
 * caller's frames go to one connection to the app as they are, except the
 * streams a rule diverts: their HEADERS, DATA, WINDOW_UPDATE and RST_STREAM
 * are the agent's to handle, and their responses are frames the agent adds
 * between the app's. What this takes:
 *   - HPACK: every request header block is decoded (to route it and to
 *     follow the caller's compression context). Until a stream is diverted
 *     the app gets the blocks as they are; after, re-encoded without indexing,
 *     since the app's context no longer matches the caller's.
 *   - Flow control: the connection-level window towards the caller is the
 *     agent's (app and laptop responses share it); the agent grants the app
 *     what it passed on. Stream windows of the app's streams stay the app's.
 *   - The agent's own frames go in only between whole frames of the app, and
 *     never inside one of its header blocks.
 */
class H2Conn {
  private cbuf: Buffer;
  private abuf: Buffer = Buffer.alloc(0);
  private prefaceLeft = h2.PREFACE.length;
  private readonly decoder = new HpackDecoder();
  /** A caller header block being read: its stream, END_STREAM, fragments and the raw frames. */
  private block?: { stream: number; end: boolean; fragments: Buffer[]; frames: Buffer[]; size: number };
  private rewriting = false;
  private widened = false;
  private readonly diverted = new Map<number, Diverted>();
  private readonly mirrored = new Map<number, PassThrough[]>();
  private lastStream = 0;
  // The caller's side of flow control, and its frame size.
  private callerWindow = h2.DEFAULT_WINDOW;
  callerStreamWindow = h2.DEFAULT_WINDOW;
  private callerMaxFrame = h2.DEFAULT_MAX_FRAME;
  private appMaxFrame = h2.DEFAULT_MAX_FRAME;
  /** App frames held back for the caller's connection window, in order. */
  private held: Buffer[] = [];
  private appInBlock = false;
  /** The app's SETTINGS, the first frame a server must send, has gone to the caller. */
  private appStarted = false;
  /** Agent frames waiting for the end of an app header block. */
  private pendingOut: Buffer[] = [];
  private toApp: Buffer[] = [];
  /** App DATA passed on to the caller and not yet granted back to the app. */
  private owedApp = 0;
  private done = false;
  private appEnded = false;

  constructor(
    private readonly deps: RouterDeps,
    private readonly caller: Socket,
    private readonly app: Socket,
    head: Buffer,
  ) {
    this.cbuf = head;
    caller.on('data', this.guarded((d: Buffer) => this.fromCaller(d)));
    caller.on('end', () => this.app.end());
    caller.on('close', () => this.close());
    caller.on('drain', () => this.app.resume());
    app.on('data', this.guarded((d: Buffer) => this.fromApp(d)));
    app.on('end', () => this.onAppEnd());
    app.on('close', () => this.onAppEnd());
    app.on('error', (err) => log.debug('app connection error', { err: errorMessage(err) }));
    app.on('drain', () => this.caller.resume());
    app.once('error', (err: Error) => {
      if (this.lastStream === 0 && !this.done) this.fail(new ConnectionError(E.INTERNAL_ERROR, appFailure(this.deps.app.address, err)));
    });
  }

  start(): void {
    this.guarded(() => this.fromCaller(Buffer.alloc(0)))();
  }

  /** `fn` as a handler whose failure (a bug) costs this connection only, never the agent. */
  readonly guarded = guard('h2 connection handling', () => {
    reset(this.caller);
    this.close();
  });

  // -- caller -> app ---------------------------------------------------------

  private fromCaller(d: Buffer): void {
    if (this.done) return;
    this.cbuf = this.cbuf.length ? (d.length ? Buffer.concat([this.cbuf, d]) : this.cbuf) : d;
    try {
      if (this.prefaceLeft) {
        if (this.cbuf.length < this.prefaceLeft) return;
        if (!this.cbuf.subarray(0, h2.PREFACE.length).equals(h2.PREFACE)) throw new ConnectionError(E.PROTOCOL_ERROR, 'bad preface');
        this.toApp.push(this.cbuf.subarray(0, h2.PREFACE.length));
        this.cbuf = this.cbuf.subarray(h2.PREFACE.length);
        this.prefaceLeft = 0;
      }
      let at = 0;
      while (this.cbuf.length - at >= h2.FRAME_HEADER) {
        const f = h2.readHead(this.cbuf, at);
        if (f.length > this.appMaxFrame && f.length > h2.DEFAULT_MAX_FRAME) throw new ConnectionError(E.FRAME_SIZE_ERROR, 'frame larger than SETTINGS_MAX_FRAME_SIZE');
        const end = at + h2.FRAME_HEADER + f.length;
        if (end > this.cbuf.length) break;
        this.callerFrame(f, this.cbuf.subarray(at, end), this.cbuf.subarray(at + h2.FRAME_HEADER, end));
        at = end;
      }
      this.cbuf = at === this.cbuf.length ? Buffer.alloc(0) : this.cbuf.subarray(at);
    } catch (err) {
      if (err instanceof ConnectionError || err instanceof HpackError) {
        this.fail(err instanceof HpackError ? new ConnectionError(E.COMPRESSION_ERROR, err.message) : err);
        return;
      }
      throw err;
    }
    this.flushToApp();
  }

  private flushToApp(): void {
    if (!this.toApp.length || this.done) return;
    const parts = this.toApp;
    this.toApp = [];
    const more = parts.length === 1 ? this.app.write(parts[0]) : this.app.write(Buffer.concat(parts));
    if (!more) this.caller.pause();
  }

  private callerFrame(f: h2.FrameHead, raw: Buffer, payload: Buffer): void {
    if (this.block && f.type !== T.CONTINUATION) throw new ConnectionError(E.PROTOCOL_ERROR, 'a frame inside a header block');
    switch (f.type) {
      case T.DATA: {
        const d = this.diverted.get(f.stream);
        const m = this.mirrored.get(f.stream);
        if (!d) {
          this.toApp.push(raw);
          if (m) this.mirrorData(f.stream, m, payload, f.flags);
          return;
        }
        const data = h2.dataOf(payload, f.flags);
        if (!data) throw new ConnectionError(E.PROTOCOL_ERROR, 'DATA padding longer than the frame');
        d.data(data, f.length, (f.flags & F.END_STREAM) !== 0);
        return;
      }
      case T.HEADERS: {
        if (f.stream === 0) throw new ConnectionError(E.PROTOCOL_ERROR, 'HEADERS on stream 0');
        const frag = h2.headersFragment(payload, f.flags);
        if (!frag) throw new ConnectionError(E.PROTOCOL_ERROR, 'HEADERS padding longer than the frame');
        this.block = { stream: f.stream, end: (f.flags & F.END_STREAM) !== 0, fragments: [frag], frames: [raw], size: frag.length };
        if (f.flags & F.END_HEADERS) this.headerBlock();
        return;
      }
      case T.CONTINUATION: {
        if (!this.block || this.block.stream !== f.stream) throw new ConnectionError(E.PROTOCOL_ERROR, 'CONTINUATION without its HEADERS');
        this.block.size += payload.length;
        if (this.block.size > MAX_HEADER_BLOCK) throw new ConnectionError(E.ENHANCE_YOUR_CALM, `a header block beyond ${MAX_HEADER_BLOCK} bytes`);
        this.block.fragments.push(payload);
        this.block.frames.push(raw);
        if (f.flags & F.END_HEADERS) this.headerBlock();
        return;
      }
      case T.RST_STREAM: {
        const d = this.diverted.get(f.stream);
        if (d) d.reset(payload.length === 4 ? payload.readUInt32BE(0) : E.CANCEL);
        else this.toApp.push(raw);
        this.mirrored.delete(f.stream);
        return;
      }
      case T.WINDOW_UPDATE: {
        if (payload.length !== 4) throw new ConnectionError(E.FRAME_SIZE_ERROR, 'WINDOW_UPDATE of the wrong size');
        const inc = payload.readUInt32BE(0) & 0x7fffffff;
        if (f.stream === 0) {
          if (inc === 0) throw new ConnectionError(E.PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
          this.callerWindow += inc;
          if (this.callerWindow > h2.MAX_WINDOW) throw new ConnectionError(E.FLOW_CONTROL_ERROR, 'connection window beyond 2^31-1');
          this.releaseHeld();
          for (const d of this.diverted.values()) d.flush();
          return;
        }
        const d = this.diverted.get(f.stream);
        if (!d) return void this.toApp.push(raw);
        if (inc === 0 || d.window + inc > h2.MAX_WINDOW) {
          d.reset(E.CANCEL);
          this.toCaller([h2.rstStream(f.stream, inc === 0 ? E.PROTOCOL_ERROR : E.FLOW_CONTROL_ERROR)]);
          return;
        }
        d.window += inc;
        d.flush();
        return;
      }
      case T.SETTINGS: {
        if (f.stream === 0 && !(f.flags & F.ACK) && payload.length % 6 === 0) {
          for (let i = 0; i < payload.length; i += 6) {
            const id = payload.readUInt16BE(i);
            const v = payload.readUInt32BE(i + 2);
            if (id === h2.SETTING.INITIAL_WINDOW_SIZE && v <= h2.MAX_WINDOW) {
              for (const d of this.diverted.values()) d.window += v - this.callerStreamWindow;
              this.callerStreamWindow = v;
            } else if (id === h2.SETTING.MAX_FRAME_SIZE && v >= h2.DEFAULT_MAX_FRAME && v < 2 ** 24) this.callerMaxFrame = v;
          }
        }
        this.toApp.push(raw);
        // The preface's SETTINGS must come first; then the app may send more than 64 KiB ahead.
        if (!this.widened) this.toApp.push(h2.windowUpdate(0, APP_WINDOW_EXTRA));
        this.widened = true;
        return;
      }
      case T.PRIORITY:
        if (!this.diverted.has(f.stream)) this.toApp.push(raw);
        return;
      default:
        // PING, GOAWAY, PUSH_PROMISE (an error the app will call), extensions: the app's to answer.
        this.toApp.push(raw);
    }
  }

  /** A whole header block from the caller: a new stream is routed, trailers follow their stream. */
  private headerBlock(): void {
    const b = this.block!;
    this.block = undefined;
    const block = b.fragments.length === 1 ? b.fragments[0] : Buffer.concat(b.fragments);
    const list = this.decoder.decode(block);
    const d = this.diverted.get(b.stream);
    if (d) {
      if (!b.end) throw new ConnectionError(E.PROTOCOL_ERROR, 'trailers without END_STREAM');
      if (list) d.requestTrailers(list);
      return;
    }
    const fresh = b.stream > this.lastStream && b.stream % 2 === 1;
    if (fresh) this.lastStream = b.stream;
    const headers = list ? headerObject(list) : undefined;
    if (fresh && headers) {
      const route = routeRequest(this.deps.table, headers, String(headers[':path'] ?? ''));
      for (const m of route.mirrors) this.mirror(b.stream, list!, b.end, m);
      if (route.divert) {
        this.rewriting = true;
        this.deps.link.countRequest(route.divert.id);
        const dv = new Diverted(this, b.stream, list!, b.end, route.divert);
        this.diverted.set(b.stream, dv);
        dv.open(this.deps.pools.get(route.divert).h2());
        return;
      }
    }
    if (!this.rewriting) {
      this.toApp.push(...b.frames);
      return;
    }
    if (!list) {
      // Too large to re-encode: the app would refuse it anyway.
      this.toCaller([h2.rstStream(b.stream, E.REFUSED_STREAM)]);
      return;
    }
    this.toApp.push(...h2.headerFrames(b.stream, encodeHeaders(list), b.end, this.appMaxFrame));
  }

  // -- app -> caller ---------------------------------------------------------

  private fromApp(d: Buffer): void {
    if (this.done) return;
    this.abuf = this.abuf.length ? Buffer.concat([this.abuf, d]) : d;
    const out: Buffer[] = [];
    let at = 0;
    let start = 0; // the first byte of a run of frames passed on as they are
    let granted = 0;
    const cut = (to: number): void => {
      if (to > start) out.push(this.abuf.subarray(start, to));
    };
    while (this.abuf.length - at >= h2.FRAME_HEADER) {
      const f = h2.readHead(this.abuf, at);
      const end = at + h2.FRAME_HEADER + f.length;
      if (end > this.abuf.length) break;
      if (this.held.length || (f.type === T.DATA && f.length > this.callerWindow)) {
        cut(at);
        this.held.push(Buffer.from(this.abuf.subarray(at, end)));
        start = end;
      } else {
        if (f.type === T.DATA) {
          this.callerWindow -= f.length;
          granted += f.length;
        } else this.appControl(f, this.abuf.subarray(at + h2.FRAME_HEADER, end));
        this.appStarted = true;
      }
      at = end;
    }
    cut(at);
    this.abuf = at === this.abuf.length ? Buffer.alloc(0) : Buffer.from(this.abuf.subarray(at));
    this.grantApp(granted);
    if (!this.appInBlock && this.pendingOut.length) out.push(...this.pendingOut.splice(0));
    this.writeCaller(out);
    if (this.held.length) this.app.pause();
    this.flushToApp();
  }

  /** What the agent must know of the app's frames: its settings, and whether a header block is open. */
  private appControl(f: h2.FrameHead, payload: Buffer): void {
    if (f.type === T.HEADERS || f.type === T.CONTINUATION || f.type === T.PUSH_PROMISE) this.appInBlock = !(f.flags & F.END_HEADERS);
    else if (f.type === T.SETTINGS && !(f.flags & F.ACK) && payload.length % 6 === 0) {
      for (let i = 0; i < payload.length; i += 6) {
        const id = payload.readUInt16BE(i);
        const v = payload.readUInt32BE(i + 2);
        if (id === h2.SETTING.HEADER_TABLE_SIZE) this.decoder.setMaxSize(v);
        else if (id === h2.SETTING.MAX_FRAME_SIZE && v >= h2.DEFAULT_MAX_FRAME && v < 2 ** 24) this.appMaxFrame = v;
      }
    }
  }

  /** The app's connection window, topped up in batches. */
  private grantApp(n: number): void {
    this.owedApp += n;
    if (this.owedApp < APP_GRANT_BATCH) return;
    this.toApp.push(h2.windowUpdate(0, this.owedApp));
    this.owedApp = 0;
  }

  /** App frames held for the caller's connection window go out as the window opens. */
  private releaseHeld(): void {
    const out: Buffer[] = [];
    let granted = 0;
    while (this.held.length) {
      const f = this.held[0];
      const head = h2.readHead(f, 0);
      if (head.type === T.DATA) {
        if (head.length > this.callerWindow) break;
        this.callerWindow -= head.length;
        granted += head.length;
      } else this.appControl(head, f.subarray(h2.FRAME_HEADER));
      out.push(this.held.shift()!);
    }
    this.grantApp(granted);
    if (!this.appInBlock && this.pendingOut.length) out.push(...this.pendingOut.splice(0));
    this.writeCaller(out);
    if (!this.held.length) this.app.resume();
    this.flushToApp();
  }

  private writeCaller(out: Buffer[]): void {
    if (!out.length || this.done) return;
    const more = this.caller.write(out.length === 1 ? out[0] : Buffer.concat(out));
    if (!more) this.app.pause();
  }

  // -- the agent's own frames to the caller -----------------------------------

  /** Frames of the agent's making, between two of the app's (after its header block, if one is open). */
  toCaller(frames: Buffer[]): void {
    if (this.done) return;
    // Ahead of app frames held for the window: they are of other streams, and these take no connection window of theirs.
    // But never before the app's SETTINGS (a laptop may answer first), nor inside one of its header blocks.
    if (this.appInBlock || !this.appStarted) {
      this.pendingOut.push(...frames);
      return;
    }
    this.writeCaller(frames);
  }

  sendHeaders(stream: number, list: HeaderList, end: boolean): void {
    this.toCaller(h2.headerFrames(stream, encodeHeaders(list), end, this.callerMaxFrame));
  }

  sendData(stream: number, data: Buffer, end: boolean): void {
    const frames: Buffer[] = [];
    let at = 0;
    do {
      const part = data.subarray(at, at + this.callerMaxFrame);
      at += part.length;
      frames.push(h2.frame(T.DATA, end && at >= data.length ? F.END_STREAM : 0, stream, part));
    } while (at < data.length);
    this.toCaller(frames);
  }

  /** Take up to n bytes of the caller's connection window. */
  take(n: number): number {
    const k = Math.max(0, Math.min(n, this.callerWindow));
    this.callerWindow -= k;
    return k;
  }

  /** The agent consumed `len` bytes of a diverted stream's DATA: the caller gets its windows back. */
  credit(stream: number, len: number, streamToo: boolean): void {
    if (len === 0 || this.done) return;
    this.toCaller(streamToo ? [h2.windowUpdate(0, len), h2.windowUpdate(stream, len)] : [h2.windowUpdate(0, len)]);
  }

  forget(stream: number): void {
    this.diverted.delete(stream);
    if (this.appEnded && this.diverted.size === 0) this.finish();
  }

  // -- mirrors -------------------------------------------------------------

  /** A copy of an app stream to a mirror intercept (see MirrorQueue); its answer is dropped. */
  private mirror(stream: number, list: HeaderList, end: boolean, i: ActiveIntercept): void {
    this.deps.link.countRequest(i.id);
    const finish = this.deps.mirrors.admit(i.id);
    if (!finish) return;
    const sink = new PassThrough({ highWaterMark: 64 * 1024 });
    const tap = new PassThrough();
    if (!end) {
      this.deps.mirrors.copy(i.id, tap, sink);
      const taps = this.mirrored.get(stream) ?? [];
      taps.push(tap);
      this.mirrored.set(stream, taps);
    } else sink.end();
    this.deps.pools
      .get(i)
      .h2()
      .then((session) => {
        if (sink.destroyed) return finish();
        const m = session.request(requestHeaders(list), { endStream: end });
        m.on('close', finish);
        m.on('error', () => undefined);
        m.resume();
        m.setTimeout(30_000, () => m.close(http2.constants.NGHTTP2_CANCEL));
        if (!end) sink.pipe(m);
        sink.on('error', () => m.close(http2.constants.NGHTTP2_CANCEL));
        sink.on('close', () => {
          if (!sink.readableEnded && !m.closed) m.close(http2.constants.NGHTTP2_CANCEL);
        });
      })
      .catch((err: Error) => {
        log.debug('mirror failed', { intercept: i.id, err: errorMessage(err) });
        sink.destroy();
        finish();
      })
      .catch(logBug('h2 mirror'));
  }

  private mirrorData(stream: number, taps: PassThrough[], payload: Buffer, flags: number): void {
    const data = h2.dataOf(payload, flags);
    for (const t of taps) {
      if (data?.length) t.write(Buffer.from(data));
      if (flags & F.END_STREAM) t.end();
    }
    if (flags & F.END_STREAM) this.mirrored.delete(stream);
  }

  // -- the end ---------------------------------------------------------------

  private onAppEnd(): void {
    if (this.appEnded) return;
    this.appEnded = true;
    // Streams on the laptop may still be answering: the caller's connection waits for them.
    if (this.diverted.size === 0) this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.caller.end();
    this.close();
  }

  /** A connection error: the caller is told (GOAWAY) and both connections end. */
  private fail(err: ConnectionError): void {
    if (this.done) return;
    log.debug('h2 connection error', { code: err.code, err: err.message });
    this.caller.end(h2.goaway(this.lastStream, err.code, err.message));
    this.done = true;
    this.close();
  }

  close(): void {
    this.done = true;
    for (const d of [...this.diverted.values()]) d.reset(E.CANCEL);
    this.diverted.clear();
    if (!this.app.destroyed) this.app.destroy();
  }
}

/** The HTTP/2 (h2c, gRPC) side of the agent while intercepts apply: one H2Conn per caller connection. */
export class H2Router {
  private readonly conns = new Set<H2Conn>();

  constructor(private readonly deps: RouterDeps) {}

  /** Take a connection whose first bytes (`head`, the preface at least) were read to sniff the protocol; `app` is the app's for it. */
  accept(socket: Socket, head: Buffer, app: Socket = this.deps.app.connect()): void {
    const c = new H2Conn(this.deps, socket, app, head);
    this.conns.add(c);
    socket.once('close', () => this.conns.delete(c));
    c.start();
    socket.resume();
  }

  close(): void {
    for (const c of this.conns) c.close();
    this.conns.clear();
  }
}
