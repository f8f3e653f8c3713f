import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Journal } from '../../daemon/root/journal';
import { Netns, link, waitForLine, waitForLog } from '../helpers/netns';

/**
 * The DNS sandbox: a `cluster` namespace with a real dnsmasq answering the
 * cluster's names and a real standalone manager resolving through it; a
 * `laptop` namespace joined by a veth, with its own original resolver (a
 * second dnsmasq) in its resolv.conf (/etc/netns/NAME/resolv.conf, never the
 * machine's). The laptop's rdbg resolver runs there as test/helpers/dns-runner.
 * destroy() removes everything, also after a failure.
 */
export const DNS = {
  clusterVeth: '198.18.77.1',
  laptopVeth: '198.18.77.2',
  managerPort: 8081,
  original: '198.18.78.53', // the laptop's own resolver
  loopForwarder: '198.18.78.54',
  nextNetwork: '198.18.78.55', // the resolver of the network the laptop moves to (resolv.conf rewritten) // a resolver that forwards everything back to rdbg (loop test)
  rdbg: '198.18.79.1', // where the laptop's rdbg resolver listens (the TUN address in real life)
  rdbgLoop: '198.18.79.2',
  rdbg6: '2001:db8:79::1', // rdbg's resolver on IPv6 too
  serviceCidr: '198.19.128.0/20',
  serviceCidr6: '2001:db8:96::/112',
  podCidr: '198.19.0.0/20',
  echo: '198.19.128.10',
  echo6: '2001:db8:96::10',
  headless: ['198.19.0.5', '198.19.0.6'],
  www: '198.18.78.80',
  www2: '198.18.78.81',
  benchIp: '198.19.128.99',
};
export const ORIGINAL_RESOLV_CONF = `# the laptop's own resolver\nnameserver ${DNS.original}\nsearch corp.test\noptions ndots:1 timeout:2 attempts:2\n`;
export const CLUSTER_SEARCH = ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'];

const RDBG = resolve(__dirname, '../../bin/rdbg.js');
export const DNS_RUNNER = resolve(__dirname, '../helpers/dns-runner.js');
let counter = 0;

export class DnsSandbox {
  readonly cluster: Netns;
  readonly laptop: Netns;
  readonly home: string;
  readonly journal: Journal;
  private readonly procs: ChildProcess[] = [];
  private manager?: ChildProcess;

  private constructor(readonly id: string) {
    this.home = mkdtempSync(join(tmpdir(), `rdbgdns-${id}-`));
    this.journal = new Journal(join(this.home, 'journal.json'));
    this.cluster = Netns.create(`rdbgdns${id}c`, 'nameserver 127.0.0.1\n');
    try {
      this.laptop = Netns.create(`rdbgdns${id}l`, ORIGINAL_RESOLV_CONF);
    } catch (err) {
      this.cluster.destroy();
      throw err;
    }
  }

  static async create(): Promise<DnsSandbox> {
    const sb = new DnsSandbox(`${process.pid % 10000}${counter++}`);
    try {
      await sb.setup();
    } catch (err) {
      sb.destroy();
      throw err;
    }
    return sb;
  }

  /** The laptop's resolv.conf as processes inside the laptop namespace see it. */
  get resolvConfPath(): string {
    return `/etc/netns/${this.laptop.name}/resolv.conf`;
  }

  readResolvConf(): string {
    return readFileSync(this.resolvConfPath, 'utf8');
  }

  private async setup(): Promise<void> {
    const c = this.cluster;
    const l = this.laptop;
    link(c, 'dnsc0', `${DNS.clusterVeth}/24`, l, 'dnsl0', `${DNS.laptopVeth}/24`);
    for (const a of [DNS.original, DNS.loopForwarder, DNS.nextNetwork, DNS.rdbg, DNS.rdbgLoop]) l.exec('ip', ['addr', 'add', `${a}/32`, 'dev', 'lo']);
    l.exec('ip', ['-6', 'addr', 'add', `${DNS.rdbg6}/128`, 'dev', 'lo']);
    const D = 'svc.cluster.local';
    this.start(c, 'dnsmasq', [
      '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', '--log-facility=-', '--pid-file=',
      '--listen-address=127.0.0.1', `--listen-address=${DNS.clusterVeth}`, '--port=53', '--local=/cluster.local/',
      '--local-ttl=30', // CoreDNS answers with 5-30 s; dnsmasq's default for its own records is 0
      `--host-record=echo.default.${D},${DNS.echo},${DNS.echo6}`,
      ...DNS.headless.map((a) => `--host-record=headless.default.${D},${a}`),
      `--srv-host=_http._tcp.echo.default.${D},echo.default.${D},80,0,100`,
      `--txt-record=echo.default.${D},hello from the cluster`,
      // Everything else NXDOMAIN, as CoreDNS (forwarding upstream) would answer a bare `nosuch.default`.
      '--address=/#/',
      `--cname=alias.default.${D},echo.default.${D}`,
      `--address=/bench.${D}/${DNS.benchIp}`,
    ]);
    this.start(l, 'dnsmasq', [
      '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', '--log-facility=-', '--pid-file=',
      `--listen-address=${DNS.original}`, '--port=53', '--local=/example.test/',
      `--address=/www.example.test/${DNS.www}`,
    ]);
    this.start(l, 'dnsmasq', [
      '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', '--log-facility=-', '--pid-file=',
      `--listen-address=${DNS.nextNetwork}`, '--port=53', '--local=/example.test/', `--address=/www2.example.test/${DNS.www2}`,
    ]);
    this.start(l, 'dnsmasq', [
      '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', '--log-facility=-', '--pid-file=',
      `--listen-address=${DNS.loopForwarder}`, '--port=53', `--server=${DNS.rdbgLoop}`,
    ]);
    const m = this.start(c, 'node', [
      RDBG, 'manager', 'serve', '--listen', `${DNS.clusterVeth}:${DNS.managerPort}`,
      '--service-cidr', DNS.serviceCidr, '--service-cidr', DNS.serviceCidr6, '--pod-cidr', DNS.podCidr, '--cluster-domain', 'cluster.local',
    ]);
    this.manager = m;
    await waitForLog(m, 'traffic manager listening', 15_000, 'manager');
    await this.waitForDns(l, DNS.original, 'www.example.test');
    await this.waitForDns(l, DNS.clusterVeth, `echo.default.${D}`);
  }

  /** Kill the manager abruptly, as a crashed pod would be. */
  killManager(): Promise<void> {
    const m = this.manager;
    if (!m || m.exitCode !== null) return Promise.resolve();
    return new Promise((r) => {
      m.once('exit', () => r());
      m.kill('SIGKILL');
    });
  }

  private start(ns: Netns, cmd: string, args: string[]): ChildProcess {
    const p = ns.spawn(cmd, args);
    p.stdout?.resume();
    if (cmd !== 'node') p.stderr?.resume();
    this.procs.push(p);
    return p;
  }

  private async waitForDns(ns: Netns, server: string, name: string): Promise<void> {
    for (let i = 0; i < 50; i++) {
      const r = await ns.run('dig', [`@${server}`, name, '+short', '+time=1', '+tries=1']);
      if (r.code === 0 && r.stdout.trim() !== '') return;
      await new Promise((r2) => setTimeout(r2, 100));
    }
    throw new Error(`dnsmasq at ${server} does not answer ${name}`);
  }

  /** Start the laptop's rdbg resolver (dns-runner) on port 53 of `addresses`, forwarding to `upstreams`. */
  async startResolver(addresses: string[], upstreams: string[], watchResolvConf = false): Promise<{ proc: ChildProcess; ready: Record<string, unknown> }> {
    const args = {
      listen: addresses.map((address) => ({ address, port: 53 })), manager: `${DNS.clusterVeth}:${DNS.managerPort}`, upstreams, namespace: 'default', namespaces: ['default'],
      watch: watchResolvConf ? { path: this.resolvConfPath, journal: this.journal.path, nameserver: addresses[0], search: CLUSTER_SEARCH } : undefined,
    };
    const proc = this.start(this.laptop, 'node', [DNS_RUNNER, 'serve', JSON.stringify(args)]);
    proc.stderr?.resume();
    const line = await waitForLine(proc, (l) => l.startsWith('READY '), 15_000, 'dns-runner');
    return { proc, ready: JSON.parse(line.slice(6)) as Record<string, unknown> };
  }

  /** SIGTERM the resolver; resolves with the counters it printed. */
  stopResolver(proc: ChildProcess): Promise<Record<string, number>> {
    return new Promise((resolveCounters) => {
      let out = '';
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        resolveCounters({});
      }, 5000);
      proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      proc.once('exit', () => {
        clearTimeout(timer);
        const line = out.split('\n').find((l) => l.startsWith('COUNTERS '));
        resolveCounters(line ? (JSON.parse(line.slice(9)) as Record<string, number>) : {});
      });
      proc.kill('SIGTERM');
    });
  }

  destroy(): void {
    for (const p of this.procs) if (p.exitCode === null) p.kill('SIGKILL');
    this.laptop?.destroy();
    this.cluster.destroy();
    rmSync(this.home, { recursive: true, force: true });
  }
}
