/**
 * rdbg's PodForwarder against `kubectl port-forward`, to the same tcp-echo
 * pod in the same run, both from the rdbg-laptop netns of the test cluster
 * (re-executes itself there). Each forwarder runs in its own process, as it
 * would in real use. Prints a Markdown table and writes
 * bench/results/kube-forward.{json,md}. Figures are medians over alternating
 * rounds (BENCH_ROUNDS, default 3): the machine is shared and noisy.
 * rdbg uses its default protocol (SPDY tunnelled over WebSocket when the
 * apiserver offers it); BENCH_V4=1 also measures rdbg forced to v4 (one
 * WebSocket per connection), in the same rounds, for comparison.
 *
 *   node dist/bench/kube-forward.js
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadKube } from '../src/kube/config';
import { PodForwarder } from '../src/kube/forwarder';
import { Cluster, readClusterEnv, sampleApp } from '../test/cluster-tier/cluster-helper';
import { bulkEcho, firstByte, percentile, pingPong } from '../test/helpers/echo-load';
import { signedPercent, type BenchRow } from './row';
import { inLaptopNetns } from './kube-env';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BULK_BYTES = Number(process.env.BENCH_BULK_MIB ?? 64) * 1024 * 1024;
const PINGS = Number(process.env.BENCH_PINGS ?? 2000);
const CONNECTS = 20;

const median = (xs: number[]): number => percentile(xs, 50);

/** The cluster processes on the data path, by a word of their command line. */
const CLUSTER_PROCS = { apiserver: 'kube-apiserver', kubelet: 'kubelet', containerd: 'containerd' } as const;
type CpuWho = keyof typeof CLUSTER_PROCS | 'forwarder' | 'client';

function findPid(word: string): number | undefined {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (argv.slice(0, 3).some((a) => a === word || a.endsWith(`/${word}`))) return Number(d);
    } catch { /* gone */ }
  }
  return undefined;
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

/** Child mode: a PodForwarder in its own process; prints its port, runs until stdin closes. */
async function serveForwarder(kubeconfig: string, namespace: string, selector: string, port: number, protocol: 'auto' | 'v4'): Promise<void> {
  const f = await PodForwarder.start(loadKube({ kubeconfig }), { namespace, selector, port, protocol });
  process.stdout.write(`${JSON.stringify({ port: f.port })}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => void f.close().then(() => process.exit(0)));
}

/** Starts a child and resolves with the local port it reports on stdout or stderr. */
function startForwarder(cmd: string, args: string[], portOf: (out: string) => number | undefined): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd}: no port after 30 s: ${out}`)), 30_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      const port = portOf(out);
      if (port) { clearTimeout(timer); resolve({ child, port }); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => reject(new Error(`${cmd} exited (${code}): ${out}`)));
  });
}

type Path = 'kubectl' | 'rdbg' | 'rdbg-v4';

interface PathFigures { mbps: number[]; p50: number[]; p99: number[]; connect: number[]; cpu: Array<Partial<Record<CpuWho, number>>> }

/** Runs every measurement once; `pids` are the processes whose CPU time the bulk echo is charged. */
async function measure(port: number, into: PathFigures, pids: Partial<Record<CpuWho, number>>): Promise<void> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
  const bulk = await bulkEcho(port, BULK_BYTES);
  if (bulk.sentSha !== bulk.gotSha) throw new Error('bulk echo: checksum mismatch');
  into.mbps.push(bulk.mbps);
  into.cpu.push(Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, +(cpuSeconds(pid) - before[k]).toFixed(2)])));
  const rtt = await pingPong(port, PINGS);
  into.p50.push(percentile(rtt, 50));
  into.p99.push(percentile(rtt, 99));
  const conns: number[] = [];
  for (let i = 0; i < CONNECTS; i++) conns.push(await firstByte(port));
  into.connect.push(median(conns));
}

async function main(): Promise<void> {
  const info = readClusterEnv();
  inLaptopNetns(info);
  const c = new Cluster(info);
  const ns = `pf-bench-${randomBytes(3).toString('hex')}`;
  const children: ChildProcess[] = [];
  await c.kubectl(['create', 'namespace', ns]);
  try {
    await c.apply(ns, sampleApp({ name: 'tcp-echo', image: c.image('tcp-echo'), port: 9000 }));
    await c.rollout(ns, 'tcp-echo');
    const pods = await c.kubectlJson<{ items: Array<{ metadata: { name: string } }> }>(['-n', ns, 'get', 'pods', '-l', 'app=tcp-echo']);
    const pod = pods.items[0].metadata.name;

    const kubectl = await startForwarder(info.KUBECTL, ['--kubeconfig', info.ADMIN_KUBECONFIG, '-n', ns, 'port-forward', `pod/${pod}`, ':9000'],
      (out) => Number(/Forwarding from 127\.0\.0\.1:(\d+)/.exec(out)?.[1]) || undefined);
    children.push(kubectl.child);
    // BENCH_FORWARDER_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", profiles the forwarder.
    const nodeArgs = (process.env.BENCH_FORWARDER_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const serve = (protocol: string): Promise<{ child: ChildProcess; port: number }> => startForwarder(process.execPath,
      [...nodeArgs, __filename, '--serve', info.ADMIN_KUBECONFIG, ns, 'app=tcp-echo', '9000', protocol],
      (out) => Number(/"port":(\d+)/.exec(out)?.[1]) || undefined);
    const forwarders: Partial<Record<Path, { child: ChildProcess; port: number }>> = { kubectl, rdbg: await serve('auto') };
    children.push(forwarders.rdbg!.child);
    if (process.env.BENCH_V4 === '1') {
      forwarders['rdbg-v4'] = await serve('v4');
      children.push(forwarders['rdbg-v4'].child);
    }
    const paths = Object.keys(forwarders) as Path[];

    const figures = Object.fromEntries(paths.map((p) => [p, { mbps: [], p50: [], p99: [], connect: [], cpu: [] }])) as unknown as Record<Path, PathFigures>;
    const shared: Partial<Record<CpuWho, number>> = { client: process.pid };
    for (const [k, word] of Object.entries(CLUSTER_PROCS)) shared[k as CpuWho] = findPid(word);
    for (const p of paths) await pingPong(forwarders[p]!.port, 200); // warm every path up
    for (let r = 0; r < ROUNDS; r++) {
      // Rotate the order: no path always runs first (or after the same one).
      const order = paths.map((_, i) => paths[(i + r) % paths.length]);
      for (const path of order) {
        process.stderr.write(`round ${r + 1}/${ROUNDS}: ${path}\n`);
        await measure(forwarders[path]!.port, figures[path], { ...shared, forwarder: forwarders[path]!.child.pid });
      }
    }

    const m = (p: Path, k: Exclude<keyof PathFigures, 'cpu'>): number => median(figures[p][k]);
    const tput = m('rdbg', 'mbps') / m('kubectl', 'mbps');
    const lat50 = m('rdbg', 'p50') / m('kubectl', 'p50');
    const lat99 = m('rdbg', 'p99') / m('kubectl', 'p99');
    const rows: BenchRow[] = [
      { metric: `echo throughput, ${BULK_BYTES >> 20} MiB each way at once (MB/s)`, path: 'pods/portforward', value: m('rdbg', 'mbps'), reference: m('kubectl', 'mbps'), vs: `${Math.round(tput * 100)}%`, goal: '>= 90%', pass: tput >= 0.9 },
      { metric: '1-byte round trip, median (us)', path: 'pods/portforward', value: m('rdbg', 'p50'), reference: m('kubectl', 'p50'), vs: signedPercent(lat50), goal: '<= +10%', pass: lat50 <= 1.1 },
      { metric: '1-byte round trip, p99 (us)', path: 'pods/portforward', value: m('rdbg', 'p99'), reference: m('kubectl', 'p99'), vs: signedPercent(lat99), goal: '<= +10%', pass: lat99 <= 1.1 },
      { metric: 'new connection to first echoed byte, median (us)', path: 'pods/portforward', value: m('rdbg', 'connect'), reference: m('kubectl', 'connect'), vs: signedPercent(m('rdbg', 'connect') / m('kubectl', 'connect')), goal: 'report', pass: true },
    ];
    if (figures['rdbg-v4']) {
      const v = (k: Exclude<keyof PathFigures, 'cpu'>): number => m('rdbg-v4', k);
      rows.push(
        { metric: 'v4 (one WebSocket per connection): echo throughput (MB/s)', path: 'pods/portforward v4', value: v('mbps'), reference: m('kubectl', 'mbps'), vs: `${Math.round(v('mbps') / m('kubectl', 'mbps') * 100)}%`, goal: 'report', pass: true },
        { metric: 'v4: 1-byte round trip, median (us)', path: 'pods/portforward v4', value: v('p50'), reference: m('kubectl', 'p50'), vs: signedPercent(v('p50') / m('kubectl', 'p50')), goal: 'report', pass: true },
        { metric: 'v4: new connection to first echoed byte, median (us)', path: 'pods/portforward v4', value: v('connect'), reference: m('kubectl', 'connect'), vs: signedPercent(v('connect') / m('kubectl', 'connect')), goal: 'report', pass: true },
      );
    }
    const fmt = (n: number): string => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
    const table = [
      '| metric | path | rdbg PodForwarder | kubectl port-forward | rdbg vs kubectl | goal | met |',
      '|---|---|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.metric} | ${r.path} | ${fmt(r.value)} | ${fmt(r.reference)} | ${r.vs} | ${r.goal} | ${r.pass ? 'yes' : 'NO'} |`),
    ].join('\n');
    // Where the CPU goes during one bulk echo (median seconds per process): the machine's cores are the limit.
    const cpuTable = paths.map((p) => {
      const who = Object.keys(figures[p].cpu[0] ?? {}) as CpuWho[];
      return `${p}: ${who.map((w) => `${w} ${median(figures[p].cpu.map((c) => c[w] ?? 0)).toFixed(2)}`).join(', ')}`;
    }).join('\n');
    process.stdout.write(`\n${table}\n\nCPU s per bulk echo (median):\n${cpuTable}\n\nrounds: ${ROUNDS}; raw: ${JSON.stringify(figures)}\n`);
    const dir = join(__dirname, '../../bench/results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'kube-forward.json'), JSON.stringify({ date: new Date().toISOString(), rounds: ROUNDS, bulkBytes: BULK_BYTES, pings: PINGS, rows, raw: figures }, null, 2) + '\n');
    writeFileSync(join(dir, 'kube-forward.md'), table + '\n');
  } finally {
    // Our forwarder exits cleanly when its stdin closes (so --cpu-prof can write); kubectl needs a signal.
    await Promise.all(children.map((child) => new Promise<void>((resolve) => {
      if (child.exitCode !== null) { resolve(); return; }
      const timer = setTimeout(() => { child.kill('SIGTERM'); resolve(); }, 3000);
      child.once('exit', () => { clearTimeout(timer); resolve(); });
      child.stdin?.end();
    })));
    await c.kubectl(['delete', 'namespace', ns, '--wait=false'], { check: false });
  }
}

if (process.argv[2] === '--serve') {
  const [kubeconfig, ns, selector, port, protocol] = process.argv.slice(3);
  void serveForwarder(kubeconfig, ns, selector, Number(port), protocol === 'v4' ? 'v4' : 'auto');
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`kube-forward bench: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}
