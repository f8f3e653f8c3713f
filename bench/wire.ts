/**
 * `make bench`, the wire part: rdbg measured with real clients and servers
 * that nobody here wrote (h2load and nghttpd, python's http.server,
 * redis-benchmark and redis-server, pgbench and PostgreSQL, iperf3, curl),
 * each figure beside the same client straight to the same server, in
 * alternating rounds (BENCH_ROUNDS, default 3; medians).
 *
 *   Part A, the traffic agent (bench/agent-env.ts: a standalone manager,
 *   `rdbg agent run` processes and a laptop stand-in, all on 127.0.0.1):
 *   caller -> agent -> app  vs  caller -> app.
 *   Part B, the TUN (the sandbox of bench/run.ts): a laptop namespace with
 *   `rdbg connect` and its TUN device vs a laptop namespace that routes the
 *   cluster's pod subnet over its plain veth, both to servers in the cluster
 *   namespace on a pod address.
 *
 * h2load runs timed (BENCH_H2LOAD_SECONDS, default 4, after 1 s of warm-up)
 * rather than with a request count: the count that takes 4 s direct takes
 * minutes through today's agent. BENCH_H2LOAD_N=N runs `-n N` on both paths.
 *
 * Prints a Markdown table and writes bench/results/wire.{json,md}. A goal
 * not met is reported, not a failure; a run whose client reports failed
 * requests fails its row. Every server, process and namespace it starts is
 * removed at the end, also after a failure or SIGINT/SIGTERM.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitForLine, waitForLog, type Netns } from '../test/helpers/netns';
import { CLUSTER, Sandbox } from '../test/helpers/sandbox';
import { AgentEnv, freePort, latencyUs, listen, median, request, server, warmUp } from './agent-env';
import { ratioChart } from './chart';
import { markdownTable, type BenchRow } from './row';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const H2_SECONDS = Number(process.env.BENCH_H2LOAD_SECONDS ?? 4);
const H2_N = process.env.BENCH_H2LOAD_N;
const KEEPALIVE_N = 1000;
const CLOSE_N = 500;
const TRANSFER = 256 * 1024 * 1024;
const REDIS_N = 200_000;
const PGBENCH_SECONDS = 10;
const IPERF_SECONDS = 5;
/** The pod address the cluster namespace's servers listen on (on its lo; the manager may dial it). */
const SERVER_IP = CLUSTER.podIps[1];
const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups', '--'];
/** bench/pipe-relay.ts, compiled beside this file. */
const PIPE_RELAY = join(__dirname, 'pipe-relay.js');

type Result = { code: number; stdout: string; stderr: string };
type Runner = (cmd: string, args: string[], timeoutMs?: number) => Promise<Result>;

/** One measurement: its figure, and what went wrong in it (failed requests) if anything. */
interface Sample {
  value: number;
  problem?: string;
}

/** Every round's figure per key (NaN for a run that produced none), and the problems seen. */
class Samples {
  readonly raw: Record<string, number[]> = {};
  readonly problems: Record<string, string[]> = {};

  async take(key: string, fn: () => Promise<Sample | number>): Promise<void> {
    let v = NaN;
    try {
      const s = await fn();
      const sample = typeof s === 'number' ? { value: s } : s;
      v = sample.value;
      if (sample.problem) this.problem(key, sample.problem);
    } catch (err) {
      this.problem(key, (err as Error).message);
    }
    (this.raw[key] ??= []).push(v);
    process.stderr.write(`  ${key}: ${Number.isFinite(v) ? Math.round(v * 10) / 10 : 'no figure'}\n`);
  }

  problem(key: string, text: string): void {
    (this.problems[key] ??= []).push(text);
    process.stderr.write(`  ${key}: ${text}\n`);
  }

  med(key: string): number {
    const xs = (this.raw[key] ?? []).filter(Number.isFinite);
    return xs.length ? median(xs) : NaN;
  }

  /** Median of the per-round differences key - ref. */
  added(key: string, ref: string): number {
    return this.paired(key, ref, (x, r) => x - r);
  }

  /** Median of the per-round ratios key / ref: each pair ran minutes apart at most, under the same load. */
  ratio(key: string, ref: string): number {
    return this.paired(key, ref, (x, r) => x / r);
  }

  private paired(key: string, ref: string, f: (x: number, r: number) => number): number {
    const a = this.raw[key] ?? [];
    const b = this.raw[ref] ?? [];
    const d = a.map((x, i) => f(x, b[i])).filter(Number.isFinite);
    return d.length ? median(d) : NaN;
  }

  trouble(...keys: string[]): string {
    const all = keys.flatMap((k) => (this.problems[k] ?? []).map((p) => `${k}: ${p}`));
    return all.length ? `; ${all.length} run(s) failed (${all[0].slice(0, 160)})` : '';
  }
}

function ratioRow(s: Samples, metric: string, path: string, key: string, ref: string, goalPercent?: number): BenchRow {
  const value = s.med(key);
  const reference = s.med(ref);
  const ratio = s.ratio(key, ref);
  const trouble = s.trouble(key, ref);
  return {
    metric,
    path,
    value,
    reference,
    vs: `${Number.isFinite(ratio) ? `${Math.round(ratio * 100)}%` : 'no figure'}${trouble}`,
    goal: goalPercent === undefined ? 'report' : `>= ${goalPercent}% of direct`,
    pass: !trouble && Number.isFinite(ratio) && (goalPercent === undefined || ratio >= goalPercent / 100),
  };
}

function addedRow(s: Samples, metric: string, path: string, key: string, ref: string, goalUs?: number): BenchRow {
  const added = s.added(key, ref);
  const trouble = s.trouble(key, ref);
  return {
    metric,
    path,
    value: s.med(key),
    reference: s.med(ref),
    vs: `${Number.isFinite(added) ? `${added >= 0 ? '+' : ''}${added.toFixed(0)} us` : 'no figure'}${trouble}`,
    goal: goalUs === undefined ? 'report' : `<= +${goalUs} us`,
    pass: !trouble && Number.isFinite(added) && (goalUs === undefined || added <= goalUs),
  };
}

/** Run a command on this host, as Netns.run does inside a namespace. */
const runHere: Runner = (cmd, args, timeoutMs = 120_000) =>
  new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (err) => (stderr += err.message));
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });

const tail = (r: Result): string => (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-2).join(' ').slice(0, 300);

/** h2load's "finished in ..., N req/s" (requests/s); failed, errored, timed-out and non-2xx requests are its problem. */
async function h2load(run: Runner, url: string, seconds = H2_SECONDS): Promise<Sample> {
  const size = H2_N ? ['-n', H2_N] : ['-D', String(seconds), '--warm-up-time', '1'];
  const r = await run('h2load', [...size, '-c', '10', '-m', '10', url], 600_000);
  const fin = /finished in [^,]+, ([\d.]+) req\/s/.exec(r.stdout);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(r.stdout);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(r.stdout);
  if (!fin || !req) throw new Error(`h2load gave no result (exit ${r.code}): ${tail(r)}`);
  const [failed, errored, timeout] = [Number(req[5]), Number(req[6]), Number(req[7])];
  // Not succeeded minus 2xx: in a timed run the status counts include the warm-up's requests.
  const not2xx = codes ? Number(codes[2]) + Number(codes[3]) + Number(codes[4]) : 0;
  const bad = failed + errored + timeout + not2xx;
  return { value: Number(fin[1]), problem: bad || r.code !== 0 ? `h2load: ${failed} failed, ${errored} errored, ${timeout} timeout, ${not2xx} not 2xx of ${req[1]} (exit ${r.code})` : undefined };
}

/** Median time of one request on a connection of its own, `n` in a row (the app closes after each answer). */
async function closeLatencyUs(port: number, n: number, path: string, bytes: number): Promise<number> {
  const agent = new http.Agent({ keepAlive: false });
  try {
    const xs: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      const r = await request(agent, port, path, {});
      xs.push(Number(process.hrtime.bigint() - t0) / 1000);
      if (r.bytes !== bytes) throw new Error(`answer of ${r.bytes} bytes, not ${bytes}`);
    }
    return median(xs);
  } finally {
    agent.destroy();
  }
}

/** One h2c GET (prior knowledge, as h2load's): the length of a 200 answer's body. */
function h2Get(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.once('error', reject);
    const req = session.request({ ':path': path });
    let bytes = 0;
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.on('data', (d: Buffer) => (bytes += d.length));
    req.on('end', () => {
      session.close();
      resolve(status === 200 ? bytes : -status);
    });
    req.on('error', reject);
    req.end();
  });
}

async function waitForPort(port: number, what: string): Promise<void> {
  for (let i = 0; i < 150; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => r(true));
      s.once('error', () => r(false));
      s.once('connect', () => s.destroy());
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} never listened on 127.0.0.1:${port}`);
}

/**
 * Processes killed and directories removed at the end, or on a signal (all
 * synchronous), newest first; cleanUp(mark) undoes only what came after
 * `atExit.length` was `mark`.
 */
const atExit: Array<() => void> = [];
function cleanUp(mark = 0): void {
  for (const c of atExit.splice(mark).reverse()) {
    try {
      c();
    } catch {
      // best effort
    }
  }
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    process.stderr.write(`wire bench: ${sig}, cleaning up\n`);
    cleanUp();
    process.exit(130);
  });
}

function spawnHere(cmd: string, args: string[]): ChildProcess {
  const p = spawn(cmd, args, { stdio: 'ignore' });
  atExit.push(() => p.kill('SIGKILL'));
  return p;
}

async function partAgent(s: Samples, dir: string): Promise<BenchRow[]> {
  const mark = atExit.length;
  const env = await AgentEnv.start();
  atExit.push(() => {
    for (const c of env.cleanup.splice(0).reverse()) c();
  });
  const nodeServers: http.Server[] = [];
  try {
    // The apps: nghttpd (h2c), a Node keep-alive HTTP/1.1 server, python's http.server (closes each connection).
    const h2Port = await freePort();
    spawnHere('nghttpd', ['--no-tls', '-a', '127.0.0.1', '-d', dir, String(h2Port)]);
    await waitForPort(h2Port, 'nghttpd');
    const app = server('app');
    const lap = server('laptop');
    nodeServers.push(app, lap);
    const appPort = await listen(app);
    const lapPort = await listen(lap);
    const python = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
    const pyPort = await freePort();
    spawnHere(python, ['-m', 'http.server', '--bind', '127.0.0.1', '--directory', dir, String(pyPort)]);
    await waitForPort(pyPort, 'python3 -m http.server');

    const h2Plain = await env.agent('h2-plain', h2Port);
    const h2Held = await env.agent('h2-intercepted', h2Port);
    const kaAgent = await env.agent('http1-keepalive', appPort);
    const pyAgent = await env.agent('http1-close', pyPort);
    // The floor of any proxy in the agent's place: socat relaying bytes, nothing else.
    const relay = async (to: number): Promise<number> => {
      const p = await freePort();
      spawnHere('socat', [`TCP-LISTEN:${p},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=1024`, `TCP:127.0.0.1:${to},nodelay`]);
      await waitForPort(p, 'socat');
      return p;
    };
    const [h2Relay, kaRelay, pyRelay] = [await relay(h2Port), await relay(appPort), await relay(pyPort)];
    // The floor of a relay in Node: its own streams piping bytes (bench/pipe-relay.ts).
    const pipeRelay = async (to: number): Promise<number> => {
      const p = await freePort();
      spawnHere(process.execPath, [PIPE_RELAY, '127.0.0.1', String(p), '127.0.0.1', String(to)]);
      await waitForPort(p, 'pipe-relay');
      return p;
    };
    const [h2Pipe, kaPipe, pyPipe] = [await pipeRelay(h2Port), await pipeRelay(appPort), await pipeRelay(pyPort)];
    // Someone else's intercept: only requests with x-dev: someone-else go to their laptop; the bench's carry none.
    await env.laptop([{ workload: 'h2-intercepted', port: h2Port, header: { name: 'x-dev', value: 'someone-else' }, localPort: lapPort }]);
    const probe = new http.Agent({ keepAlive: false });
    const theirs = { 'x-dev': 'someone-else' };
    for (let i = 0; i < 100 && (await request(probe, h2Held, '/f', theirs)).who !== 'laptop'; i++) await new Promise((r) => setTimeout(r, 50));
    if ((await request(probe, h2Held, '/f', theirs)).who !== 'laptop') throw new Error('the header intercept never took effect');
    if ((await h2Get(h2Held, '/f')) !== 64) throw new Error('an h2c request without the header did not reach nghttpd');

    // Warm, as an agent in front of a service with steady traffic is (see bench/agent.ts).
    process.stderr.write('agent: warming up\n');
    for (const p of [h2Plain, h2Held]) await h2load(runHere, `http://127.0.0.1:${p}/f`, 2);
    await warmUp(appPort, {});
    await warmUp(kaAgent, {});
    await closeLatencyUs(pyAgent, CLOSE_N, '/f', 64);

    for (let round = 0; round < ROUNDS; round++) {
      process.stderr.write(`agent: round ${round + 1}/${ROUNDS}\n`);
      await s.take('agent_h2load_direct', () => h2load(runHere, `http://127.0.0.1:${h2Port}/f`));
      await s.take('agent_h2load_agent', () => h2load(runHere, `http://127.0.0.1:${h2Plain}/f`));
      await s.take('agent_h2load_agent_intercepted', () => h2load(runHere, `http://127.0.0.1:${h2Held}/f`));
      await s.take('agent_h2load_socat', () => h2load(runHere, `http://127.0.0.1:${h2Relay}/f`));
      await s.take('agent_h2load_pipe', () => h2load(runHere, `http://127.0.0.1:${h2Pipe}/f`));
      await s.take('agent_keepalive_direct_us', () => latencyUs(appPort, {}, KEEPALIVE_N));
      await s.take('agent_keepalive_agent_us', () => latencyUs(kaAgent, {}, KEEPALIVE_N));
      await s.take('agent_keepalive_socat_us', () => latencyUs(kaRelay, {}, KEEPALIVE_N));
      await s.take('agent_keepalive_pipe_us', () => latencyUs(kaPipe, {}, KEEPALIVE_N));
      await s.take('agent_close_direct_us', () => closeLatencyUs(pyPort, CLOSE_N, '/f', 64));
      await s.take('agent_close_agent_us', () => closeLatencyUs(pyAgent, CLOSE_N, '/f', 64));
      await s.take('agent_close_socat_us', () => closeLatencyUs(pyRelay, CLOSE_N, '/f', 64));
      await s.take('agent_close_pipe_us', () => closeLatencyUs(pyPipe, CLOSE_N, '/f', 64));
    }
    return [
      ratioRow(s, 'h2load -c 10 -m 10 to nghttpd (h2c), not intercepted (requests/s)', 'agent', 'agent_h2load_agent', 'agent_h2load_direct', 80),
      ratioRow(s, "h2load -c 10 -m 10 to nghttpd (h2c), someone else's header intercept on the port (requests/s)", 'agent', 'agent_h2load_agent_intercepted', 'agent_h2load_direct', 50),
      addedRow(s, 'HTTP/1.1 keep-alive request, not intercepted, median (us)', 'agent', 'agent_keepalive_agent_us', 'agent_keepalive_direct_us', 50),
      addedRow(s, 'HTTP/1.0 request on a new connection, python http.server, median (us)', 'agent', 'agent_close_agent_us', 'agent_close_direct_us', 150),
      ratioRow(s, 'h2load -c 10 -m 10 to nghttpd (h2c) through socat, the floor of any relay (requests/s)', 'socat', 'agent_h2load_socat', 'agent_h2load_direct'),
      addedRow(s, 'HTTP/1.1 keep-alive request through socat, the floor of any relay, median (us)', 'socat', 'agent_keepalive_socat_us', 'agent_keepalive_direct_us'),
      addedRow(s, 'HTTP/1.0 request on a new connection through socat (a fork per connection), median (us)', 'socat', 'agent_close_socat_us', 'agent_close_direct_us'),
      ratioRow(s, 'h2load -c 10 -m 10 to nghttpd (h2c) through a Node pipe() relay, the floor of a relay in Node (requests/s)', 'Node pipe', 'agent_h2load_pipe', 'agent_h2load_direct'),
      addedRow(s, 'HTTP/1.1 keep-alive request through a Node pipe() relay, median (us)', 'Node pipe', 'agent_keepalive_pipe_us', 'agent_keepalive_direct_us'),
      addedRow(s, 'HTTP/1.0 request on a new connection through a Node pipe() relay, median (us)', 'Node pipe', 'agent_close_pipe_us', 'agent_close_direct_us'),
    ];
  } finally {
    for (const srv of nodeServers) {
      srv.closeAllConnections();
      srv.close();
    }
    cleanUp(mark);
  }
}

/** A port nothing listens on at `host` in `ns`. */
function freePortIn(ns: Netns, host: string): number {
  const js = `const s=require('net').createServer().listen(0,${JSON.stringify(host)},()=>{process.stdout.write(String(s.address().port));s.close()})`;
  return Number(ns.exec('node', ['-e', js]));
}

async function waitForPortIn(ns: Netns, host: string, port: number, what: string): Promise<void> {
  for (let i = 0; i < 150; i++) {
    if ((await ns.run('bash', ['-c', `exec 3<>/dev/tcp/${host}/${port}`], 5000)).code === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} never listened on ${host}:${port}`);
}

/** The newest PostgreSQL server's bin directory (/usr/lib/postgresql/VERSION/bin). */
function postgresBin(): string {
  const base = '/usr/lib/postgresql';
  const versions = (existsSync(base) ? readdirSync(base) : []).filter((v) => existsSync(join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  if (!versions.length) throw new Error(`no PostgreSQL server (${base}/*/bin/initdb): make deps installs it`);
  return join(base, versions[0], 'bin');
}

/**
 * PostgreSQL in the cluster namespace, run as nobody from a temporary
 * directory, trusting the sandbox's addresses; stopped (atExit) before the
 * sandbox goes.
 */
async function startPostgres(sb: Sandbox, port: number): Promise<void> {
  const bin = postgresBin();
  const dir = mkdtempSync(join(tmpdir(), 'rdbg-wire-pg-'));
  const data = join(dir, 'data');
  let stop = (): void => rmSync(dir, { recursive: true, force: true });
  atExit.push(() => stop());
  chownSync(dir, 65534, 65534);
  sb.cluster.exec('setpriv', [...NOBODY, join(bin, 'initdb'), '-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C'], { timeoutMs: 120_000 });
  // Laptops come from 198.18.N.2; the manager dials from the cluster namespace's own addresses.
  appendFileSync(join(data, 'pg_hba.conf'), 'host all all 198.18.0.0/16 trust\nhost all all 198.19.0.0/16 trust\n');
  const pg = sb.cluster.spawn('setpriv', [...NOBODY, join(bin, 'postgres'), '-D', data, '-k', dir, '-h', SERVER_IP, '-p', String(port), '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off']);
  stop = () => {
    // A clean shutdown, so that nothing (shared memory) outlives it; the namespace's end kills what is left.
    if (pg.exitCode === null) {
      try {
        sb.cluster.exec('setpriv', [...NOBODY, join(bin, 'pg_ctl'), 'stop', '-D', data, '-m', 'fast', '-w', '-t', '20'], { timeoutMs: 30_000 });
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  await waitForLog(pg, 'database system is ready to accept connections', 60_000, 'postgres');
}

async function pgbench(run: Runner, args: string[]): Promise<Sample> {
  const r = await run('pgbench', ['-S', '-c', '4', '-j', '2', '-T', String(PGBENCH_SECONDS), ...args], 120_000);
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(r.stdout);
  if (!tps) throw new Error(`pgbench gave no result (exit ${r.code}): ${tail(r)}`);
  const failed = Number(/number of failed transactions: (\d+)/.exec(r.stdout)?.[1] ?? 0);
  return { value: Number(tps[1]), problem: failed || r.code !== 0 ? `pgbench: ${failed} failed transactions (exit ${r.code}): ${tail(r)}` : undefined };
}

/** redis-benchmark -q: "SET: N requests per second, ..." */
async function redisBenchmark(run: Runner, test: 'set' | 'get', args: string[], n = REDIS_N): Promise<Sample> {
  const r = await run('redis-benchmark', [...args, '-c', '50', '-n', String(n), '-t', test, '-q'], 300_000);
  const line = r.stdout.split(/[\r\n]/).find((l) => new RegExp(`^${test.toUpperCase()}: [\\d.]+ requests per second`).test(l));
  if (!line) throw new Error(`redis-benchmark gave no result (exit ${r.code}): ${tail(r)}`);
  return { value: Number(/: ([\d.]+) requests/.exec(line)![1]), problem: r.code !== 0 || /error/i.test(r.stderr) ? `redis-benchmark (exit ${r.code}): ${tail(r)}` : undefined };
}

/** iperf3 -J: the receiver's bits/s, as Mbit/s. */
async function iperf(run: Runner, args: string[]): Promise<number> {
  const r = await run('iperf3', [...args, '-t', String(IPERF_SECONDS), '-J'], 60_000);
  let out: { error?: string; end?: { sum_received?: { bits_per_second?: number } } };
  try {
    out = JSON.parse(r.stdout);
  } catch {
    throw new Error(`iperf3 gave no JSON (exit ${r.code}): ${tail(r)}`);
  }
  const bps = out.end?.sum_received?.bits_per_second;
  if (out.error || r.code !== 0 || !bps) throw new Error(`iperf3: ${out.error ?? `exit ${r.code}`}`);
  return bps / 1e6;
}

/** curl -T of the file to the sink (MB/s); the sink's count must be the whole file. */
async function upload(run: Runner, file: string, url: string): Promise<number> {
  const r = await run('curl', ['-sS', '-H', 'Expect:', '-T', file, '-w', '\n%{speed_upload}', url], 300_000);
  const [count, speed] = r.stdout.split('\n').filter(Boolean);
  if (r.code !== 0 || Number(count) !== TRANSFER) throw new Error(`upload: the sink counted ${count} bytes (curl exit ${r.code}): ${tail(r)}`);
  return Number(speed) / 1e6;
}

async function download(run: Runner, url: string): Promise<number> {
  const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{speed_download} %{size_download}', url], 300_000);
  const [speed, size] = r.stdout.trim().split(' ').map(Number);
  if (r.code !== 0 || size !== TRANSFER) throw new Error(`download: ${size} bytes (curl exit ${r.code}): ${tail(r)}`);
  return speed / 1e6;
}

/** Where a path's clients find the servers. */
interface Target {
  host: string;
  port: (server: 'redis' | 'h2' | 'iperf' | 'pg' | 'http') => number;
}

const TUN_LABELS: Record<string, string> = {
  redis_set: 'redis-benchmark -c 50 SET (requests/s)',
  redis_get: 'redis-benchmark -c 50 GET (requests/s)',
  pgbench: `pgbench -S -c 4 -j 2, ${PGBENCH_SECONDS} s (tps)`,
  h2load: 'h2load -c 10 -m 10 to nghttpd (requests/s)',
  iperf3: `iperf3, one stream, ${IPERF_SECONDS} s (Mbit/s)`,
  upload: 'upload, 256 MiB (MB/s)',
  download: 'download, 256 MiB (MB/s)',
};

/**
 * Each server behind two relays of one kind, in the places of rdbg's two: one
 * in the laptop namespace (on 127.0.0.1, where the root daemon's listener is)
 * and one in the cluster namespace on the address the laptop reaches the
 * manager at, which dials the server. socat relays bytes and nothing else, in
 * 256 KiB reads: the best any design with a relay on each side (every
 * laptop-to-cluster tool has one) can do on this machine. The Node pipe()
 * relay (bench/pipe-relay.ts) is the best such a relay in Node can do.
 */
async function relayChain(sb: Sandbox, lap: Netns, servers: Record<Parameters<Target['port']>[0], number>, kind: 'socat' | 'pipe'): Promise<Target> {
  const local: Record<string, number> = {};
  const clusterSide = '198.18.1.1'; // the cluster namespace's end of the first laptop's veth
  const relay = (ns: Netns, host: string, port: number, toHost: string, toPort: number): void => {
    if (kind === 'socat') ns.spawn('socat', ['-b', '262144', `TCP-LISTEN:${port},bind=${host},reuseaddr,fork,nodelay,backlog=1024`, `TCP:${toHost}:${toPort},nodelay`]);
    else ns.spawn(process.execPath, [PIPE_RELAY, host, String(port), toHost, String(toPort)]);
  };
  for (const [name, port] of Object.entries(servers)) {
    const mid = freePortIn(sb.cluster, clusterSide);
    relay(sb.cluster, clusterSide, mid, SERVER_IP, port);
    await waitForPortIn(sb.cluster, clusterSide, mid, kind);
    const front = freePortIn(lap, '127.0.0.1');
    relay(lap, '127.0.0.1', front, clusterSide, mid);
    await waitForPortIn(lap, '127.0.0.1', front, kind);
    local[name] = front;
  }
  return { host: '127.0.0.1', port: (name) => local[name] };
}

async function partTun(s: Samples, dir: string): Promise<BenchRow[]> {
  const mark = atExit.length;
  const sb = await Sandbox.create({ laptops: 2 });
  atExit.push(() => sb.destroy());
  try {
    const [directLap, tunLap] = sb.laptops;
    // The direct reference path: the pod subnet over the veth (inside the sandbox only).
    directLap.ns.exec('ip', ['route', 'add', CLUSTER.podCidr, 'via', '198.18.1.1']);
    const c = await tunLap.rdbg(['connect', '--manager', tunLap.managerAddress], 60_000, process.env.RDBG_TCP_CAPTURE ? [`RDBG_TCP_CAPTURE=${process.env.RDBG_TCP_CAPTURE}`] : []);
    if (c.code !== 0) throw new Error(`rdbg connect: ${c.stderr}`);

    const ip = SERVER_IP;
    const redisPort = freePortIn(sb.cluster, ip);
    const redis = sb.cluster.spawn('redis-server', ['--bind', ip, '--port', String(redisPort), '--save', '', '--appendonly', 'no', '--protected-mode', 'no']);
    await waitForLine(redis, (l) => /Ready to accept connections/.test(l), 15_000, 'redis-server');
    const h2Port = freePortIn(sb.cluster, ip);
    const nghttpd = sb.cluster.spawn('nghttpd', ['--no-tls', '-a', ip, '-d', dir, String(h2Port)]);
    nghttpd.stdout!.resume();
    nghttpd.stderr!.resume();
    await waitForPortIn(sb.cluster, ip, h2Port, 'nghttpd');
    const iperfPort = freePortIn(sb.cluster, ip);
    const iperfd = sb.cluster.spawn('iperf3', ['-s', '--forceflush', '-B', ip, '-p', String(iperfPort)]);
    await waitForLine(iperfd, (l) => /Server listening/.test(l), 15_000, 'iperf3 -s');
    const pgPort = freePortIn(sb.cluster, ip);
    process.stderr.write('tun: starting PostgreSQL\n');
    await startPostgres(sb, pgPort);

    const file = join(dir, 'upload');
    writeFileSync(file, '');
    truncateSync(file, TRANSFER); // sparse: reading it costs no disk
    const servers = { redis: redisPort, h2: h2Port, iperf: iperfPort, pg: pgPort, http: 80 };
    const direct: Target = { host: ip, port: (name) => servers[name] };
    // The floor of rdbg's shape: one relay where the root daemon is and one where the manager is.
    const relays = await relayChain(sb, directLap.ns, servers, 'socat');
    const pipes = await relayChain(sb, directLap.ns, servers, 'pipe');
    const paths: Array<{ name: string; run: Runner; at: Target }> = [
      { name: 'direct', run: directLap.ns.run.bind(directLap.ns), at: direct },
      { name: 'tun', run: tunLap.ns.run.bind(tunLap.ns), at: direct },
      { name: 'socat', run: directLap.ns.run.bind(directLap.ns), at: relays },
      { name: 'pipe', run: directLap.ns.run.bind(directLap.ns), at: pipes },
    ];
    const pg = (at: Target): string[] => ['-h', at.host, '-p', String(at.port('pg')), '-U', 'postgres', 'postgres'];
    const init = await directLap.ns.run('pgbench', ['-i', '-s', '1', '-q', ...pg(direct)], 120_000);
    if (init.code !== 0) throw new Error(`pgbench -i: ${tail(init)}`);
    const redisAt = (at: Target): string[] => ['-h', at.host, '-p', String(at.port('redis'))];
    const h2Url = (at: Target): string => `http://${at.host}:${at.port('h2')}/f`;
    const httpUrl = (at: Target, path: string): string => `http://${at.host}:${at.port('http')}${path}`;
    // The root daemon's data path compiles over its first flows (bench/run.ts): measure it warm.
    process.stderr.write('tun: warming up\n');
    const tun = paths[1].run;
    await redisBenchmark(tun, 'set', redisAt(direct), 20_000).catch(() => undefined);
    await h2load(tun, h2Url(direct), 2).catch(() => undefined);
    await download(tun, httpUrl(direct, `/zeros?n=${TRANSFER}`)).catch(() => undefined);
    for (const p of paths) await upload(p.run, file, httpUrl(p.at, '/sink')).catch(() => undefined); // and the sink's own code

    const runs: Array<[string, (run: Runner, at: Target) => Promise<Sample | number>]> = [
      ['redis_set', (run, at) => redisBenchmark(run, 'set', redisAt(at))],
      ['redis_get', (run, at) => redisBenchmark(run, 'get', redisAt(at))],
      ['pgbench', (run, at) => pgbench(run, pg(at))],
      ['h2load', (run, at) => h2load(run, h2Url(at))],
      ['iperf3', (run, at) => iperf(run, ['-c', at.host, '-p', String(at.port('iperf'))])],
      ['upload', (run, at) => upload(run, file, httpUrl(at, '/sink'))],
      ['download', (run, at) => download(run, httpUrl(at, `/zeros?n=${TRANSFER}`))],
    ];
    for (let round = 0; round < ROUNDS; round++) {
      process.stderr.write(`tun: round ${round + 1}/${ROUNDS}\n`);
      // Each client on every path one after the other: the machine's load drifts, the set sees the same.
      for (const [name, fn] of runs) for (const p of paths) await s.take(`${name}_${p.name}`, () => fn(p.run, p.at));
    }
    await tunLap.rdbg(['quit']);
    return [
      ratioRow(s, 'redis-benchmark -c 50 SET (requests/s)', 'TUN', 'redis_set_tun', 'redis_set_direct', 50),
      ratioRow(s, 'redis-benchmark -c 50 GET (requests/s)', 'TUN', 'redis_get_tun', 'redis_get_direct'),
      ratioRow(s, `pgbench -S -c 4 -j 2, ${PGBENCH_SECONDS} s, PostgreSQL (tps)`, 'TUN', 'pgbench_tun', 'pgbench_direct', 50),
      ratioRow(s, 'h2load -c 10 -m 10 to nghttpd (h2c) (requests/s)', 'TUN', 'h2load_tun', 'h2load_direct', 60),
      ratioRow(s, `iperf3, one stream, ${IPERF_SECONDS} s (Mbit/s)`, 'TUN', 'iperf3_tun', 'iperf3_direct', 50),
      ratioRow(s, 'upload, 256 MiB, curl -T (MB/s)', 'TUN', 'upload_tun', 'upload_direct', 60),
      ratioRow(s, 'download, 256 MiB, curl (MB/s)', 'TUN', 'download_tun', 'download_direct'),
      ...runs.map(([name]) => ratioRow(s, `${TUN_LABELS[name]} through two socat relays, the floor of rdbg's shape`, 'socat', `${name}_socat`, `${name}_direct`)),
      ...runs.map(([name]) => ratioRow(s, `${TUN_LABELS[name]} through two Node pipe() relays, the floor of rdbg's shape in Node`, 'Node pipe', `${name}_pipe`, `${name}_direct`)),
    ];
  } finally {
    cleanUp(mark);
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'rdbg-wire-'));
  atExit.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'f'), Buffer.alloc(64, 0x61)); // the small file nghttpd and http.server serve
  const s = new Samples();
  const rows: BenchRow[] = [];
  const errors: string[] = [];
  const only = (process.env.BENCH_WIRE_PARTS ?? 'agent,tun').split(',');
  for (const [name, part] of [['agent', partAgent], ['tun', partTun]] as const) {
    if (!only.includes(name)) continue;
    try {
      rows.push(...(await part(s, dir)));
    } catch (err) {
      errors.push(`${name}: ${(err as Error).stack}`);
      process.stderr.write(`wire bench, part ${name} failed: ${(err as Error).stack}\n`);
    }
  }
  cleanUp();

  const table = markdownTable(rows);
  const seconds = Math.round((Date.now() - started) / 1000);
  process.stdout.write(`\n${table}\n\nrounds: ${ROUNDS}; ${seconds} s; medians of: ${JSON.stringify(s.raw)}\n`);
  if (errors.length) process.stdout.write(`\nparts that failed:\n${errors.join('\n')}\n`);
  const out = join(__dirname, '../../bench/results');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'wire.json'), JSON.stringify({ date: new Date().toISOString(), rounds: ROUNDS, seconds, rows, raw: s.raw, problems: s.problems, errors }, null, 2) + '\n');
  writeFileSync(join(out, 'wire.md'), table + '\n');
  // Black ticks: the goals; green bars meet theirs, red ones do not, grey ones have none.
  writeFileSync(join(out, 'wire.svg'), ratioChart(rows, "rdbg's speed as a share of the same client's without rdbg (make bench, bench/wire.ts)"));
  process.exit(errors.length ? 1 : 0);
}

void main();
