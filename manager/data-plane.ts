import * as http2 from 'node:http2';
import * as net from 'node:net';
import { logger } from '../src/core/log';
import { SOCKET_HWM, connectFlowSocket, createFlowServer, fastReader, plainReads, readLine } from '../src/tunnel/fast-socket';
import { DatagramFramer, H, H2_SETTINGS, MAX_SESSION_MEMORY, PATH, WINDOW, header } from '../src/tunnel/h2/protocol';
import { dialCodeForErrno, dialCodeFrom, decodeMessage, encodeMessage, type DialCode } from '../src/tunnel/messages';
import { formatReply, KEEPALIVE_MS, parseRequest, RAW_MAGIC } from '../src/tunnel/raw/flow';
import { HALF_CLOSE_MAGIC, serveHalfCloses } from '../src/tunnel/raw/half-close';
import { splice, type ByteCounters, type SpliceOptions } from '../src/tunnel/splice';
import type { ClusterDNS } from './cluster-dns';
import type { DialPolicy } from './dial-policy';
import type { SessionRegistry } from './sessions';
import { countDialFailure, type FlowStats } from './flow-stats';
import { describeErrno } from './errno';
import { openUdpFlow } from './udp-flow';

const log = logger('manager.data');

const DIAL_TIMEOUT_MS = 10_000;

/** What the data plane needs from the intercept registry to meet diverted flows. */
export interface H2DivertBroker {
  divertFromAgent(agentId: string, interceptId: string, stream: http2.ServerHttp2Stream, kind?: string): void;
  acceptFromClient(sessionId: string, flowId: string, dial: DialCode, message: string, stream: http2.ServerHttp2Stream): void;
}

function answer(stream: http2.ServerHttp2Stream, code: DialCode, message: string, address = ''): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  const ok = code === 'OK';
  stream.respond({ ':status': ok ? 200 : 502, [H.dial]: code, [H.message]: encodeMessage(message), [H.address]: address }, { endStream: !ok });
}

/** An exception in one flow's opening ends that flow (`end`), never the manager. */
function flowBug(err: unknown, end: () => void): void {
  log.error('flow failed on an internal error', { err: (err as Error)?.stack ?? String(err) });
  try {
    end();
  } catch {
    // already gone
  }
}

/**
 * A raw flow's state, and its splice's options: one object per flow whose
 * methods are the splice's callbacks (the manager holds every laptop's idle
 * flows, see Splice in src/tunnel/splice.ts).
 */
class RawFlowState implements SpliceOptions {
  /** bytes received from the laptop so far */
  received = 0;
  /** end `up` once this many have arrived (-1: not asked; -2: done) */
  endAt = -1;

  constructor(
    readonly session: string,
    /** the destination */
    readonly up: net.Socket,
    readonly counters: ByteCounters,
    private readonly id: string,
    private readonly flows: Map<string, RawFlowState>,
    private readonly ended: (err?: string) => void,
  ) {}

  countBA(n: number): void {
    this.received += n;
    endWhenDue(this);
  }

  /** The laptop's FIN answers ours after a half-close sent beside the flow. */
  halfClosedB(): boolean {
    return this.endAt === -2;
  }

  onDone(err?: string): void {
    this.flows.delete(this.id);
    this.ended(err);
  }
}

function endWhenDue(f: RawFlowState): void {
  if (f.endAt < 0 || f.received < f.endAt) return;
  f.endAt = -2;
  f.up.end();
}

/** What a flow's end does (a closure of its own, so that it holds nothing of the dial). */
function flowEnded(stats: { flowsActive: number }, dst: string): (err?: string) => void {
  return (err) => {
    stats.flowsActive--;
    if (err) log.debug('flow ended', { dst, err });
  };
}

/** The manager's end of the HTTP/2 data plane (see src/tunnel/h2/protocol.ts). */
export class DataPlane {
  readonly server: http2.Http2Server;
  private readonly tcp: net.Server;
  broker?: H2DivertBroker;
  port = 0;
  /** Raw flows by the id their reply gave, for half-closes sent beside them (PATH.halfClose). */
  private readonly rawFlows = new Map<string, RawFlowState>();
  private rawSeq = 0;

  constructor(
    private readonly sessions: SessionRegistry,
    private readonly dns: ClusterDNS,
    private readonly stats: FlowStats,
    private readonly policy: DialPolicy,
  ) {
    this.server = http2.createServer({ settings: H2_SETTINGS, maxSessionMemory: MAX_SESSION_MEMORY });
    this.server.on('session', (s) => {
      s.on('error', () => undefined);
      s.once('localSettings', () => {
        try {
          s.setLocalWindowSize(WINDOW * 2);
        } catch {
          // closed
        }
      });
    });
    this.server.on('stream', (stream, headers) => this.onStream(stream, headers));
    this.server.on('sessionError', () => undefined);
    // Our own listener, so that every connection gets TCP_NODELAY before HTTP/2 takes it,
    // and raw flows (src/tunnel/raw/flow.ts) are told apart from HTTP/2 by their first byte.
    this.tcp = createFlowServer({ noDelay: true, allowHalfOpen: true, highWaterMark: SOCKET_HWM }, (sock) => this.onConnection(sock));
  }

  private onConnection(sock: net.Socket): void {
    sock.on('error', () => undefined);
    const silent = (): void => void sock.destroy();
    sock.setTimeout(DIAL_TIMEOUT_MS, silent);
    /** True when the connection is HTTP/2's, which reads it from now on. */
    const sniff = (first: Buffer): boolean => {
      sock.setTimeout(0);
      sock.removeListener('timeout', silent);
      if (first[0] === RAW_MAGIC.charCodeAt(0)) {
        this.onRawFlow(sock).catch((err) => flowBug(err, () => sock.destroy()));
        return false;
      }
      // Left paused: HTTP/2 reads what is buffered with socket.read(), then consumes the handle.
      plainReads(sock);
      sock.pause();
      sock.allowHalfOpen = false;
      this.server.emit('connection', sock);
      return true;
    };
    const fr = fastReader(sock);
    if (!fr) {
      sock.once('data', (first: Buffer) => {
        sock.pause();
        sock.unshift(first);
        sniff(first);
      });
      return;
    }
    // Called from the read itself, so that a connection that is not a flow gives its buffer back at once.
    fr.wake = () => {
      fr.wake = undefined;
      return sniff(fr.stash[0]);
    };
  }

  /** A raw flow: one request line, one reply line, then the connection is the flow. */
  private async onRawFlow(sock: net.Socket): Promise<void> {
    const id = String(++this.rawSeq);
    const reply = (code: DialCode, address: string, message: string): void => {
      if (code === 'OK') return void sock.write(formatReply(code, address, message, id));
      sock.end(formatReply(code, address, message));
    };
    let line: string;
    try {
      line = await readLine(sock, Buffer.alloc(0), DIAL_TIMEOUT_MS);
    } catch (err) {
      log.debug('raw flow without a request', { err: (err as Error).message });
      return void sock.destroy();
    }
    if (line.startsWith(`${HALF_CLOSE_MAGIC} `)) return this.onHalfCloses(sock, line.slice(HALF_CLOSE_MAGIC.length + 1));
    const req = parseRequest(line);
    if (typeof req === 'string') return reply('FAILED', '', req);
    const session = this.sessions.get(req.session);
    if (!session) return reply('DENIED', '', 'no such session (it expired, or the manager restarted): reconnect');
    if (req.protocol !== 'tcp') return reply('FAILED', '', `raw flows carry tcp, not "${req.protocol.slice(0, 20)}"`);
    const address = await this.addressOf(req.host, session.namespace);
    if (!address) {
      countDialFailure(this.stats, 'NAME_ERROR');
      return reply('NAME_ERROR', '', `no such host "${req.host}" in the cluster`);
    }
    const refused = this.refusal(req.session, req.host, address, req.port);
    if (refused) return reply('DENIED', address, refused);
    this.connectFlow(
      sock,
      () => sock.destroyed,
      address,
      req.port,
      (code, message) => reply(code, address, message),
      (up, onDone) => {
        sock.setKeepAlive(true, KEEPALIVE_MS);
        // a = the destination, as HTTP/2 flows count.
        const state = new RawFlowState(req.session, up, this.stats, id, this.rawFlows, onDone);
        this.rawFlows.set(id, state);
        splice(up, sock, state);
      },
      true,
    );
  }

  /** A connection that carries a session's half-closes (src/tunnel/raw/half-close.ts). */
  private onHalfCloses(sock: net.Socket, sessionId: string): void {
    if (!this.sessions.get(sessionId)) return void sock.end(formatReply('DENIED', '', 'no such session (it expired, or the manager restarted): reconnect'));
    plainReads(sock);
    serveHalfCloses(sock, (flow, bytes) => this.takeHalfClose(sessionId, flow, bytes));
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.tcp.once('error', reject);
      this.tcp.listen({ host, port, backlog: 4096 }, () => {
        this.tcp.removeListener('error', reject);
        this.port = (this.tcp.address() as net.AddressInfo).port;
        resolve(this.port);
      });
    });
  }

  close(): void {
    this.tcp.close();
    this.server.close();
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    const path = header(headers, ':path');
    try {
      if (path === PATH.divert) {
        if (!this.broker) return answer(stream, 'FAILED', 'this manager does not carry intercepts');
        return this.broker.divertFromAgent(header(headers, H.agent), header(headers, H.intercept), stream, header(headers, H.kind));
      }
      const sessionId = header(headers, H.session);
      if (!this.sessions.get(sessionId)) return answer(stream, 'DENIED', 'no such session (it expired, or the manager restarted): reconnect');
      if (path === PATH.accept) {
        if (!this.broker) return answer(stream, 'FAILED', 'this manager does not carry intercepts');
        const dial = dialCodeFrom(header(headers, H.dial));
        return this.broker.acceptFromClient(sessionId, header(headers, H.flow), dial, decodeMessage(header(headers, H.message)), stream);
      }
      const failed = (err: unknown): void => flowBug(err, () => (answer(stream, 'FAILED', `internal error: ${(err as Error).message}`), stream.destroy()));
      if (path === PATH.dns) return void this.dnsLookup(stream, sessionId, header(headers, H.name), Number(header(headers, H.qtype))).catch(failed);
      if (path === PATH.halfClose) return this.halfCloseRaw(stream, sessionId, header(headers, H.flow), header(headers, H.bytes));
      if (path !== PATH.flow) return answer(stream, 'FAILED', `unknown data plane path "${path.slice(0, 100)}"`);
      const host = header(headers, H.host);
      const port = Number(header(headers, H.port));
      if (!host || host.length > 253 || !Number.isInteger(port) || port < 1 || port > 65535) {
        return answer(stream, 'FAILED', `invalid destination "${host.slice(0, 100)}:${header(headers, H.port)}"`);
      }
      const protocol = header(headers, H.protocol);
      const namespace = this.sessions.get(sessionId)!.namespace;
      if (protocol === 'tcp') void this.dialTcp(stream, sessionId, host, port, namespace).catch(failed);
      else if (protocol === 'udp') void this.dialUdp(stream, sessionId, host, port, namespace).catch(failed);
      else answer(stream, 'FAILED', `unknown protocol "${protocol.slice(0, 20)}"`);
    } catch (err) {
      answer(stream, 'FAILED', `bad flow request: ${(err as Error).message}`);
    }
  }

  /** A raw flow's half-close sent beside it over HTTP/2 (see takeHalfClose). */
  private halfCloseRaw(stream: http2.ServerHttp2Stream, sessionId: string, flow: string, bytesText: string): void {
    const refused = this.takeHalfClose(sessionId, flow, bytesText);
    if (refused) return answer(stream, 'FAILED', refused);
    stream.respond({ ':status': 200, [H.dial]: 'OK' }, { endStream: true });
  }

  /**
   * A raw flow's half-close sent beside it: end its destination once `bytes`
   * of it have arrived. Undefined when taken, else why not.
   */
  private takeHalfClose(sessionId: string, flow: string, bytesText: string): string | undefined {
    const state = this.rawFlows.get(flow);
    if (!state || state.session !== sessionId) return `no raw flow "${flow.slice(0, 20)}" in this session`;
    if (!/^\d{1,15}$/.test(bytesText) || Number(bytesText) < state.received) return `invalid byte count "${bytesText.slice(0, 20)}"`;
    state.endAt = Number(bytesText);
    endWhenDue(state);
    return undefined;
  }

  private async dnsLookup(stream: http2.ServerHttp2Stream, sessionId: string, name: string, qtype: number): Promise<void> {
    if (!name || name.length > 254 || !Number.isInteger(qtype) || qtype < 1 || qtype > 65535) {
      return answer(stream, 'FAILED', `invalid DNS question "${name.slice(0, 64)}" type ${qtype}`);
    }
    const namespace = this.sessions.get(sessionId)?.namespace ?? 'default';
    let body: string;
    try {
      body = JSON.stringify(await this.dns.lookup(name, qtype, namespace));
    } catch (err) {
      return answer(stream, 'FAILED', `lookup failed: ${(err as Error).message}`);
    }
    if (stream.closed || stream.destroyed) return;
    stream.respond({ ':status': 200, [H.dial]: 'OK', 'content-type': 'application/json' });
    stream.end(body);
  }

  /** The address a flow dials, once resolved and allowed by the dial policy; else the flow is answered. */
  private async resolve(stream: http2.ServerHttp2Stream, sessionId: string, host: string, port: number, namespace: string): Promise<string | undefined> {
    const address = await this.addressOf(host, namespace);
    if (!address) {
      countDialFailure(this.stats, 'NAME_ERROR');
      return void answer(stream, 'NAME_ERROR', `no such host "${host}" in the cluster`);
    }
    const refused = this.refusal(sessionId, host, address, port);
    if (refused) return void answer(stream, 'DENIED', refused, address);
    return address;
  }

  /** Why the policy refuses this dial (logged and counted), or undefined. */
  private refusal(session: string, host: string, address: string, port: number): string | undefined {
    const refused = this.policy.refusal(address, port);
    if (!refused) return undefined;
    countDialFailure(this.stats, 'DENIED');
    log.info('dial refused', { session, host, why: refused });
    return refused;
  }

  /** The address a flow to `host` dials: itself when it is one, else its first in the cluster. */
  private async addressOf(host: string, namespace: string): Promise<string | undefined> {
    if (net.isIP(host)) return host;
    return (await this.dns.addresses(host, namespace).catch(() => [] as string[]))[0];
  }

  private async dialTcp(stream: http2.ServerHttp2Stream, sessionId: string, host: string, port: number, namespace: string): Promise<void> {
    const address = await this.resolve(stream, sessionId, host, port, namespace);
    if (!address) return;
    this.connectFlow(
      stream,
      () => stream.destroyed || stream.closed,
      address,
      port,
      (code, message) => answer(stream, code, message, address),
      (up, onDone) => splice(up, stream, { counters: this.stats, onDone }),
      false,
    );
  }

  /**
   * Dial a TCP destination for a flow whose opener (an HTTP/2 stream or a raw
   * connection) waits: `answer` tells it the dial's result, `join` then
   * carries the flow. Closing the opener abandons the dial.
   */
  private connectFlow(
    opener: NodeJS.EventEmitter,
    gone: () => boolean,
    address: string,
    port: number,
    answer: (code: DialCode, message: string) => void,
    join: (up: net.Socket, onDone: (err?: string) => void) => void,
    fast: boolean,
  ): void {
    const opts = { host: address, port, allowHalfOpen: true, noDelay: true, highWaterMark: SOCKET_HWM } as net.NetConnectOpts;
    // a fast reader only where the flow's other end is a socket (see fast-socket.ts)
    const up = fast ? connectFlowSocket(opts) : net.connect(opts);
    up.setTimeout(DIAL_TIMEOUT_MS);
    const fail = (err: NodeJS.ErrnoException): void => {
      up.destroy();
      const code = dialCodeForErrno(err.code);
      countDialFailure(this.stats, code);
      answer(code, `${address}:${port}: ${describeErrno(err)}`);
    };
    up.once('error', fail);
    up.once('timeout', () => fail(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })));
    const cancelled = (): void => void up.destroy();
    opener.once('close', cancelled);
    up.once('connect', () => {
      up.removeListener('error', fail);
      opener.removeListener('close', cancelled);
      up.removeAllListeners('timeout');
      up.setTimeout(0);
      up.setKeepAlive(true, 30_000);
      if (gone()) return void up.destroy();
      this.stats.flowsOpened++;
      this.stats.flowsActive++;
      answer('OK', '');
      join(up, flowEnded(this.stats, `${address}:${port}`));
    });
  }

  private async dialUdp(stream: http2.ServerHttp2Stream, sessionId: string, host: string, port: number, namespace: string): Promise<void> {
    const address = await this.resolve(stream, sessionId, host, port, namespace);
    if (!address) return;
    if (stream.closed || stream.destroyed) return;
    const flow = openUdpFlow(
      address,
      port,
      {
        answer: (code, message) => answer(stream, code, message, address),
        deliver: (d) => void stream.write(DatagramFramer.frame(d)),
        start: (send, close) => {
          const framer = new DatagramFramer(send);
          stream.on('data', (c: Buffer) => framer.push(c));
          stream.on('end', close);
        },
        end: () => {
          if (!stream.closed && !stream.destroyed && !stream.writableEnded) stream.end();
        },
      },
      this.stats,
    );
    stream.on('close', () => flow.close());
  }
}
