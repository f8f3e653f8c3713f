import * as net from 'node:net';
import { ipFromBytes, joinHostPort, unmapIPv4 } from '../../src/core/address';
import { logger } from '../../src/core/log';
import { DialError } from '../../src/tunnel/messages';
import { SOCKET_HWM, createFlowServer } from '../../src/tunnel/fast-socket';
import { parked, type JoinableFlow } from '../../src/tunnel/splice';
import { TCP_ACK, TCP_SYN, buildHostUnreachable, buildRst, parsePacket } from './packet';
import { libc } from './platform/libc';
import { installCapture, removeCapture } from './platform/netfilter';
import { SynQueue } from './platform/syn-queue';
import type { NatStats, TcpDialer } from './tcp-nat';

const log = logger('rootd.nat');

const SOL_IP = 0;
const SOL_IPV6 = 41;
const SO_ORIGINAL_DST = 80; // IP6T_SO_ORIGINAL_DST is the same number at SOL_IPV6
/** A dialled flow whose connection the kernel never hands over (the program gave up) is dropped after this. */
const ACCEPT_WAIT_MS = 30_000;
/** Queue numbers tried from here (a per-device offset keeps two sessions apart). */
const FIRST_QUEUE = 0x5244;


/** The destination a redirected connection asked for (the conntrack entry's original tuple). */
function originalDestination(sock: net.Socket, family: 4 | 6): { host: string; port: number } | undefined {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return undefined;
  const out = Buffer.alloc(28);
  if (libc().getsockopt(fd, family === 4 ? SOL_IP : SOL_IPV6, SO_ORIGINAL_DST, out, [out.length]) !== 0) return undefined;
  const port = out.readUInt16BE(2);
  const host = family === 4 ? ipFromBytes(out.subarray(4, 8)) : ipFromBytes(out.subarray(8, 24));
  return { host, port };
}

type Endpoint = { address?: string; port?: number };
type Handle = { getpeername?(out: Endpoint): number; getsockname?(out: Endpoint): number };

/**
 * A socket's two addresses, read from its handle: net.Socket's remoteAddress
 * and localPort keep what they read on the socket (two objects and two
 * strings more for each of the thousands of flows a daemon holds).
 */
function endpoints(sock: net.Socket): { peer: Endpoint; local: Endpoint } {
  const h = (sock as unknown as { _handle?: Handle })._handle;
  const peer: Endpoint = {};
  const local: Endpoint = {};
  h?.getpeername?.(peer);
  h?.getsockname?.(local);
  return { peer, local };
}

interface Pending {
  state: 'dialing' | 'open';
  /** Queued SYNs of this connection (retransmissions while the manager dials). */
  ids: number[];
  /** The dialled flow (its methods, called on it). */
  opened?: JoinableFlow;
  timer?: NodeJS.Timeout;
}

/**
 * TCP to the cluster captured by the kernel instead of read off the TUN
 * (architecture.md, "TCP capture"): netfilter redirects each connection
 * routed into the TUN to a listener of ours on the loopback address, so its
 * bytes never cross the TUN or this process as packets. The program's SYN
 * waits in the netfilter queue while the manager dials, so a port refused in
 * the cluster is refused here (an RST written into the TUN, the SYN dropped)
 * and an unreachable one an ICMP error, as with the TUN's own NAT (tcp-nat),
 * which still handles any TCP that reaches the TUN.
 */
export class TcpRedirect {
  readonly stats: NatStats = { flows: 0, refused: 0, unreachable: 0, strays: 0 };
  private readonly pending = new Map<string, Pending>();
  private readonly servers: net.Server[] = [];
  private queue?: SynQueue;
  private readonly families: Array<4 | 6> = [];
  private active_ = 0;
  /** Every joined flow's onDone (one function, not a closure per flow). */
  private readonly flowDone = (): void => void this.active_--;

  constructor(
    private readonly opts: {
      dev: string;
      ipv6: boolean;
      dialer: TcpDialer;
      /** Write a packet into the TUN (the refusals). */
      write: (pkt: Buffer) => boolean;
    },
  ) {}

  /** Capture with the kernel; false (nothing left installed) where it cannot: no iptables, no NAT or queue in the kernel. */
  async start(): Promise<boolean> {
    const offset = [...this.opts.dev].reduce((a, c) => a + c.charCodeAt(0), 0) % 64;
    this.queue = SynQueue.open(FIRST_QUEUE + offset * 64);
    if (!this.queue) return false;
    try {
      for (const family of this.opts.ipv6 ? ([4, 6] as const) : ([4] as const)) {
        try {
          const port = await this.listen(family === 4 ? '127.0.0.1' : '::1', family);
          installCapture({ family, dev: this.opts.dev, queue: this.queue.queue, port });
          this.families.push(family);
        } catch (err) {
          if (family === 4) throw err;
          // IPv6 without ip6tables' NAT (or without ::1): its TCP stays on the TUN's NAT.
          log.info('IPv6 TCP stays on the TUN', { err: (err as Error).message });
        }
      }
    } catch (err) {
      log.info('TCP capture by the kernel is not available: TCP is read off the TUN', { err: (err as Error).message });
      this.close();
      return false;
    }
    this.watchQueue();
    log.info('TCP captured by the kernel', { dev: this.opts.dev, queue: this.queue.queue, families: this.families.join(',') });
    return true;
  }

  /** Read the queue; if its socket fails, bind the same number again (meanwhile SYNs pass unheld and are dialled on accept). */
  private watchQueue(): void {
    const q = this.queue!;
    q.start(
      (id, pkt) => this.onSyn(id, pkt),
      () => {
        if (this.queue !== q) return;
        log.warn('the netfilter queue stopped: binding it again', { queue: q.queue });
        // Verdicts of SYNs still held on the old socket are lost with it; the programs retransmit.
        for (const p of this.pending.values()) if (p.state === 'dialing') p.ids.length = 0;
        const again = SynQueue.open(q.queue, 1);
        if (!again) return void log.error('the netfilter queue cannot be bound again: new connections are dialled once accepted', { queue: q.queue });
        this.queue = again;
        this.watchQueue();
      },
    );
  }

  get active(): number {
    return this.active_ + this.pending.size;
  }

  close(): void {
    for (const family of this.families.splice(0)) removeCapture(family, this.opts.dev);
    const q = this.queue;
    this.queue = undefined;
    q?.close();
    for (const s of this.servers.splice(0)) s.close();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.opened?.cancel();
    }
    this.pending.clear();
  }

  private listen(host: string, family: 4 | 6): Promise<number> {
    const srv = createFlowServer({ allowHalfOpen: true, noDelay: true, highWaterMark: SOCKET_HWM }, (sock) => this.accepted(sock, family));
    srv.on('error', (err) => log.error('redirect listener failed', { err: err.message }));
    this.servers.push(srv);
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen({ host, port: 0, backlog: 8192 }, () => resolve((srv.address() as net.AddressInfo).port));
    });
  }

  private onSyn(id: number, buf: Buffer): void {
    const p = parsePacket(buf);
    if (!p || p.proto !== 6 || (p.tcpFlags & (TCP_SYN | TCP_ACK)) !== TCP_SYN) return this.queue?.verdict(id, true);
    const src = ipFromBytes(p.src);
    const dst = ipFromBytes(p.dst);
    const key = `${joinHostPort(src, p.srcPort)}>${joinHostPort(dst, p.dstPort)}`;
    const known = this.pending.get(key);
    if (known?.state === 'dialing') return void known.ids.push(id);
    if (known) return this.queue?.verdict(id, true); // dialled, not yet accepted: a retransmission
    const entry: Pending = { state: 'dialing', ids: [id] };
    this.pending.set(key, entry);
    this.stats.flows++;
    const syn = Buffer.from(buf);
    this.opts.dialer.dial(dst, p.dstPort, joinHostPort(src, p.srcPort)).then(
      (opened) => {
        if (this.pending.get(key) !== entry) return opened.cancel();
        entry.state = 'open';
        entry.opened = opened;
        entry.timer = setTimeout(() => this.forget(key, entry), ACCEPT_WAIT_MS);
        const [first, ...rest] = entry.ids.splice(0);
        if (first !== undefined) this.queue?.verdict(first, true);
        for (const r of rest) this.queue?.verdict(r, false);
      },
      (err: unknown) => {
        if (this.pending.get(key) === entry) this.pending.delete(key);
        for (const r of entry.ids.splice(0)) this.queue?.verdict(r, false);
        const code = err instanceof DialError ? err.code : 'FAILED';
        const seg = parsePacket(syn);
        if (seg && code === 'REFUSED') {
          this.stats.refused++;
          this.opts.write(buildRst(seg));
        } else if (seg) {
          this.stats.unreachable++;
          this.opts.write(buildHostUnreachable(seg));
        }
        const fields = { dst: joinHostPort(dst, p.dstPort), code, err: (err as Error).message };
        if (code === 'DENIED') log.warn('dial refused by the traffic manager', fields);
        else log.debug('dial failed', fields);
      },
    );
  }

  private forget(key: string, entry: Pending): void {
    clearTimeout(entry.timer);
    entry.opened?.cancel();
    if (this.pending.get(key) === entry) this.pending.delete(key);
  }

  /** The kernel handed over a redirected connection: join it to the flow its SYN dialled. */
  private accepted(sock: net.Socket, family: 4 | 6): void {
    const dst = originalDestination(sock, family);
    const { peer, local: self } = endpoints(sock);
    const src = unmapIPv4(peer.address ?? '');
    const srcPort = peer.port ?? 0;
    const local = self.port;
    // Only a redirected connection has another original destination; anyone dialling the listener itself is turned away.
    if (!dst || (dst.port === local && (dst.host === '127.0.0.1' || dst.host === '::1'))) return void sock.resetAndDestroy();
    const key = `${joinHostPort(src, srcPort)}>${joinHostPort(dst.host, dst.port)}`;
    const entry = this.pending.get(key);
    if (entry?.state === 'open' && entry.opened) {
      this.pending.delete(key);
      clearTimeout(entry.timer);
      return this.join(sock, entry.opened);
    }
    // Its SYN was not held (it passed while no queue was bound): dial now; a failure resets the accepted connection,
    // and a reset from the program meanwhile closes it alone.
    parked(sock);
    this.stats.flows++;
    this.opts.dialer.dial(dst.host, dst.port, joinHostPort(src, srcPort)).then(
      (opened) => (sock.destroyed ? opened.cancel() : this.join(sock, opened)),
      () => sock.resetAndDestroy(),
    );
  }

  private join(sock: net.Socket, flow: JoinableFlow): void {
    this.active_++;
    flow.join(sock, this.flowDone);
  }
}
