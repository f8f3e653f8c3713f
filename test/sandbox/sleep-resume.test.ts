import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { RDBG, Sandbox, type Laptop } from '../helpers/sandbox';
import { waitForLine, type Netns } from '../helpers/netns';

// A laptop that sleeps (its user daemon stopped past its lease), a manager that
// pauses, a daemon that wakes with overdue timers: after each, one session
// comes back, the intercept with it, and `rdbg list` and `rdbg status` agree.

const TINY = resolve(__dirname, '../helpers/tiny-http.js');
const RELAY = resolve(__dirname, '../helpers/delay-relay.js');
/** The manager as the laptop reaches it: 150 ms away each way, so that an Arrive takes longer than a retry's first delay. */
const FAR = '127.0.0.1:8081';
let sb: Sandbox;
let lap: Laptop;
let pod: Netns;
const podAddr = '198.18.50.2';
const procs: ChildProcess[] = [];

function call(headers: string[] = []) {
  return sb.cluster.run('curl', ['-sS', '--max-time', '5', ...headers.flatMap((h) => ['-H', h]), `http://${podAddr}:9090/`], 10_000);
}

interface Status {
  state: string;
  session_id: string;
  reconnects: number;
  intercepts: number;
  pid: number;
  events: { event: string }[];
}

async function status(): Promise<Status> {
  const r = await lap.rdbg(['status', '-o', 'json']);
  return JSON.parse(r.stdout) as Status;
}

async function list(all = false): Promise<{ state: string; session_id: string; owner: string }[]> {
  const r = await lap.rdbg(['list', '-o', 'json', ...(all ? ['--all'] : [])]);
  return JSON.parse(r.stdout);
}

/** Milliseconds until `check` holds, or -1 after `ms`. */
async function until(check: () => Promise<boolean>, ms: number): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if (await check()) return Date.now() - start;
    await new Promise((r) => setTimeout(r, 100));
  }
  return -1;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const diverted = async (): Promise<boolean> => (await call(['x-dev: me'])).stdout.startsWith('laptop ');

t.before(async () => {
  sb = await Sandbox.create({ laptops: 1 });
  lap = sb.laptop;
  pod = sb.addNamespace('p', 50);
  const app = pod.spawn('node', [TINY, '127.0.0.1', '8080', 'app']);
  await waitForLine(app, (l) => l === 'READY', 10_000, 'app');
  const agent = pod.spawn('node', [RDBG, 'agent', 'run', '--manager', '198.18.50.1:8081', '--workload', 'echo', '--namespace', 'default',
    '--app-port', '8080', '--listen-port', '9090', '--pod-name', 'echo-1']);
  agent.stdout!.resume();
  await new Promise<void>((res, rej) => {
    let err = '';
    const timer = setTimeout(() => rej(new Error(`agent did not register: ${err}`)), 15_000);
    agent.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (!/linked to the traffic manager/.test(err)) return;
      clearTimeout(timer);
      res();
    });
  });
  procs.push(agent);
  const local = lap.ns.spawn('node', [TINY, '127.0.0.1', '9081', 'laptop']);
  await waitForLine(local, (l) => l === 'READY', 10_000, 'local app');
  procs.push(local);
  const m = lap.managerAddress.split(':')[0];
  const relay = lap.ns.spawn('node', [RELAY, '150', `${FAR}=${m}:8081`, `127.0.0.1:8082=${m}:8082`]);
  await waitForLine(relay, (l) => l === 'READY', 10_000, 'delay relay');
  procs.push(relay);
  const c = await lap.rdbg(['connect', '--manager', FAR, '--socks', '1080']);
  if (c.code !== 0) throw new Error(c.stderr);
  const i = await lap.rdbg(['intercept', 'echo', '--port', '9081:8080', '--header', 'x-dev=me']);
  if (i.code !== 0) throw new Error(i.stderr);
  if ((await until(diverted, 10_000)) < 0) throw new Error('the intercept never diverted');
});
t.teardown(async () => {
  await lap?.rdbg(['quit']).catch(() => undefined);
  for (const p of procs) p.kill('SIGKILL');
  sb?.destroy();
});

t.test('a laptop asleep past its lease comes back with one new session and its intercept', async (t) => {
  const before = await status();
  process.kill(before.pid, 'SIGSTOP');
  await sleep(20_000); // the lease is 15 s: the manager ends the session and its intercept
  t.notOk(await diverted(), 'while asleep, header traffic goes to the app');
  process.kill(before.pid, 'SIGCONT');
  const ms = await until(diverted, 15_000);
  t.ok(ms >= 0, `header traffic reaches the laptop again (after ${ms} ms)`);
  t.comment(`intercept back ${ms} ms after the laptop woke`);
  await sleep(4_000); // a second, racing arrival would show up by now
  const after = await status();
  t.equal(after.state, 'CONNECTED');
  t.not(after.session_id, before.session_id, 'the expired session was replaced');
  t.equal(after.reconnects, before.reconnects + 1, 'exactly one reconnect');
  const all = await list(true);
  t.equal(all.length, 1, 'the manager holds one intercept of this laptop');
  t.equal(all[0].session_id, after.session_id, 'on the current session');
  const l = await list();
  t.equal(l.length, 1, 'rdbg list shows it');
  t.equal(l[0].state, 'ACTIVE');
  t.equal(after.intercepts, l.length, 'rdbg status counts what rdbg list shows');
  t.ok(await diverted(), 'and it still diverts, on a session that keeps its heartbeats');
});

t.test('a short loss of the manager resumes the same session: the intercept never goes', async (t) => {
  const before = await status();
  const m = sb.manager!;
  m.kill('SIGSTOP');
  await sleep(6_000); // heartbeats time out; the lease (15 s) does not
  t.equal((await status()).state, 'RECONNECTING', 'the link saw the manager go');
  m.kill('SIGCONT');
  const ms = await until(async () => (await status()).state === 'CONNECTED', 10_000);
  t.ok(ms >= 0, `connected again after ${ms} ms`);
  const after = await status();
  t.equal(after.session_id, before.session_id, 'the same session was resumed');
  t.ok(await diverted(), 'the intercept stayed');
  t.match(after.events.map((e) => e.event).join('\n'), /resumed session/);
});

t.test('a manager paused past the lease does not expire the sessions it could not hear', async (t) => {
  const before = await status();
  const m = sb.manager!;
  m.kill('SIGSTOP');
  await sleep(20_000);
  m.kill('SIGCONT');
  const ms = await until(diverted, 15_000);
  t.ok(ms >= 0, `the intercept diverts again after ${ms} ms`);
  await sleep(4_000);
  const after = await status();
  t.equal(after.session_id, before.session_id, 'the session survived the manager pause');
  t.equal((await list(true)).length, 1, 'one intercept, no duplicate');
  t.equal(after.intercepts, (await list()).length);
});
