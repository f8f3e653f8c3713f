import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CLUSTER, RDBG, Sandbox } from '../helpers/sandbox';
import { waitForLine, waitForLog, type Netns } from '../helpers/netns';
import { patternSha256 } from '../helpers/pattern';
import { curlBatch, curlSha, h2loadBatch, nghttpGet, redisBenchmarkBatch, redisSetGet, type Batch, type Run } from './clients';
import { sampleRss, type RssSample } from './rss';
import { relativeTrend } from './trend';
import { lineChartSvg } from './svg-chart';

// Soak: steady HTTP/1.1, HTTP/2 and Redis load from real clients through the
// laptop's TUN device and through a header intercept (a caller in the cluster
// -> the agent in a pod -> the laptop's local server, or the app without the
// header), for RDBG_SOAK_MINUTES (3 in `make test`, 30 in `make soak`). Every
// request counts; none may fail. Each rdbg process's RSS is sampled; the long
// form asserts it is flat over its last 20 minutes.

const MINUTES = Number(process.env.RDBG_SOAK_MINUTES ?? '3');
const OUT = process.env.RDBG_SOAK_OUT;
const LONG = MINUTES >= 25;
const SAMPLE_MS = LONG ? 30_000 : 10_000;
const CYCLE_MS = 1500;
const TREND_WINDOW_MIN = 20;
const MAX_TREND = 0.05;
const DUAL = resolve(__dirname, 'dual-http.js');
const POD_ADDR = '198.18.50.2';
const H2_PORT = 8080;
const BYTES = 1024 * 1024;

let sb: Sandbox;
let pod: Netns;
let agent: ChildProcess;
let docroot = '';

async function startAgent(): Promise<void> {
  agent = pod.spawn('node', [RDBG, 'agent', 'run', '--manager', '198.18.50.1:8081', '--workload', 'echo', '--namespace', 'default',
    '--app-port', '8080', '--listen-port', '9090', '--pod-name', 'echo-soak']);
  agent.stdout!.resume();
  await waitForLog(agent, 'linked to the traffic manager', 15_000, 'agent');
  agent.stderr!.resume();
}

async function dualServer(ns: Netns, port: number, name: string): Promise<void> {
  const p = ns.spawn('node', [DUAL, '127.0.0.1', String(port), name]);
  await waitForLine(p, (l) => l === 'READY', 10_000, name);
}

async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 300));
  }
  return check();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.before(async () => {
  sb = await Sandbox.create({ extraServers: true });
  docroot = mkdtempSync(join(tmpdir(), 'rdbg-soak-h2-'));
  writeFileSync(join(docroot, 'soak.txt'), 'h2 soak '.repeat(512));
  sb.cluster.spawn('nghttpd', ['--no-tls', '-d', docroot, '-a', CLUSTER.echoIp, String(H2_PORT)]);
  const h2Up = await eventually(async () => (await sb.cluster.run('nghttp', ['-t', '2', `http://${CLUSTER.echoIp}:${H2_PORT}/soak.txt`], 5000)).code === 0, 10_000);
  if (!h2Up) throw new Error('nghttpd did not start');

  pod = sb.addNamespace('p', 50);
  await dualServer(pod, 8080, 'app');
  await startAgent();
  await dualServer(sb.laptop.ns, 8081, 'laptop-soak');

  const c = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress, '--also-proxy', '2001:db8:96::/64']);
  if (c.code !== 0) throw new Error(`connect failed: ${c.stderr}\n${c.stdout}`);
  const i = await sb.laptop.rdbg(['intercept', 'echo', '--port', '8081:8080', '--header', 'x-dev=soak']);
  if (i.code !== 0) throw new Error(`intercept failed: ${i.stderr}\n${i.stdout}`);
  const diverted = await eventually(async () => {
    const r = await sb.cluster.run('curl', ['-sS', '--max-time', '5', '-H', 'x-dev: soak', `http://${POD_ADDR}:9090/`], 10_000);
    return r.stdout.startsWith('laptop-soak ');
  }, 15_000);
  if (!diverted) throw new Error('the intercept never took effect');
});
t.teardown(() => {
  sb?.destroy();
  if (docroot) rmSync(docroot, { recursive: true, force: true });
});

/** The rdbg processes to watch: both daemons from `rdbg status`, the manager and the agent from the sandbox. */
async function rdbgPids(): Promise<Record<string, number>> {
  const st = JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout) as { pid: number; root?: { pid?: number; watchdog_pid?: number } };
  const pids: Record<string, number> = { 'user daemon': st.pid, manager: sb.manager!.pid!, agent: agent.pid! };
  if (st.root?.pid) pids['root daemon'] = st.root.pid;
  if (st.root?.watchdog_pid) pids['root watchdog'] = st.root.watchdog_pid;
  return pids;
}

interface Tally {
  requests: number;
  failed: number;
  errors: string[];
}

t.test(`${MINUTES} min of steady load through the TUN and an intercept: no request fails, RSS stays flat`, async (t) => {
  const lap: Run = (cmd, args, ms) => sb.laptop.ns.run(cmd, args, ms);
  const cluster: Run = (cmd, args, ms) => sb.cluster.run(cmd, args, ms);
  const sha = await patternSha256(BYTES, 'soak');
  const hello = /^hello from (198\.19\.128\.10|2001:db8:96::10)\n$/;
  const viaLaptop = /^laptop-soak GET \/\S* dev=soak\n$/;
  const viaApp = /^app GET \/\S* dev=-\n$/;
  const podUrl = `http://${POD_ADDR}:9090`;

  const clients: Record<string, (cycle: number) => Promise<Batch>> = {
    'curl HTTP/1.1 (TUN)': () => curlBatch(lap, Array(5).fill('http://echo.default/'), Array(5).fill(hello)),
    'curl 1 MiB download (TUN)': () => curlSha(lap, `http://echo.default/bytes?n=${BYTES}&seed=soak`, sha),
    'h2load HTTP/2 (TUN)': () => h2loadBatch(lap, `http://${CLUSTER.echoIp}:${H2_PORT}/soak.txt`, 40),
    'redis-benchmark (TUN)': () => redisBenchmarkBatch(lap, CLUSTER.otherIp, 100, ['set', 'get']),
    'redis-cli (TUN, by name)': (n) => redisSetGet(lap, 'other.prod', `soak:${n % 100}`, `v${n}`),
    'curl HTTP/1.1 (intercept)': () => curlBatch(cluster, [`${podUrl}/a`, `${podUrl}/b`, `${podUrl}/c`, `${podUrl}/d`],
      [viaLaptop, viaApp, viaLaptop, viaApp], [['x-dev: soak'], [], ['x-dev: soak'], []]),
    'h2load HTTP/2 (intercept)': () => h2loadBatch(cluster, `${podUrl}/h2`, 20, ['-H', 'x-dev: soak']),
    'nghttp HTTP/2 (intercept)': async () => {
      const [a, b] = await Promise.all([nghttpGet(cluster, `${podUrl}/h2-laptop`, viaLaptop, ['x-dev: soak']), nghttpGet(cluster, `${podUrl}/h2-app`, viaApp)]);
      return { requests: a.requests + b.requests, failed: a.failed + b.failed, error: a.error ?? b.error };
    },
  };
  const tally: Record<string, Tally> = Object.fromEntries(Object.keys(clients).map((k) => [k, { requests: 0, failed: 0, errors: [] }]));

  const pids = await rdbgPids();
  t.comment(`watching ${JSON.stringify(pids)}`);
  const samples: RssSample[] = [];
  const start = Date.now();
  const minute = (): number => (Date.now() - start) / 60_000;
  samples.push(sampleRss(pids, 0));
  let nextSample = start + SAMPLE_MS;
  let cycles = 0;
  while (Date.now() < start + MINUTES * 60_000) {
    const began = Date.now();
    const n = cycles++;
    const results = await Promise.all(Object.entries(clients).map(async ([name, run]) => [name, await run(n)] as const));
    for (const [name, b] of results) {
      const s = tally[name];
      s.requests += b.requests;
      s.failed += b.failed;
      if (b.error && s.errors.length < 10) s.errors.push(`${minute().toFixed(2)} min: ${b.error}`);
    }
    if (Date.now() >= nextSample) {
      const s = sampleRss(pids, minute());
      samples.push(s);
      t.comment(`${s.minute.toFixed(1)} min: ${Object.entries(s.rss).map(([k, v]) => `${k} ${(v / 1e6).toFixed(1)} MB`).join(', ')}; ` +
        `failed so far ${Object.values(tally).reduce((a, x) => a + x.failed, 0)}`);
      nextSample += SAMPLE_MS;
    }
    await sleep(Math.max(0, CYCLE_MS - (Date.now() - began)));
  }
  samples.push(sampleRss(pids, minute()));

  const series = Object.keys(pids).map((name) => ({
    name,
    points: samples.filter((s) => s.rss[name] !== undefined).map((s) => ({ x: s.minute, y: s.rss[name] / 1e6 })),
  }));
  const rss = Object.fromEntries(series.map((s) => {
    const ys = s.points.map((p) => p.y);
    const tr = relativeTrend(s.points, TREND_WINDOW_MIN);
    const anonPoints = samples.filter((x) => x.anon?.[s.name] !== undefined).map((x) => ({ x: x.minute, y: x.anon![s.name] / 1e6 }));
    const anon = relativeTrend(anonPoints, TREND_WINDOW_MIN);
    return [s.name, {
      firstMB: ys[0], lastMB: ys[ys.length - 1], minMB: Math.min(...ys), maxMB: Math.max(...ys), trend: tr.trend, windowSamples: tr.n,
      anonFirstMB: anonPoints[0]?.y, anonLastMB: anonPoints[anonPoints.length - 1]?.y, anonTrend: anon.trend,
    }];
  }));
  const report = { minutes: MINUTES, cycles, cycleMs: CYCLE_MS, sampleMs: SAMPLE_MS, trendWindowMinutes: TREND_WINDOW_MIN, clients: tally, rss, samples };
  t.comment(`requests: ${Object.entries(tally).map(([k, v]) => `${k} ${v.requests} (${v.failed} failed)`).join('; ')}`);
  for (const [name, r] of Object.entries(rss)) {
    t.comment(`RSS ${name}: ${r.firstMB.toFixed(1)} -> ${r.lastMB.toFixed(1)} MB (min ${r.minMB.toFixed(1)}, max ${r.maxMB.toFixed(1)}), trend ${(r.trend * 100).toFixed(1)}% over the last ${Math.min(TREND_WINDOW_MIN, MINUTES)} min; ` +
      `anonymous ${r.anonFirstMB?.toFixed(1)} -> ${r.anonLastMB?.toFixed(1)} MB, trend ${(r.anonTrend * 100).toFixed(1)}%`);
  }
  if (OUT) {
    mkdirSync(OUT, { recursive: true });
    writeFileSync(join(OUT, 'soak.json'), JSON.stringify(report, null, 1) + '\n');
    writeFileSync(join(OUT, 'soak-rss.svg'), lineChartSvg(series, {
      title: `rdbg RSS under steady load (${MINUTES} min, sampled every ${SAMPLE_MS / 1000} s)`,
      xLabel: 'minutes', yLabel: 'RSS (MB)',
    }));
  }

  for (const [name, s] of Object.entries(tally)) {
    t.ok(s.requests > 0, `${name}: ${s.requests} requests`);
    t.equal(s.failed, 0, `${name}: no failed requests`, { errors: s.errors });
  }
  const last = samples[samples.length - 1];
  t.same(Object.keys(last.rss).sort(), Object.keys(pids).sort(), 'every rdbg process is still the one it was at the start');
  if (LONG) {
    for (const [name, r] of Object.entries(rss)) {
      t.ok(r.trend <= MAX_TREND, `${name}: RSS trend ${(r.trend * 100).toFixed(1)}% over the last ${TREND_WINDOW_MIN} min (at most ${MAX_TREND * 100}%)`);
    }
  }
});
