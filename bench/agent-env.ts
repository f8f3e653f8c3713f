/**
 * The traffic agent's bench setup, shared by bench/agent.ts and bench/wire.ts:
 * a standalone manager, `rdbg agent run` processes in front of apps, and a
 * laptop stand-in (FakeLaptop) holding header intercepts, each its own
 * process as in real life, all on 127.0.0.1. Also the HTTP/1 servers and
 * clients the agent benches measure with.
 *
 * Child mode (the laptop): `node agent-env.js laptop MANAGER INTERCEPTS_JSON`
 * prints READY once every intercept is in.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as http from 'node:http';
import * as net from 'node:net';
import { resolve } from 'node:path';
import { FakeLaptop } from '../test/helpers/fake-laptop';

export const RDBG = resolve(__dirname, '../bin/rdbg.js');
const LATENCY_N = 300;
const WARMUP_N = 3000;
export const BIG = 64 * 1024 * 1024;
const BLOCK = Buffer.alloc(256 * 1024, 0x61);

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** A keep-alive HTTP/1.1 server naming itself in x-served-by: 2 bytes, or BIG bytes on /big. */
export function server(name: string): http.Server {
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

export function listen(s: net.Server): Promise<number> {
  return new Promise((r) => s.listen(0, '127.0.0.1', () => r((s.address() as net.AddressInfo).port)));
}

export async function freePort(): Promise<number> {
  const s = net.createServer();
  const p = await listen(s);
  await new Promise((r) => s.close(r));
  return p;
}

/** Start node with `args`; resolves with what `ready` returns for the first log line it accepts. */
export function child(args: string[], ready: (line: string) => string | undefined): Promise<{ proc: ChildProcess; value: string }> {
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

export function request(agent: http.Agent, port: number, path: string, headers: Record<string, string>): Promise<{ who: string; bytes: number }> {
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

/** Median time of `n` sequential requests on one keep-alive connection (after 20 unmeasured). */
export async function latencyUs(port: number, headers: Record<string, string>, n = LATENCY_N, path = '/small'): Promise<number> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < 20; i++) await request(agent, port, path, headers); // warm up
    const xs: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      await request(agent, port, path, headers);
      xs.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    return median(xs);
  } finally {
    agent.destroy();
  }
}

/** Requests until the JIT has compiled the path (see the note in benchAgent). */
export async function warmUp(port: number, headers: Record<string, string>, n = WARMUP_N, path = '/small'): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < n; i++) await request(agent, port, path, headers);
  } finally {
    agent.destroy();
  }
}

/** One header intercept the laptop stand-in holds. */
export interface LaptopIntercept {
  workload: string;
  /** The agent's app port. */
  port: number;
  header: { name: string; value: string };
  /** Where the laptop sends what it gets (a server on 127.0.0.1). */
  localPort: number;
}

/**
 * One manager and what the bench adds to it: agents, a laptop. close() ends
 * every process it started, in reverse order, also after a failure.
 */
export class AgentEnv {
  readonly cleanup: Array<() => unknown> = [];
  manager = '';

  static async start(): Promise<AgentEnv> {
    const env = new AgentEnv();
    try {
      const mgr = await child([RDBG, 'manager', 'serve', '--listen', '127.0.0.1:0'], (line) => {
        const m = /"msg":"traffic manager listening".*?"port":(\d+)/.exec(line);
        return m?.[1];
      });
      env.cleanup.push(() => mgr.proc.kill('SIGKILL'));
      env.manager = `127.0.0.1:${mgr.value}`;
      return env;
    } catch (err) {
      await env.close();
      throw err;
    }
  }

  /** An `rdbg agent run` of `workload` in front of the app on 127.0.0.1:appPort, linked; returns its listen port. */
  async agent(workload: string, appPort: number): Promise<number> {
    const listenPort = await freePort();
    const a = await child(
      [RDBG, 'agent', 'run', '--manager', this.manager, '--workload', workload, '--namespace', 'default', '--app-port', String(appPort), '--listen-port', String(listenPort)],
      (line) => (line.includes('linked to the traffic manager') ? 'linked' : undefined),
    );
    this.cleanup.push(() => a.proc.kill('SIGKILL'));
    return listenPort;
  }

  /** The laptop stand-in, in its own process, with these intercepts created. */
  async laptop(intercepts: LaptopIntercept[]): Promise<void> {
    const l = await child([__filename, 'laptop', this.manager, JSON.stringify(intercepts)], (line) => (line.startsWith('READY') ? 'ready' : undefined));
    this.cleanup.push(() => l.proc.kill('SIGKILL'));
  }

  async close(): Promise<void> {
    for (const c of this.cleanup.splice(0).reverse()) {
      try {
        await c();
      } catch {
        // best effort
      }
    }
  }
}

/** Child mode: the laptop's daemon stand-in, holding header intercepts. */
async function laptopMain(manager: string, intercepts: LaptopIntercept[]): Promise<void> {
  const l = new FakeLaptop({ manager, user: 'bench@laptop' });
  await l.arrive();
  for (const i of intercepts) {
    await l.createIntercept({ workload: i.workload, namespace: 'default', port: i.port, headers: [{ name: i.header.name, value: i.header.value, regex: false }], local_port: i.localPort });
  }
  process.stdout.write('READY\n');
}

if (require.main === module && process.argv[2] === 'laptop') {
  laptopMain(process.argv[3], JSON.parse(process.argv[4]) as LaptopIntercept[]).catch((err: Error) => {
    process.stderr.write(`bench laptop: ${err.stack}\n`);
    process.exit(1);
  });
}
