import * as http2 from 'node:http2';
import * as net from 'node:net';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import type { Duplex } from 'node:stream';
import { divertFailure, openDivertedDuplex } from './divert';
import { DivertError } from './errors';
import type { ActiveIntercept } from './intercept-table';
import type { ManagerLink } from './manager-link';

const log = logger('agent.upstream');

/** HTTP/2 windows for the agent's own hops (loopback to the app, the tunnel to the laptop). */
export const H2_WINDOW = 8 * 1024 * 1024;
export const H2_SETTINGS: http2.Settings = { initialWindowSize: H2_WINDOW, enablePush: false };

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

/** The app container's port: one connection per caller connection. */
export class AppUpstream {
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
}

/** The connections to one intercept's laptop: raw diverted flows, and one shared HTTP/2 session. */
export class DivertPool {
  private session?: Promise<http2.ClientHttp2Session>;
  /** Raw flows (whole connections, upgrades): reset when the intercept ends, so callers reconnect to the app. */
  private readonly flows = new Set<Duplex>();
  private closed = false;

  constructor(
    private readonly link: ManagerLink,
    readonly intercept: ActiveIntercept,
  ) {}

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
