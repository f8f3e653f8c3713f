import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Netns, link, waitForLine, waitForLog } from './netns';
import { rootPaths, rootSessionId } from '../../src/core/paths';

/** The built package's entry point and test programs. */
export const RDBG = resolve(__dirname, '../../bin/rdbg.js');
export const SERVERS = resolve(__dirname, 'servers.js');
export const NETCLIENT = resolve(__dirname, 'netclient.js');

/** Addresses of the sandbox's pretend cluster (all inside its own namespaces). */
export const CLUSTER = {
  serviceCidr: '198.19.128.0/20',
  podCidr: '198.19.0.0/20',
  echoIp: '198.19.128.10',
  echoIp6: '2001:db8:96::10',
  otherIp: '198.19.128.11',
  podIps: ['198.19.0.5', '198.19.0.6'],
  closedPort: 81,
  managerPort: 8081,
};

let counter = 0;

/**
 * A root daemon killed with its namespace leaves its state in /var/run/rdbg
 * (its journal names files and devices of a namespace that is gone). Call
 * while the namespace lives; the function returned removes that state.
 */
export function forgetRootState(ns: Netns, home: string): () => void {
  let paths: ReturnType<typeof rootPaths>;
  try {
    paths = rootPaths(rootSessionId(0, join(home, 'daemon.sock'), ns.exec('readlink', ['/proc/self/ns/net']).trim()));
  } catch {
    return () => undefined; // the namespace is gone already
  }
  return () => {
    for (const p of [paths.dir, paths.socket, paths.exitRecord]) rmSync(p, { recursive: true, force: true });
  };
}

export interface Laptop {
  ns: Netns;
  home: string; // RDBG_HOME of this laptop's rdbg
  managerAddress: string;
  /** `env` adds variables (NAME=VALUE) for this command and the daemons it starts. */
  rdbg(args: string[], timeoutMs?: number, env?: string[]): Promise<{ code: number; stdout: string; stderr: string; ms: number }>;
}

/**
 * A `cluster` namespace with real servers, dnsmasq answering cluster names
 * and a standalone traffic manager, and `laptop` namespaces joined to it by
 * veth pairs. Everything is removed by destroy(), also after a failure.
 */
export class Sandbox {
  readonly id: string;
  readonly cluster: Netns;
  readonly laptops: Laptop[] = [];
  private readonly extra: Netns[] = [];
  manager?: ChildProcess;
  /** Flags the manager gets besides the sandbox's own (e.g. --allow-cidr). */
  managerArgs: string[] = [];
  private dnsmasq?: ChildProcess;

  private constructor(id: string) {
    this.id = id;
    this.cluster = Netns.create(`rdbg${id}c`);
  }

  static async create(opts: { laptops?: number; extraServers?: boolean; managerArgs?: string[] } = {}): Promise<Sandbox> {
    const id = `${process.pid % 10000}${counter++}`;
    const sb = new Sandbox(id);
    sb.managerArgs = opts.managerArgs ?? [];
    try {
      await sb.setup(opts.laptops ?? 1);
      if (opts.extraServers) await sb.startExtraServers();
    } catch (err) {
      sb.destroy();
      throw err;
    }
    return sb;
  }

  private async setup(laptops: number): Promise<void> {
    const c = this.cluster;
    for (const addr of [CLUSTER.echoIp, CLUSTER.otherIp, ...CLUSTER.podIps]) c.exec('ip', ['addr', 'add', `${addr}/32`, 'dev', 'lo']);
    c.exec('ip', ['-6', 'addr', 'add', `${CLUSTER.echoIp6}/128`, 'dev', 'lo']);
    for (let i = 1; i <= laptops; i++) this.addLaptop(i);
    this.dnsmasq = c.spawn('dnsmasq', [
      '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', '--listen-address=127.0.0.1', '--port=53',
      '--local=/cluster.local/', '--log-facility=-', '--local-ttl=5',
      `--host-record=echo.default.svc.cluster.local,${CLUSTER.echoIp},${CLUSTER.echoIp6}`,
      `--host-record=other.prod.svc.cluster.local,${CLUSTER.otherIp}`,
      // A hostile record: the manager's dial policy must refuse what it points at.
      '--host-record=loopback.default.svc.cluster.local,127.0.0.1',
      ...CLUSTER.podIps.map((p) => `--host-record=headless.default.svc.cluster.local,${p}`),
      '--srv-host=_http._tcp.echo.default.svc.cluster.local,echo.default.svc.cluster.local,80,0,100',
    ]);
    const servers = c.spawn('node', [SERVERS, CLUSTER.echoIp, CLUSTER.otherIp, CLUSTER.echoIp6, ...CLUSTER.podIps]);
    await waitForLine(servers, (l) => l === 'READY', 15_000, 'test servers');
    await this.startManager();
  }

  /** redis-server and an iperf3 server on the second service address. */
  private async startExtraServers(): Promise<void> {
    const redis = this.cluster.spawn('redis-server', ['--bind', CLUSTER.otherIp, '--port', '6379', '--save', '', '--appendonly', 'no', '--protected-mode', 'no']);
    await waitForLine(redis, (l) => /Ready to accept connections/.test(l), 15_000, 'redis-server');
    this.cluster.spawn('iperf3', ['-s', '-B', CLUSTER.otherIp, '-p', '5201']);
    await new Promise((r) => setTimeout(r, 300));
  }

  /** The laptop's own, original resolver: answers names that have nothing to do with the cluster. */
  private startLaptopResolver(ns: Netns): ChildProcess {
    return ns.spawn('dnsmasq', [
      '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', '--listen-address=127.0.0.53', '--port=53',
      '--host-record=www.example.test,192.0.2.80', '--local=/test/', '--log-facility=-',
    ]);
  }

  private addLaptop(i: number): Laptop {
    const ns = Netns.create(`rdbg${this.id}l${i}`, 'nameserver 127.0.0.53\nsearch example.test\noptions edns0\n');
    this.startLaptopResolver(ns);
    link(this.cluster, `to-l${i}`, `198.18.${i}.1/24`, ns, 'eth0', `198.18.${i}.2/24`);
    const home = mkdtempSync(join(tmpdir(), `rdbg-home-${this.id}-${i}-`));
    const managerAddress = `198.18.${i}.1:${CLUSTER.managerPort}`;
    const laptop: Laptop = {
      ns,
      home,
      managerAddress,
      rdbg: (args, timeoutMs = 60_000, env = []) => ns.run('env', [`RDBG_HOME=${home}`, ...env, RDBG, ...args], timeoutMs),
    };
    this.laptops.push(laptop);
    return laptop;
  }

  get laptop(): Laptop {
    return this.laptops[0];
  }

  async startManager(): Promise<void> {
    this.manager = this.cluster.spawn('node', [
      RDBG, 'manager', 'serve', '--listen', `0.0.0.0:${CLUSTER.managerPort}`,
      '--service-cidr', CLUSTER.serviceCidr, '--pod-cidr', CLUSTER.podCidr, '--cluster-domain', 'cluster.local',
      '--cluster-namespace', 'default', '--cluster-namespace', 'prod',
      // The IPv6 service address lies outside the announced subnets (tests reach it with --also-proxy).
      '--allow-cidr', '2001:db8:96::/64', ...this.managerArgs,
    ]);
    const m = this.manager;
    await waitForLog(m, 'traffic manager listening', 15_000, 'manager');
    m.stderr!.resume();
  }

  /** Kill the manager abruptly (as a crashed pod would be). */
  killManager(): Promise<void> {
    const m = this.manager;
    if (!m || m.exitCode !== null) return Promise.resolve();
    return new Promise((r) => {
      m.once('exit', () => r());
      // `ip netns exec` execs node, so the child is the manager itself.
      m.kill('SIGKILL');
    });
  }

  /** Another namespace joined to the cluster (e.g. a `pod`), addressed 198.18.N.0/24. */
  addNamespace(role: string, n: number): Netns {
    const ns = Netns.create(`rdbg${this.id}${role}`, 'nameserver 198.18.255.254\n');
    link(this.cluster, `to-${role}`, `198.18.${n}.1/24`, ns, 'eth0', `198.18.${n}.2/24`);
    this.extra.push(ns);
    return ns;
  }

  destroy(): void {
    this.manager?.kill('SIGKILL');
    this.dnsmasq?.kill('SIGKILL');
    for (const l of this.laptops) {
      const forget = forgetRootState(l.ns, l.home);
      l.ns.destroy();
      forget();
      rmSync(l.home, { recursive: true, force: true });
    }
    for (const ns of this.extra) ns.destroy();
    this.cluster.destroy();
  }
}
