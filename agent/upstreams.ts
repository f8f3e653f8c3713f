import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import type { Duplex } from 'node:stream';
import { divertFailure, openDivertedDuplex } from './divert';
import { DivertError, logBug } from './errors';
import type { ActiveIntercept } from './intercept-table';
import type { ManagerLink } from './manager-link';

const log = logger('agent.upstream');

/** HTTP/2 windows for the agent's own hops (loopback to the app, the tunnel to the laptop). */
export const H2_WINDOW = 8 * 1024 * 1024;
export const H2_SETTINGS: http2.Settings = { initialWindowSize: H2_WINDOW, enablePush: false };

function hostForUrl(host: string): string {
  return net.isIPv6(host) ? `[${host}]` : host;
}

/** Widen the connection-level receive window once the session is up. */
export function widenSession(session: http2.Http2Session): void {
  const widen = (): void => {
    try {
      session.setLocalWindowSize(H2_WINDOW);
    } catch {
      // closed meanwhile
    }
  };
  if (session.connecting) session.once('connect', widen);
  else widen();
}

/** The app container's port: a keep-alive pool for HTTP/1, raw sockets, and HTTP/2 sessions. */
export class AppUpstream {
  readonly agent = new http.Agent({ keepAlive: true, maxFreeSockets: 64, scheduling: 'lifo' });

  constructor(
    readonly host: string,
    readonly port: number,
  ) {}

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  connect(): net.Socket {
    return net.connect({ host: this.host, port: this.port, allowHalfOpen: true, noDelay: true });
  }

  /** A fresh HTTP/2 session to the app (one per caller connection). */
  h2(): http2.ClientHttp2Session {
    const s = http2.connect(`http://${hostForUrl(this.host)}:${this.port}`, { settings: H2_SETTINGS });
    widenSession(s);
    return s;
  }

  close(): void {
    this.agent.destroy();
  }
}

/** An http.Agent whose connections are diverted flows to one intercept's laptop. */
class DivertAgent extends http.Agent {
  private retired = false;

  constructor(
    private readonly link: ManagerLink,
    private readonly intercept: ActiveIntercept,
  ) {
    super({ keepAlive: true, maxFreeSockets: 16, scheduling: 'lifo' });
  }

  override createConnection(
    options: http.ClientRequestArgs & { rdbgSource?: string },
    cb?: (err: Error | null, stream: Duplex) => void,
  ): undefined {
    // allowHalfOpen false: a laptop server that closes an idle keep-alive flow closes our end too.
    openDivertedDuplex(this.link, this.intercept, options.rdbgSource ?? '', false)
      .then(
        (d) => cb?.(null, d),
        (err: Error) => cb?.(err, undefined as never),
      )
      .catch(logBug('divert agent'));
    return undefined;
  }

  /** No new keep-alive: idle flows close now, busy ones when their request is done. */
  retire(): void {
    this.retired = true;
    for (const list of Object.values(this.freeSockets)) for (const s of list ?? []) s.destroy();
  }

  override keepSocketAlive(socket: Parameters<http.Agent['keepSocketAlive']>[0]): boolean {
    // node's Agent returns whether to keep the socket; @types/node says void.
    return !this.retired && (super.keepSocketAlive(socket) as unknown as boolean);
  }
}

/** The connections to one intercept's laptop: an HTTP/1 pool and one shared HTTP/2 session. */
export class DivertPool {
  readonly agent: DivertAgent;
  private session?: Promise<http2.ClientHttp2Session>;
  /** Raw flows (whole connections, upgrades): reset when the intercept ends, so callers reconnect to the app. */
  private readonly flows = new Set<Duplex>();
  private closed = false;

  constructor(
    private readonly link: ManagerLink,
    readonly intercept: ActiveIntercept,
  ) {
    this.agent = new DivertAgent(link, intercept);
  }

  /** A raw diverted flow (upgrades, CONNECT, whole TCP connections). */
  async open(source: string): Promise<Duplex> {
    const flow = await openDivertedDuplex(this.link, this.intercept, source, true);
    if (this.closed) {
      flow.destroy();
      throw new DivertError(divertFailure(this.intercept, 'the intercept has ended'));
    }
    this.flows.add(flow);
    flow.once('close', () => this.flows.delete(flow));
    return flow;
  }

  /** The HTTP/2 session to the laptop, opened again when the previous one died. */
  h2(): Promise<http2.ClientHttp2Session> {
    if (this.session) return this.session;
    const p = openDivertedDuplex(this.link, this.intercept, 'h2', true).then((flow) => {
      const s = http2.connect(`http://${this.intercept.target}`, { settings: H2_SETTINGS, createConnection: () => flow });
      widenSession(s);
      const forget = (): void => {
        if (this.session === p) this.session = undefined;
      };
      s.on('error', (err) => {
        log.debug('h2 session to the laptop failed', { intercept: this.intercept.id, err: errorMessage(err) });
        forget();
      });
      s.on('close', forget);
      s.on('goaway', forget);
      return s;
    });
    this.session = p;
    p.catch(() => {
      if (this.session === p) this.session = undefined;
    });
    return p;
  }

  close(): void {
    this.closed = true;
    this.agent.retire();
    for (const f of this.flows) f.destroy(new Error('the intercept has ended'));
    const p = this.session;
    this.session = undefined;
    p?.then((s) => s.close(), () => undefined);
  }
}

/** One DivertPool per live intercept. */
export class DivertPools {
  private readonly pools = new Map<string, DivertPool>();

  constructor(private readonly link: ManagerLink) {}

  get(i: ActiveIntercept): DivertPool {
    let p = this.pools.get(i.id);
    if (!p || p.intercept !== i) {
      p?.close();
      p = new DivertPool(this.link, i);
      this.pools.set(i.id, p);
    }
    return p;
  }

  /** Close the pools of intercepts that ended (in-flight requests finish on their own). */
  drop(ids: string[]): void {
    for (const id of ids) {
      this.pools.get(id)?.close();
      this.pools.delete(id);
    }
  }

  closeAll(): void {
    this.drop([...this.pools.keys()]);
  }
}
