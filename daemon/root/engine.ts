import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { bigIntToIp, type Cidr } from '../../src/core/cidr';
import { Codes, RdbgError, errorMessage } from '../../src/core/errors';
import { logger } from '../../src/core/log';
import { DataPlaneClient } from '../../src/tunnel/client';
import { openFileLimit } from '../../src/core/rlimit';
import type { RootStatus } from '../../src/gen/rdbg/v1/RootStatus';
import type { SessionGrant__Output } from '../../src/gen/rdbg/v1/SessionGrant';
import type { Journal, JournalEntry } from './journal';
import { PROTO_TCP, PROTO_UDP, parsePacket } from './packet';
import type { Platform, TunDevice, TunReader } from './platform/platform';
import { planRoutes } from '../../src/core/route-plan';
import { SessionWatch } from './session-watch';
import { validateUserSocket } from './state-dir';
import { TcpNat } from './tcp-nat';
import { TcpRedirect } from './tcp-redirect';
import { UdpRelay } from './udp-relay';
import { HostDns, type DnsMode } from './host-dns';

const log = logger('rootd');

/** The kernel's TCP terminates flows on this port of the TUN's own address. */
const NAT_PORT = 1;
const MTU = 65535;
const TXQUEUELEN = 10_000;
const USERD_GRACE_MS = 10_000;
/** `rdbg connect` starts both daemons at once: the user daemon's start (a cold Kubernetes client, an exec credential plugin) is waited for this long. */
const SESSION_WAIT_MS = 60_000;

export interface RootOptions {
  userSocket: string;
  /** the caller, who must own userSocket (checked when it appears: the user daemon may still be starting) */
  callerUid?: number;
  tunName: string;
  tunCidr: Cidr;
  tunCidr6?: Cidr;
  alsoProxy: string[];
  neverProxy: string[];
  allowConflicts: boolean;
  dnsMode: DnsMode;
  dnsInclude: string[]; // suffixes always asked of the cluster
  dnsExclude: string[]; // suffixes never asked of the cluster (added to the defaults)
  resolvConf: string;
  tunReader?: TunReader; // RDBG_TUN_READER
  rawFlowsMax?: number; // RDBG_RAW_FLOWS_MAX
  tcpCapture?: 'kernel' | 'tun'; // RDBG_TCP_CAPTURE
}

function nth(c: Cidr, n: number): string {
  return bigIntToIp(c.family, c.base + BigInt(n));
}

/**
 * Everything the root daemon does once started: the TUN device and its
 * routes, the packet loop (TCP NAT, UDP relay), and the laptop's DNS. Each
 * host change is journalled before it is made.
 */
export class RootEngine extends EventEmitter {
  private session?: SessionWatch;
  private tun?: TunDevice;
  private nat?: TcpNat;
  private redirect?: TcpRedirect;
  private udp?: UdpRelay;
  private dataPlane?: DataPlaneClient;
  /** when each step of start() ended, in ms after it began (the ready line's `ms`) */
  private readonly marks: Record<string, number> = {};
  private startedAt = 0;
  private dns?: HostDns;
  private routes: string[] = [];
  private malformed = 0;
  private readonly tunIp: string;
  private readonly tunIp6?: string;

  constructor(
    private readonly opts: RootOptions,
    private readonly journal: Journal,
    private readonly platform: Platform,
  ) {
    super();
    this.tunIp = nth(opts.tunCidr, 1);
    this.tunIp6 = opts.tunCidr6 ? nth(opts.tunCidr6, 1) : undefined;
  }

  private record(entry: JournalEntry): void {
    this.journal.record(entry);
  }

  private mark(step: string): void {
    this.marks[step] = Math.round(performance.now() - this.startedAt);
  }

  async start(): Promise<void> {
    let grant: SessionGrant__Output;
    try {
      // Nothing on the host changes before the session is granted: a root daemon whose user daemon never comes leaves nothing behind.
      const until = Date.now() + SESSION_WAIT_MS;
      this.startedAt = performance.now();
      await waitForSocket(this.opts.userSocket, until);
      if (this.opts.callerUid !== undefined) validateUserSocket(this.opts.userSocket, this.opts.callerUid, true);
      this.session = new SessionWatch(this.opts.userSocket);
      grant = await this.session.start(Math.max(1000, until - Date.now()));
    } catch (err) {
      if (err instanceof RdbgError && err.code === Codes.PERMISSION) throw err;
      throw new RdbgError(Codes.DAEMON_START, `the root daemon cannot get a session from the user daemon: ${errorMessage(err)}`, 'is "rdbg connect" running as the same user?');
    }
    const cluster = grant.cluster!;
    this.mark('granted');
    // The data plane's connection opens now, while the device and routes are set up: the first flow finds it ready.
    const dp = new DataPlaneClient({ fileLimit: openFileLimit(), rawFlowsMax: this.opts.rawFlowsMax });
    this.dataPlane = dp;
    const useGrant = (g: SessionGrant__Output): void => {
      if (g.data_address) dp.use({ address: g.data_address, session: g.session_id, direct: g.raw_flows });
    };
    useGrant(grant);
    this.session.on('grant', useGrant);
    const plan = planRoutes({
      serviceSubnets: cluster.service_subnets,
      podSubnets: cluster.pod_subnets,
      alsoProxy: this.opts.alsoProxy,
      neverProxy: this.opts.neverProxy,
      managerAddresses: grant.manager_addresses,
      existing: this.platform.routes(),
      tunName: this.opts.tunName,
      allowConflicts: this.opts.allowConflicts,
    });
    // The manager's own address must keep its route, or the tunnel would route into itself.
    for (const pin of plan.pins) {
      const r = this.platform.routeTo(pin.ip);
      if (!r) continue;
      const cidr = `${pin.ip}/${pin.ip.includes(':') ? 128 : 32}`;
      this.record({ id: `route:${cidr}`, kind: 'route', data: { cidr, dev: r.dev } });
      this.platform.addRoute(cidr, r.dev, r.via);
    }

    this.record({ id: `tun:${this.opts.tunName}`, kind: 'tun', data: { name: this.opts.tunName } });
    this.tun = this.platform.openTun(this.opts.tunName, this.opts.tunReader);
    const addresses = [`${this.tunIp}/${this.opts.tunCidr.bits}`, ...(this.tunIp6 ? [`${this.tunIp6}/${this.opts.tunCidr6!.bits}`] : [])];
    const routes = plan.routes.filter((c) => c.family === 4 || this.tunIp6).map((c) => c.text);
    // Journalled before they are made: a crash halfway leaves nothing the next start cannot undo.
    for (const cidr of routes) this.record({ id: `route:${cidr}`, kind: 'route', data: { cidr, dev: this.tun.name } });
    this.platform.configureTun(this.tun.name, { addresses, mtu: MTU, txqueuelen: TXQUEUELEN, routes });
    this.routes.push(...routes);
    this.mark('routed');

    const write = (pkt: Buffer): boolean => this.tun!.write(pkt);
    const fakes = (c: Cidr | undefined, count: number): string[] => (c ? Array.from({ length: count }, (_, i) => nth(c, i + 2)) : []);
    this.nat = new TcpNat({
      listen4: this.tunIp,
      listen6: this.tunIp6,
      fakes4: fakes(this.opts.tunCidr, Math.min(200, 2 ** (32 - this.opts.tunCidr.bits) - 3)),
      fakes6: fakes(this.opts.tunCidr6, 200),
      listenPort: NAT_PORT,
      write,
      dialer: {
        dial: (host, port, source) => dp.tcp(host, port, source),
      },
    });
    await this.nat.start();
    if (this.opts.tcpCapture !== 'tun') {
      const redirect = new TcpRedirect({ dev: this.tun.name, ipv6: !!this.tunIp6, write, dialer: { dial: (host, port, source) => dp.tcp(host, port, source) } });
      this.record({ id: `netfilter:${this.tun.name}`, kind: 'netfilter', data: { dev: this.tun.name } });
      if (await redirect.start()) this.redirect = redirect;
      else this.journal.remove(`netfilter:${this.tun.name}`);
    }
    this.mark('captured');
    this.udp = new UdpRelay({ dial: (host, port, source) => dp.udp(host, port, source) }, write);
    this.tun.start((buf) => this.onPacket(buf));

    this.dns = new HostDns({
      mode: this.opts.dnsMode,
      resolvConf: this.opts.resolvConf,
      listen: [this.tunIp, ...(this.tunIp6 ? [this.tunIp6] : [])],
      tunName: this.tun.name,
      journal: this.journal,
      cluster,
      include: this.opts.dnsInclude,
      exclude: this.opts.dnsExclude,
      // Straight to the manager's data plane; the user daemon's gRPC relay is the fallback.
      lookup: (name, qtype) => dp.dns(name, qtype).catch(() => this.session!.lookup(name, qtype)),
    });
    await this.dns.start();
    this.session.on('grant', (g: SessionGrant__Output) => {
      if (!g.cluster) return;
      this.dns?.update(g.cluster);
      this.followSubnets(g);
    });
    // Without the user daemon there is no session to carry flows: after a grace
    // period (a restart of the user daemon) give the laptop back its network.
    let orphaned: NodeJS.Timeout | undefined;
    this.session.on('userd-lost', () => {
      orphaned ??= setTimeout(() => this.emit('fatal', 'the user daemon is gone'), USERD_GRACE_MS);
    });
    this.session.on('grant', () => {
      clearTimeout(orphaned);
      orphaned = undefined;
    });
    this.mark('dns');
    log.info('root daemon ready', { tun: this.tun.name, address: this.tunIp, routes: this.routes, dns: this.dns.mode, ms: this.marks });
  }

  /** The manager saw the cluster's subnets change (a new ServiceCIDR, a new node): route what is new, drop what is gone. */
  private followSubnets(g: SessionGrant__Output): void {
    let plan;
    try {
      plan = planRoutes({
        serviceSubnets: g.cluster!.service_subnets,
        podSubnets: g.cluster!.pod_subnets,
        alsoProxy: this.opts.alsoProxy,
        neverProxy: this.opts.neverProxy,
        managerAddresses: g.manager_addresses,
        existing: this.platform.routes().filter((r) => r.dev !== this.opts.tunName),
        tunName: this.opts.tunName,
        allowConflicts: this.opts.allowConflicts,
      });
    } catch (err) {
      log.warn('the cluster\'s new subnets are not routed', { err: errorMessage(err) });
      return;
    }
    const wanted = plan.routes.filter((c) => c.family === 4 || this.tunIp6).map((c) => c.text);
    for (const cidr of wanted.filter((c) => !this.routes.includes(c))) {
      this.record({ id: `route:${cidr}`, kind: 'route', data: { cidr, dev: this.tun!.name } });
      this.platform.addRoute(cidr, this.tun!.name);
      this.routes.push(cidr);
      log.info('route added: the cluster grew', { cidr });
    }
    for (const cidr of this.routes.filter((c) => !wanted.includes(c))) {
      try {
        this.platform.deleteRoute(cidr, this.tun!.name);
      } catch (err) {
        log.warn('could not remove a route', { cidr, err: errorMessage(err) });
      }
      this.journal.remove(`route:${cidr}`);
      this.routes.splice(this.routes.indexOf(cidr), 1);
      log.info('route removed: the cluster shrank', { cidr });
    }
  }

  private onPacket(buf: Buffer): void {
    const p = parsePacket(buf);
    if (!p) {
      this.malformed++;
      return;
    }
    if (p.proto === PROTO_TCP) this.nat!.onPacket(p);
    else if (p.proto === PROTO_UDP) this.udp!.onPacket(p);
    // ICMP and anything else to cluster addresses is not carried (see README: ping).
  }

  status(): RootStatus {
    const t = this.tun?.stats;
    const d = this.dns?.counters();
    const u = this.udp?.table();
    return {
      tun_device: this.tun?.name ?? '',
      tun_address: this.tunIp,
      routes: this.routes.map((cidr) => ({ cidr, device: this.tun?.name ?? '' })),
      dns_mode: this.dns?.mode ?? 'none',
      dns_address: this.dns?.address || this.tunIp,
      tcp_flows: (this.nat?.active ?? 0) + (this.redirect?.active ?? 0),
      tcp_capture: this.redirect ? 'kernel' : 'tun',
      udp_flows: this.udp?.active ?? 0,
      udp_flow_limit: u?.max ?? 0,
      udp_source_limit: u?.perSource ?? 0,
      udp_evicted_source_limit: u?.evictedSourceLimit ?? 0,
      udp_evicted_table_full: u?.evictedTableFull ?? 0,
      packets_in: t?.read ?? 0,
      packets_out: t?.written ?? 0,
      packets_dropped: t?.dropped ?? 0,
      dns_queries: d?.queries ?? 0,
      pid: process.pid,
      session_state: this.session?.grant?.state ?? 'UNKNOWN',
      flows_refused: (this.nat?.stats.refused ?? 0) + (this.redirect?.stats.refused ?? 0),
      malformed_packets: this.malformed,
    };
  }

  async stop(): Promise<void> {
    await this.dns?.stop().catch((err: Error) => log.warn('DNS restore failed', { err: err.message }));
    this.udp?.close();
    this.redirect?.close();
    if (this.redirect) this.journal.remove(`netfilter:${this.tun!.name}`);
    this.nat?.close();
    this.dataPlane?.close();
    this.session?.close();
    for (const cidr of this.routes.reverse()) {
      try {
        this.platform.deleteRoute(cidr, this.tun?.name);
      } catch {
        // gone with the device
      }
      this.journal.remove(`route:${cidr}`);
    }
    this.routes = [];
    this.tun?.close();
    if (this.tun && this.platform.linkExists(this.tun.name)) this.platform.deleteLink(this.tun.name);
    this.journal.remove(`tun:${this.opts.tunName}`);
    // Pinned manager routes and anything else still journalled.
    for (const e of this.journal.entries().reverse()) {
      if (e.kind !== 'route') continue;
      try {
        this.platform.deleteRoute(e.data.cidr, e.data.dev);
      } catch {
        // already gone
      }
      this.journal.remove(e.id);
    }
  }
}

/** Resolves when a file exists at path (the user daemon binds its socket once its session is up), polling every 5 ms (a stat). */
async function waitForSocket(path: string, until: number): Promise<void> {
  while (!existsSync(path)) {
    if (Date.now() > until) throw new Error(`no user daemon socket at ${path}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
