/**
 * The traffic agent's tax: median latency of small HTTP/1.1 requests and
 * throughput of a large response, each path beside its reference:
 *   app:    caller -> agent -> app            vs  caller -> app
 *   laptop: caller -> agent -> manager -> laptop daemon -> laptop server
 *                                            vs  caller -> laptop server
 * The manager, the agent and the laptop's daemon stand-in (FakeLaptop) run as
 * separate processes, as they would in real life; the caller and both servers
 * share this one. Everything is on 127.0.0.1. Medians of 5 rounds (the
 * figures move by +-50 us between runs on this shared machine). About 40 s.
 *
 * `node dist/bench/agent.js` prints the figures as JSON; `benchAgent()` returns them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as http from 'node:http';
import * as net from 'node:net';
import { resolve } from 'node:path';
import { FakeLaptop } from '../test/helpers/fake-laptop';

const RDBG = resolve(__dirname, '../bin/rdbg.js');
const ROUNDS = 5;
const LATENCY_N = 300;
const WARMUP_N = 3000;
const BIG = 64 * 1024 * 1024;
const BLOCK = Buffer.alloc(256 * 1024, 0x61);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function server(name: string): http.Server {
  const s = http.createServer((req, res) => {
    if (req.url?.startsWith('/big')) {
      res.writeHead(200, { 'content-length': BIG, 'x-served-by': name });
      let left = BIG;
      const push = (): void => {
        while (left > 0) {
          const k = Math.min(left, BLOCK.length);
          left -= k;
          if (!res.write(k === BLOCK.length ? BLOCK : BLOCK.subarray(0, k))) {
            res.once('drain', push);
            return;
          }
        }
        res.end();
      };
      push();
      return;
    }
    req.resume();
    res.writeHead(200, { 'content-length': 2, 'x-served-by': name });
    res.end('ok');
  });
  s.keepAliveTimeout = 60_000;
  return s;
}

function listen(s: net.Server): Promise<number> {
  return new Promise((r) => s.listen(0, '127.0.0.1', () => r((s.address() as net.AddressInfo).port)));
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  const p = await listen(s);
  await new Promise((r) => s.close(r));
  return p;
}

function child(args: string[], ready: (line: string) => string | undefined): Promise<{ proc: ChildProcess; value: string }> {
  return new Promise((resolvePromise, reject) => {
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RDBG_LOG_LEVEL: 'info' } });
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')} did not start: ${buf.slice(-500)}`)), 15_000);
    const onLine = (chunk: Buffer): void => {
      buf += chunk.toString();
      for (const line of buf.split('\n')) {
        const v = ready(line);
        if (v !== undefined) {
          clearTimeout(timer);
          proc.stdout?.removeAllListeners('data');
          proc.stderr?.removeAllListeners('data');
          proc.stdout?.resume();
          proc.stderr?.resume();
          resolvePromise({ proc, value: v });
          return;
        }
      }
    };
    proc.stdout?.on('data', onLine);
    proc.stderr?.on('data', onLine);
    proc.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}: ${buf.slice(-500)}`)));
  });
}

function request(agent: http.Agent, port: number, path: string, headers: Record<string, string>): Promise<{ who: string; bytes: number }> {
  return new Promise((resolvePromise, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers, agent }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => resolvePromise({ who: String(res.headers['x-served-by']), bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function latencyUs(port: number, headers: Record<string, string>): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 20; i++) await request(agent, port, '/small', headers); // warm up
    const xs: number[] = [];
    for (let i = 0; i < LATENCY_N; i++) {
      const t0 = process.hrtime.bigint();
      await request(agent, port, '/small', headers);
      xs.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    return median(xs);
  } finally {
    agent.destroy();
  }
}

/** Requests until the JIT has compiled the path (see the note in benchAgent). */
async function warmUp(port: number, headers: Record<string, string>): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < WARMUP_N; i++) await request(agent, port, '/small', headers);
  } finally {
    agent.destroy();
  }
}

async function throughputMBs(port: number, headers: Record<string, string>): Promise<number> {
  const agent = new http.Agent({ keepAlive: false });
  const t0 = process.hrtime.bigint();
  const r = await request(agent, port, '/big', headers);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.bytes !== BIG) throw new Error(`short response: ${r.bytes}`);
  return BIG / 1e6 / s;
}

export async function benchAgent(): Promise<Record<string, number>> {
  const cleanup: Array<() => unknown> = [];
  try {
    const app = server('app');
    const lap = server('laptop');
    const appPort = await listen(app);
    const lapPort = await listen(lap);
    cleanup.push(() => app.close(), () => lap.close(), () => app.closeAllConnections(), () => lap.closeAllConnections());

    const mgr = await child([RDBG, 'manager', 'serve', '--listen', '127.0.0.1:0'], (line) => {
      const m = /"msg":"traffic manager listening".*?"port":(\d+)/.exec(line);
      return m?.[1];
    });
    cleanup.push(() => mgr.proc.kill('SIGKILL'));
    const manager = `127.0.0.1:${mgr.value}`;

    const agentPort = await freePort();
    const agentProc = await child(
      [RDBG, 'agent', 'run', '--manager', manager, '--workload', 'bench', '--namespace', 'default', '--app-port', String(appPort), '--listen-port', String(agentPort)],
      (line) => (line.includes('linked to the traffic manager') ? 'linked' : undefined),
    );
    cleanup.push(() => agentProc.proc.kill('SIGKILL'));

    const laptopProc = await child([__filename, 'laptop', manager, String(appPort), String(lapPort)], (line) => (line.startsWith('READY') ? 'ready' : undefined));
    cleanup.push(() => laptopProc.proc.kill('SIGKILL'));

    const mine = { 'x-user': 'bench' };
    const ka = new http.Agent({ keepAlive: true });
    cleanup.push(() => ka.destroy());
    for (let i = 0; i < 100 && (await request(ka, agentPort, '/small', mine)).who !== 'laptop'; i++) await new Promise((r) => setTimeout(r, 50));
    if ((await request(ka, agentPort, '/small', mine)).who !== 'laptop') throw new Error('the intercept never took effect');

    // Measured warm, as an agent in front of a service with steady traffic is: V8 compiles the
    // request path over the first couple of thousand requests (a fresh agent's tax: about
    // +400 us over the first 500 requests, +145 us after 2,500, on this machine).
    await warmUp(appPort, {});
    await warmUp(agentPort, {});
    await warmUp(lapPort, {});
    await warmUp(agentPort, mine);

    const lat = { directApp: [] as number[], agentApp: [] as number[], directLaptop: [] as number[], agentLaptop: [] as number[] };
    const tput = { directApp: [] as number[], agentApp: [] as number[], directLaptop: [] as number[], agentLaptop: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      lat.directApp.push(await latencyUs(appPort, {}));
      lat.agentApp.push(await latencyUs(agentPort, {}));
      lat.directLaptop.push(await latencyUs(lapPort, {}));
      lat.agentLaptop.push(await latencyUs(agentPort, mine));
      tput.directApp.push(await throughputMBs(appPort, {}));
      tput.agentApp.push(await throughputMBs(agentPort, {}));
      tput.directLaptop.push(await throughputMBs(lapPort, {}));
      tput.agentLaptop.push(await throughputMBs(agentPort, mine));
    }
    const m = (xs: number[]): number => Math.round(median(xs) * 10) / 10;
    const out = {
      agent_latency_direct_app_us: m(lat.directApp),
      agent_latency_via_agent_app_us: m(lat.agentApp),
      agent_added_latency_app_us: m(lat.agentApp.map((x, i) => x - lat.directApp[i])),
      agent_latency_direct_laptop_us: m(lat.directLaptop),
      agent_latency_via_agent_laptop_us: m(lat.agentLaptop),
      agent_added_latency_laptop_us: m(lat.agentLaptop.map((x, i) => x - lat.directLaptop[i])),
      agent_throughput_direct_app_MBps: m(tput.directApp),
      agent_throughput_via_agent_app_MBps: m(tput.agentApp),
      agent_throughput_app_ratio: Math.round((median(tput.agentApp) / median(tput.directApp)) * 100) / 100,
      agent_throughput_direct_laptop_MBps: m(tput.directLaptop),
      agent_throughput_via_agent_laptop_MBps: m(tput.agentLaptop),
      agent_throughput_laptop_ratio: Math.round((median(tput.agentLaptop) / median(tput.directLaptop)) * 100) / 100,
    };
    return out;
  } finally {
    for (const c of cleanup.reverse()) {
      try {
        await c();
      } catch {
        // best effort
      }
    }
  }
}

/** Child mode: the laptop's daemon stand-in, holding one header intercept. */
async function laptopMain(manager: string, appPort: number, localPort: number): Promise<void> {
  const l = new FakeLaptop({ manager, user: 'bench@laptop' });
  await l.arrive();
  await l.createIntercept({ workload: 'bench', namespace: 'default', port: appPort, headers: [{ name: 'x-user', value: 'bench', regex: false }], local_port: localPort });
  process.stdout.write('READY\n');
}

if (require.main === module) {
  if (process.argv[2] === 'laptop') {
    void laptopMain(process.argv[3], Number(process.argv[4]), Number(process.argv[5]));
  } else {
    benchAgent().then(
      (r) => {
        process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        process.exit(0);
      },
      (err: Error) => {
        process.stderr.write(`bench agent: ${err.stack}\n`);
        process.exit(1);
      },
    );
  }
}
