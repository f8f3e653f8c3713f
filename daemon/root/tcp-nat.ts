import { ipFromBytes, ipToBytes, joinHostPort, unmapIPv4 } from '../../src/core/address';
import { SOCKET_HWM, createFlowServer } from '../../src/tunnel/fast-socket';
import * as net from 'node:net';
import { logger } from '../../src/core/log';
import { DialError } from '../../src/tunnel/messages';
import type { JoinableFlow } from '../../src/tunnel/splice';
import {
  TCP_ACK, TCP_RST, TCP_SYN, buildHostUnreachable, buildRst, parsePacket, rewrite, type Packet,
} from './packet';

const log = logger('rootd.nat');

/** How long a finished flow's NAT entry lingers for late FIN/ACK retransmissions. */
const LINGER_MS = 20_000;
const FIRST_FAKE_PORT = 1024;

export interface TcpDialer {
  /** Open a flow to the destination; resolve once the manager dialled it. */
  dial(host: string, port: number, source: string): Promise<JoinableFlow>;
}

interface Flow {
  family: 4 | 6;
  app: Buffer; // the local program's address and port
  appPort: number;
  dst: Buffer; // the cluster destination it asked for
  dstPort: number;
  fake: Buffer; // the address and port the local listener sees
  fakePort: number;
  state: 'dialing' | 'open' | 'closed';
  key: string; // in byApp
  syn?: Buffer; // held until the manager's dial succeeds
  /** The dialled tunnel flow, until its join ends it (its methods, called on it). */
  opened?: JoinableFlow;
  /** Not joined yet. */
  joinable?: boolean;
  timer?: NodeJS.Timeout;
}

export interface NatStats {
  flows: number;
  refused: number;
  unreachable: number;
  strays: number;
}

/**
 * TCP without a TCP stack (architecture.md, "system stack"): packets from a
 * local program to a cluster address are rewritten so that the kernel's own
 * TCP terminates the connection on a local listener, from a fake source that
 * names the flow; replies are rewritten back. The SYN is held until the
 * manager has dialled the destination, so "refused" in the cluster is an RST
 * here and "unreachable" an ICMP error, as a pod would see.
 */
export class TcpNat {
  readonly stats: NatStats = { flows: 0, refused: 0, unreachable: 0, strays: 0 };
  private readonly byApp = new Map<string, Flow>();
  private readonly byFake = new Map<number | string, Flow>();
  private readonly listeners: net.Server[] = [];
  private nextFake = 0;
  private readonly listen4: Buffer;
  private readonly listen6?: Buffer;
  private readonly fakes4: Buffer[];
  private readonly fakes6: Buffer[];

  constructor(
    private readonly opts: {
      listen4: string; // the TUN's IPv4 address: the listener binds here
      listen6?: string;
      fakes4: string[]; // unassigned addresses routed to the TUN, used as fake sources
      fakes6: string[];
      listenPort: number;
      dialer: TcpDialer;
      write: (pkt: Buffer) => boolean;
    },
  ) {
    this.listen4 = ipToBytes(opts.listen4);
    this.listen6 = opts.listen6 ? ipToBytes(opts.listen6) : undefined;
    this.fakes4 = opts.fakes4.map(ipToBytes);
    this.fakes6 = opts.fakes6.map(ipToBytes);
  }

  async start(): Promise<void> {
    const addrs = [this.opts.listen4, ...(this.opts.listen6 ? [this.opts.listen6] : [])];
    for (const host of addrs) {
      const srv = createFlowServer({ allowHalfOpen: true, noDelay: true, highWaterMark: SOCKET_HWM }, (sock) => this.accepted(sock));
      srv.on('error', (err) => log.error('NAT listener failed', { err: err.message }));
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen({ host, port: this.opts.listenPort, backlog: 8192 }, () => resolve());
      });
      this.listeners.push(srv);
    }
  }

  close(): void {
    for (const l of this.listeners) l.close();
    for (const f of this.byApp.values()) {
      clearTimeout(f.timer);
      f.opened?.cancel();
    }
  }

  get active(): number {
    return this.byApp.size;
  }

  // Keys are built for every packet: numbers where they fit, so the hot path allocates little.
  private appKey(p: Packet): string {
    if (p.family === 4) return `${p.src.readUInt32BE(0)}:${p.srcPort}>${p.dst.readUInt32BE(0)}:${p.dstPort}`;
    return `${p.src.toString('hex')}:${p.srcPort}>${p.dst.toString('hex')}:${p.dstPort}`;
  }

  private fakeKey(addr: Buffer, port: number): number | string {
    if (addr.length === 4) return addr.readUInt32BE(0) * 65536 + port;
    return `${addr.toString('hex')}:${port}`;
  }

  /** True when this packet is a reply from our own listener (to a fake source). */
  isListenerPacket(p: Packet): boolean {
    const l = p.family === 4 ? this.listen4 : this.listen6;
    return !!l && p.srcPort === this.opts.listenPort && p.src.equals(l);
  }

  private allocateFake(family: 4 | 6): { addr: Buffer; port: number } | undefined {
    const pool = family === 4 ? this.fakes4 : this.fakes6;
    const perAddr = 65536 - FIRST_FAKE_PORT;
    const total = pool.length * perAddr;
    for (let tries = 0; tries < total; tries++) {
      const n = this.nextFake++ % total;
      const addr = pool[Math.floor(n / perAddr)];
      const port = FIRST_FAKE_PORT + (n % perAddr);
      if (!this.byFake.has(this.fakeKey(addr, port))) return { addr, port };
    }
    return undefined;
  }

  /** A TCP packet read from the TUN. */
  onPacket(p: Packet): void {
    if (this.isListenerPacket(p)) return this.fromListener(p);
    const key = this.appKey(p);
    const flow = this.byApp.get(key);
    const isSyn = (p.tcpFlags & (TCP_SYN | TCP_ACK)) === TCP_SYN;
    if (flow && flow.state === 'closed' && isSyn) {
      // The program reused the port of a finished connection: a new flow, not the lingering one.
      this.forget(key, flow);
    } else if (flow) {
      if (flow.state === 'dialing') return; // a retransmitted SYN while we dial
      this.toListener(flow, p);
      return;
    }
    if (isSyn) return this.newFlow(key, p);
    // A packet of a flow we do not know (e.g. from before a restart): tell the sender it is gone.
    if (!(p.tcpFlags & TCP_RST)) {
      this.stats.strays++;
      this.opts.write(buildRst(p));
    }
  }

  private newFlow(key: string, p: Packet): void {
    const fake = this.allocateFake(p.family);
    if (!fake || (p.family === 6 && !this.listen6)) {
      this.opts.write(buildRst(p));
      return;
    }
    const flow: Flow = {
      key,
      family: p.family,
      app: Buffer.from(p.src),
      appPort: p.srcPort,
      dst: Buffer.from(p.dst),
      dstPort: p.dstPort,
      fake: fake.addr,
      fakePort: fake.port,
      state: 'dialing',
      syn: Buffer.from(p.buf),
    };
    this.byApp.set(key, flow);
    this.byFake.set(this.fakeKey(fake.addr, fake.port), flow);
    this.stats.flows++;
    const host = ipFromBytes(flow.dst);
    this.opts.dialer.dial(host, flow.dstPort, joinHostPort(ipFromBytes(flow.app), flow.appPort)).then(
      (opened) => {
        if (flow.state !== 'dialing') return opened.cancel();
        flow.state = 'open';
        flow.opened = opened;
        flow.joinable = true;
        const syn = parsePacket(flow.syn!);
        flow.syn = undefined;
        if (syn) this.toListener(flow, syn);
        // If the listener never accepts (the program gave up), drop the flow after a while.
        flow.timer = setTimeout(() => this.forget(key, flow), 30_000);
      },
      (err: unknown) => {
        const code = err instanceof DialError ? err.code : 'FAILED';
        const syn = parsePacket(flow.syn!);
        this.forget(key, flow);
        if (!syn) return;
        if (code === 'REFUSED') {
          this.stats.refused++;
          this.opts.write(buildRst(syn));
        } else {
          this.stats.unreachable++;
          this.opts.write(buildHostUnreachable(syn));
        }
        const fields = { dst: `${host}:${flow.dstPort}`, code, err: (err as Error).message };
        // The manager's dial policy refused it: say so where the user looks.
        if (code === 'DENIED') log.warn('dial refused by the traffic manager', fields);
        else log.debug('dial failed', fields);
      },
    );
  }

  private forget(key: string, flow: Flow): void {
    clearTimeout(flow.timer);
    flow.state = 'closed';
    flow.opened?.cancel();
    if (this.byApp.get(key) === flow) this.byApp.delete(key);
    const fk = this.fakeKey(flow.fake, flow.fakePort);
    if (this.byFake.get(fk) === flow) this.byFake.delete(fk);
  }

  private toListener(flow: Flow, p: Packet): void {
    const listen = flow.family === 4 ? this.listen4 : this.listen6!;
    rewrite(p, flow.fake, flow.fakePort, listen, this.opts.listenPort);
    this.opts.write(p.buf);
  }

  private fromListener(p: Packet): void {
    const flow = this.byFake.get(this.fakeKey(p.dst, p.dstPort));
    if (!flow) return;
    rewrite(p, flow.dst, flow.dstPort, flow.app, flow.appPort);
    this.opts.write(p.buf);
  }

  /** The kernel accepted the rewritten connection: join it to its tunnel flow. */
  private accepted(sock: net.Socket): void {
    const addr = unmapIPv4(sock.remoteAddress ?? '');
    const flow = net.isIP(addr) ? this.byFake.get(this.fakeKey(ipToBytes(addr), sock.remotePort ?? 0)) : undefined;
    if (!flow?.opened || !flow.joinable) {
      sock.resetAndDestroy();
      return;
    }
    clearTimeout(flow.timer);
    flow.timer = undefined;
    const key = flow.key;
    flow.joinable = false;
    flow.opened.join(sock, () => {
      // The tunnel flow has ended: nothing is left to cancel. Calling cancel now
      // would count the flow again as closed first, and keeping it would keep the
      // whole finished flow (its sockets and buffers) alive while the entry lingers.
      flow.opened = undefined;
      // Kept a while for late FIN/ACK retransmissions; a new SYN on the same ports replaces it.
      flow.state = 'closed';
      flow.timer = setTimeout(() => this.forget(key, flow), LINGER_MS);
    });
  }
}

