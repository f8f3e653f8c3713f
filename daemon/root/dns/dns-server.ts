import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { errorMessage } from '../../../src/core/errors';
import { logger } from '../../../src/core/log';
import { DnsCodes, dnsError } from './dns-errors';
import { QueryHandler, type DnsCounters, type LookupCluster } from './query-handler';
import { DEFAULT_EXCLUDE, DnsRouter } from './routing';
import { parseUpstream, upstreamText, type Upstream } from './upstream';

export type { DnsCounters, LookupCluster } from './query-handler';
export type { ClusterResult } from './answers';
export { DEFAULT_EXCLUDE } from './routing';

export interface ListenAddress {
  address: string;
  port: number;
}

export interface DnsServerOptions {
  /** Where to serve, UDP and TCP on each. Port 0 picks a free port (the same for UDP and TCP). */
  listen: ListenAddress[];
  clusterDomain: string;
  /** The cluster's namespaces, asked on every query (the list changes). */
  namespaces: () => string[];
  /** Suffixes always sent to the cluster. */
  include?: string[];
  /** Suffixes never sent to the cluster; wins over include. Default: com, io, net, org, ru (as Telepresence). */
  exclude?: string[];
  /** The cluster's service/pod subnets: PTR names inside them go to the cluster. */
  reverseCidrs?: string[];
  /** Upper bound (seconds) on the TTL of cluster answers, and how long they are cached. Default 5. */
  ttl?: number;
  lookupCluster: LookupCluster;
  /** The laptop's original resolvers: `ip`, `ip:port` or `[v6]:port`. Our own listen addresses are dropped. */
  upstreams: string[];
  /** Per upstream try (ms). Default 2000; the whole forward is bounded by two tries. */
  upstreamTimeoutMs?: number;
  /** How long a cluster lookup may take before SERVFAIL (ms). Default 4000. */
  clusterTimeoutMs?: number;
  /** Cluster answers kept (entries); 0 disables the cache. Default 1000. */
  cacheSize?: number;
}

/** Bounds that keep a flood from growing memory without limit. */
const MAX_IN_FLIGHT = 1024;
const MAX_TCP_CONNECTIONS = 256;
const MAX_TCP_PENDING = 32; // queries in flight per connection
const TCP_IDLE_MS = 10_000;
/**
 * The UDP receive buffer asked for (the kernel caps it at net.core.rmem_max).
 * The default (~200 KB) holds about 200 small queries: a burst from the laptop
 * while this daemon waits for the CPU would overflow it and lose well-formed
 * queries beside the burst. 4 MiB holds thousands, as unbound's so-rcvbuf.
 */
export const UDP_RECEIVE_BUFFER = 4 << 20;

const log = logger('rootd.dns');

/**
 * The laptop's resolver while connected: cluster names are resolved by the
 * manager (as a pod in the client's namespace would), everything else is
 * relayed byte for byte to the laptop's original resolvers. UDP and TCP.
 */
export class DnsServer {
  private readonly handler: QueryHandler;
  private readonly router: DnsRouter;
  private upstreamList: Upstream[] = [];
  private readonly udp: dgram.Socket[] = [];
  private readonly tcp: net.Server[] = [];
  private readonly conns = new Set<net.Socket>();
  private bound: ListenAddress[] = [];
  private inFlight = 0;

  constructor(private readonly opts: DnsServerOptions) {
    const router = (this.router = new DnsRouter({
      clusterDomain: opts.clusterDomain,
      namespaces: opts.namespaces,
      include: opts.include,
      exclude: opts.exclude ?? [...DEFAULT_EXCLUDE],
      reverseCidrs: opts.reverseCidrs,
    }));
    this.handler = new QueryHandler({
      router,
      lookupCluster: opts.lookupCluster,
      upstreams: () => this.upstreamList,
      ttl: opts.ttl ?? 5,
      cacheSize: opts.cacheSize ?? 1000,
      upstreamTimeoutMs: opts.upstreamTimeoutMs ?? 2000,
      clusterTimeoutMs: opts.clusterTimeoutMs ?? 4000,
      log,
    });
    this.setUpstreams(opts.upstreams);
  }

  /** The cluster's subnets changed: their reverse names are the cluster's from now on. */
  setReverseCidrs(cidrs: readonly string[]): void {
    this.router.setReverseCidrs(cidrs);
  }

  /** Replace the original resolvers (e.g. after the laptop changed networks). */
  setUpstreams(upstreams: string[]): void {
    const parsed = upstreams.map(parseUpstream);
    this.upstreamList = parsed.filter((u) => !this.isOurs(u));
    if (this.upstreamList.length < parsed.length) log.warn('ignoring upstreams that are this server itself', { upstreams });
  }

  upstreams(): string[] {
    return this.upstreamList.map(upstreamText);
  }

  /**
   * A forward to ourselves would loop: our listen addresses (bound ports once
   * started), and on a wildcard listen (0.0.0.0, ::) every loopback address.
   */
  private isOurs(u: Upstream): boolean {
    const mine = this.bound.length > 0 ? this.bound : this.opts.listen.filter((l) => l.port !== 0);
    return mine.some((l) => {
      if (l.port !== u.port) return false;
      if (l.address === u.address) return true;
      const wildcard = l.address === '0.0.0.0' || l.address === '::';
      return wildcard && (u.address.startsWith('127.') || u.address === '::1');
    });
  }

  counters(): DnsCounters {
    return { ...this.handler.counters };
  }

  /** The addresses actually served (ports resolved). */
  addresses(): ListenAddress[] {
    return [...this.bound];
  }

  /** Answer one message as if it came over `transport`; for tests and for a TUN-side UDP path. */
  handle(msg: Buffer, transport: 'udp' | 'tcp' = 'udp'): Promise<Buffer | undefined> {
    return this.handler.handle(msg, transport);
  }

  async start(): Promise<ListenAddress[]> {
    try {
      for (const l of this.opts.listen) this.bound.push(await this.listenOne(l));
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.setUpstreams(this.opts.upstreams);
    log.info('DNS server listening', { listen: this.bound, upstreams: this.upstreams(), clusterDomain: this.opts.clusterDomain, udpReceiveBuffer: this.udp[0]?.getRecvBufferSize() });
    return this.addresses();
  }

  async stop(): Promise<void> {
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    await Promise.all([
      ...this.udp.map((s) => new Promise<void>((r) => s.close(() => r()))),
      ...this.tcp.map((s) => new Promise<void>((r) => s.close(() => r()))),
    ]);
    this.udp.length = 0;
    this.tcp.length = 0;
    this.bound = [];
  }

  private async listenOne(l: ListenAddress): Promise<ListenAddress> {
    const family = net.isIP(l.address);
    if (family === 0) throw dnsError(DnsCodes.LISTEN, `"${l.address}" is not an IP address to serve DNS on`);
    // Port 0: the kernel picks the UDP port; TCP then takes the same one (retry if it is taken).
    for (let attempt = 0; ; attempt++) {
      const sock = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', recvBufferSize: UDP_RECEIVE_BUFFER });
      const port = await new Promise<number>((resolve, reject) => {
        sock.once('error', reject);
        sock.bind(l.port, l.address, () => {
          sock.removeListener('error', reject);
          resolve(sock.address().port);
        });
      }).catch((err: Error) => {
        throw dnsError(DnsCodes.LISTEN, `cannot serve DNS on ${l.address}:${l.port} (UDP): ${err.message}`, undefined, err);
      });
      const server = net.createServer((c) => this.serveTcp(c));
      server.maxConnections = MAX_TCP_CONNECTIONS;
      const tcpErr = await new Promise<Error | undefined>((resolve) => {
        server.once('error', resolve);
        server.listen({ port, host: l.address, exclusive: true }, () => {
          server.removeListener('error', resolve);
          resolve(undefined);
        });
      });
      if (tcpErr) {
        sock.close();
        if (l.port === 0 && attempt < 5) continue;
        throw dnsError(DnsCodes.LISTEN, `cannot serve DNS on ${l.address}:${port} (TCP): ${tcpErr.message}`, undefined, tcpErr);
      }
      sock.on('message', (msg, rinfo) => this.serveUdp(sock, msg, rinfo));
      sock.on('error', (err) => log.warn('DNS UDP socket error', { error: err.message }));
      server.on('error', (err) => log.warn('DNS TCP server error', { error: err.message }));
      this.udp.push(sock);
      this.tcp.push(server);
      return { address: l.address, port };
    }
  }

  private serveUdp(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.inFlight >= MAX_IN_FLIGHT) {
      this.handler.counters.errors++;
      return;
    }
    this.inFlight++;
    this.handler
      .handle(msg, 'udp')
      .then((answer) => {
        if (answer) sock.send(answer, rinfo.port, rinfo.address, () => undefined);
      })
      .catch((err) => log.error('DNS query failed', { error: errorMessage(err) }))
      .finally(() => this.inFlight--);
  }

  private serveTcp(c: net.Socket): void {
    this.conns.add(c);
    let buf: Buffer = Buffer.alloc(0);
    let pending = 0;
    c.setTimeout(TCP_IDLE_MS, () => c.destroy());
    c.on('error', () => undefined);
    c.on('close', () => this.conns.delete(c));
    c.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (len < 12) {
          // Shorter than a DNS header: not DNS, or a broken client. Answer what we can, then hang up.
          const msg = buf.subarray(2, 2 + len);
          if (buf.length < 2 + len) return;
          void this.handler.handle(Buffer.from(msg), 'tcp').then((a) => (a ? c.end(frame(a)) : c.destroy()), () => c.destroy());
          buf = Buffer.alloc(0);
          return;
        }
        if (buf.length < 2 + len) return;
        const msg = Buffer.from(buf.subarray(2, 2 + len));
        buf = buf.subarray(2 + len);
        if (pending >= MAX_TCP_PENDING || this.inFlight >= MAX_IN_FLIGHT) {
          this.handler.counters.errors++;
          continue;
        }
        pending++;
        this.inFlight++;
        this.handler
          .handle(msg, 'tcp')
          .then((answer) => {
            if (answer && c.writable) c.write(frame(answer));
          })
          .catch((err) => log.error('DNS query failed', { error: errorMessage(err) }))
          .finally(() => {
            pending--;
            this.inFlight--;
          });
      }
    });
  }
}

function frame(msg: Buffer): Buffer {
  const prefix = Buffer.alloc(2);
  prefix.writeUInt16BE(msg.length);
  return Buffer.concat([prefix, msg]);
}
