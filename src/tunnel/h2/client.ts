import * as http2 from 'node:http2';
import * as net from 'node:net';
import { joinHostPort, splitHostPort } from '../../core/address';
import { logger } from '../../core/log';
import { DialError, decodeMessage, dialCodeFrom, encodeMessage, type DialCode } from '../messages';
import { parked } from '../splice';
import { H, H2_SETTINGS, MAX_SESSION_MEMORY, PATH, WINDOW, header } from './protocol';
import type { DNSResponse__Output } from '../../gen/rdbg/v1/DNSResponse';

const log = logger('tunnel.h2');

const DIAL_TIMEOUT_MS = 15_000;
const PING_EVERY_MS = 10_000;
/** Generous: a busy 2-core laptop can be slow to answer, and a false alarm resets every flow. */
const PING_TIMEOUT_MS = 15_000;

/**
 * The client end of the data plane: one HTTP/2 connection to the manager's
 * data port, opened on first use and again after it drops; one stream per flow.
 */
export class H2FlowClient {
  private session?: http2.ClientHttp2Session;
  /** every connection still open: the current one, and those renew() left to finish */
  private readonly sessions = new Set<http2.ClientHttp2Session>();
  private closed = false;

  constructor(
    private readonly address: string, // host:port of the data plane
    private readonly identity: () => Record<string, string>, // rdbg-session or rdbg-agent
    /** the current connection stopped answering pings */
    private readonly onLost?: (reason: string) => void,
    private readonly pings = { everyMs: PING_EVERY_MS, timeoutMs: PING_TIMEOUT_MS },
  ) {}

  /**
   * New flows open a new connection from now on: the manager behind the
   * address may have changed (a restarted pod behind the same port-forward,
   * whose old connection may never see a FIN). Flows on the old connection
   * carry on until they end, or until it stops answering pings, which then
   * closes it quietly: it is no longer the client's connection to report.
   */
  renew(): void {
    const old = this.session;
    this.session = undefined;
    old?.close();
  }

  /** Opens the connection now, if none is open, so that the next flow need not wait for it. */
  warm(): void {
    if (this.closed) return;
    try {
      this.get();
    } catch {
      // an address that cannot be dialled: the first flow says so
    }
  }

  private get(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const { host, port } = splitHostPort(this.address, "the manager's data address");
    const s = http2.connect(`http://${joinHostPort(host, port)}`, {
      settings: H2_SETTINGS,
      maxSessionMemory: MAX_SESSION_MEMORY,
      peerMaxConcurrentStreams: 1 << 20,
      // Small requests must not wait for Nagle.
      createConnection: () => net.connect({ host, port, noDelay: true }),
    });
    s.on('connect', () => {
      try {
        s.setLocalWindowSize(WINDOW * 2);
      } catch {
        // closed already
      }
    });
    s.on('error', (err) => log.debug('data plane connection error', { err: err.message }));
    const pinger = setInterval(() => {
      if (s.destroyed) return;
      const timer = setTimeout(() => {
        const current = this.session === s;
        log.warn('data plane ping timed out', { current });
        s.destroy();
        if (current) this.onLost?.('the data plane stopped answering pings');
      }, this.pings.timeoutMs);
      // any answer, or the connection's end, settles this ping
      try {
        if (!s.ping(() => clearTimeout(timer))) clearTimeout(timer);
      } catch {
        clearTimeout(timer); // closed meanwhile
      }
    }, this.pings.everyMs);
    pinger.unref();
    s.on('close', () => {
      if (this.session === s) this.session = undefined;
      this.sessions.delete(s);
      clearInterval(pinger);
    });
    s.on('goaway', () => {
      if (this.session === s) this.session = undefined;
    });
    this.sessions.add(s);
    this.session = s;
    return s;
  }

  /**
   * Send the request and wait for the manager's dial result in the response headers.
   * `endStream`: the request has no body (a question, not a flow), so its headers end it.
   */
  private request(path: string, headers: Record<string, string>, endStream = false): Promise<http2.ClientHttp2Stream> {
    if (this.closed) return Promise.reject(new DialError('FAILED', 'the data plane is closed'));
    let req: http2.ClientHttp2Stream;
    try {
      req = this.get().request({ ':method': 'POST', ':path': path, ...this.identity(), ...headers }, { endStream });
    } catch (err) {
      this.session?.destroy();
      return Promise.reject(new DialError('UNREACHABLE', `the data plane is unavailable: ${(err as Error).message}`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        req.close(http2.constants.NGHTTP2_CANCEL);
        reject(new DialError('TIMEOUT', `the manager did not answer within ${DIAL_TIMEOUT_MS / 1000} s`));
      }, DIAL_TIMEOUT_MS);
      const onError = (err: Error): void => {
        clearTimeout(timer);
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'ERR_HTTP2_GOAWAY_SESSION' || code === 'ERR_HTTP2_STREAM_CANCEL') {
          this.onLost?.(`data plane: ${err.message}`);
        }
        reject(new DialError('UNREACHABLE', `cannot reach the traffic manager's data plane at ${this.address}: ${err.message}`));
      };
      req.once('error', onError);
      req.once('response', (h) => {
        clearTimeout(timer);
        req.removeListener('error', onError);
        const code = dialCodeFrom(header(h, H.dial));
        if (code === 'OK') return resolve(parked(req));
        req.close();
        reject(new DialError(code, decodeMessage(header(h, H.message)) || code));
      });
    });
  }

  open(protocol: 'tcp' | 'udp', host: string, port: number, source = ''): Promise<http2.ClientHttp2Stream> {
    return this.request(PATH.flow, { [H.protocol]: protocol, [H.host]: host, [H.port]: String(port), [H.source]: source });
  }

  /** An agent's diverted flow for one intercept (or, kind "files", its files for a mount); resolves once the owner's laptop answered. */
  divert(interceptId: string, kind = ''): Promise<http2.ClientHttp2Stream> {
    return this.request(PATH.divert, { [H.intercept]: interceptId, ...(kind ? { [H.kind]: kind } : {}) });
  }

  /** The owner's answer to a diverted flow, after it dialled its local process. */
  accept(flowId: string, dial: DialCode, message = ''): Promise<http2.ClientHttp2Stream> {
    return this.request(PATH.accept, { [H.flow]: flowId, [H.dial]: dial, [H.message]: encodeMessage(message) });
  }

  /**
   * A raw flow's half-close as a request (see ../raw/half-close.ts for the
   * channel that usually carries it). True when the manager took it.
   */
  async halfClose(flow: string, bytes: number): Promise<boolean> {
    try {
      // Both sides end the stream with their headers: no body, no reset to send.
      const req = await this.request(PATH.halfClose, { [H.flow]: flow, [H.bytes]: String(bytes) }, true);
      req.resume();
      return true;
    } catch {
      return false;
    }
  }

  /** A cluster DNS lookup made by the manager (see manager/cluster-dns.ts). */
  async dns(name: string, qtype: number): Promise<DNSResponse__Output> {
    const req = await this.request(PATH.dns, { [H.name]: name, [H.qtype]: String(qtype) }, true);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as DNSResponse__Output;
  }

  close(): void {
    this.closed = true;
    for (const s of this.sessions) s.destroy();
  }
}
