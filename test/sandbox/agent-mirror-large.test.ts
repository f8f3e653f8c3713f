import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { RDBG, Sandbox } from '../helpers/sandbox';
import { waitForLine, type Netns } from '../helpers/netns';

// A mirror intercept and large request bodies, with the real agent, manager,
// user daemon and curl: the app always gets the whole body; the laptop gets
// the whole copy, or, when it cannot keep up, the copy is cut and the cut is
// counted where the developer looks (rdbg list, rdbg status, the agent's log).

const TINY = resolve(__dirname, '../helpers/tiny-http.js');
const COUNTER = resolve(__dirname, '../helpers/body-counter.js');
const MiB = 1024 * 1024;

interface Seen {
  url: string;
  bytes: number;
  complete: boolean;
}

let sb: Sandbox;
let pod: Netns;
let agent: ChildProcess;
let agentLog = '';
let laptopApp: ChildProcess;
const seen: Seen[] = [];
let dir = '';

function bodyFile(bytes: number): string {
  const path = join(dir, `body-${bytes}`);
  writeFileSync(path, Buffer.alloc(bytes, 0x62));
  return path;
}

/** A POST from a caller in the cluster through the agent's port; the answer is the app's. */
function post(path: string, file: string) {
  return sb.cluster.run('curl', ['-sS', '--max-time', '60', '--data-binary', `@${file}`, `http://198.18.50.2:9090${path}`], 70_000);
}

async function eventually(check: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return check();
}

async function listJson(): Promise<{ requests: number; mirrors_dropped?: number }[]> {
  return JSON.parse((await sb.laptop.rdbg(['list', '-o', 'json'])).stdout) as { requests: number; mirrors_dropped?: number }[];
}

t.before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rdbg-mirror-'));
  sb = await Sandbox.create();
  pod = sb.addNamespace('p', 50);
  const app = pod.spawn('node', [TINY, '127.0.0.1', '8080', 'app']);
  await waitForLine(app, (l) => l === 'READY', 10_000, 'app');
  agent = pod.spawn('node', [RDBG, 'agent', 'run', '--manager', '198.18.50.1:8081', '--workload', 'echo', '--namespace', 'default',
    '--app-port', '8080', '--listen-port', '9090', '--pod-name', 'echo-1']);
  agent.stdout!.resume();
  agent.stderr!.on('data', (d: Buffer) => (agentLog += d.toString()));
  if (!(await eventually(() => /linked to the traffic manager/.test(agentLog), 15_000))) throw new Error(`agent did not link: ${agentLog}`);
  const c = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress, '--socks', '1080']);
  if (c.code !== 0) throw new Error(c.stderr);
  laptopApp = sb.laptop.ns.spawn('node', [COUNTER, '127.0.0.1', '8081', 'laptop']);
  await waitForLine(laptopApp, (l) => l === 'READY', 10_000, 'laptop app');
  let buf = '';
  laptopApp.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    for (const l of lines) if (l.startsWith('{')) seen.push(JSON.parse(l) as Seen);
  });
  const r = await sb.laptop.rdbg(['intercept', 'echo', '--port', '8081:8080', '--mirror']);
  if (r.code !== 0) throw new Error(r.stderr);
});
t.teardown(() => {
  if (laptopApp?.pid) process.kill(laptopApp.pid, 'SIGCONT');
  sb?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

t.test('a 5 MiB POST: the app gets the whole body and the laptop the whole copy', async (t) => {
  // The laptop accepts the copy late (as over a port-forward, or a laptop busy for a moment):
  // the whole body reaches the agent before the copy's flow is open.
  const daemon = (JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout) as { pid: number }).pid;
  process.kill(daemon, 'SIGSTOP');
  let r;
  try {
    r = await post('/five', bodyFile(5 * MiB));
  } finally {
    process.kill(daemon, 'SIGCONT');
  }
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, new RegExp(`^app POST /five .*body=${5 * MiB} `), 'the app read every byte');
  t.ok(await eventually(() => seen.some((s) => s.url === '/five'), 20_000), 'the copy reached the laptop');
  t.same(seen.find((s) => s.url === '/five'), { name: 'laptop', method: 'POST', url: '/five', bytes: 5 * MiB, complete: true }, 'the whole copy');
  const list = await listJson();
  t.equal(list[0].mirrors_dropped ?? 0, 0, 'no copy dropped');
});

t.test('a laptop that cannot keep up: the copy is cut, counted in list and status, and logged', async (t) => {
  // A stopped process reads nothing: the copy of a large body backs up in the agent.
  process.kill(laptopApp.pid!, 'SIGSTOP');
  const r = await post('/stuck', bodyFile(64 * MiB));
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, new RegExp(`^app POST /stuck .*body=${64 * MiB} `), 'the app read every byte, not slowed by the laptop');
  process.kill(laptopApp.pid!, 'SIGCONT');
  t.ok(await eventually(async () => ((await listJson())[0].mirrors_dropped ?? 0) >= 1, 15_000), 'rdbg list -o json counts the cut copy');
  const table = await sb.laptop.rdbg(['list']);
  t.match(table.stdout, /1 mirror cop(y|ies) dropped/, table.stdout);
  const status = await sb.laptop.rdbg(['status']);
  t.match(status.stdout, /Intercepts: +1 \(1 mirror cop(y|ies) dropped/, status.stdout);
  t.match(agentLog, /mirror copy dropped/, 'the agent logs the drop');
  // The cut copy's connection is reset: the laptop app, resumed, either reads a
  // truncated request or (when the reset came before it read anything) none.
  // What it must never see is a copy that looks whole.
  await new Promise((r) => setTimeout(r, 3000));
  const stuck = seen.filter((s) => s.url === '/stuck');
  t.ok(stuck.every((s) => !s.complete && s.bytes < 64 * MiB), `no whole copy reached the laptop: ${JSON.stringify(stuck)}`);
});
