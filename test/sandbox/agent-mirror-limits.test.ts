import t from 'tap';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { ManagerServer } from '../../manager/server';
import type { TrafficAgent } from '../../agent/traffic-agent';
import type { FakeLaptop } from '../helpers/fake-laptop';
import { get, intercept, type Teardown, startAgent, startEcho, startLaptop, startManager, startServer, waitFor, type TestServer } from './agent-harness';

// The agent's limits on mirror copies, with a laptop that takes diversions
// but never accepts them (as a laptop far away, or asleep, would): the whole
// body queues in the agent. Past the limits the copy is dropped, the caller
// is served in full by the app, and the drop reaches the manager's list.

const KiB = 1024;
const LIMITS = { copyBytes: 256 * KiB, totalBytes: 512 * KiB, inFlight: 2 };
const BODY = Buffer.alloc(1024 * KiB, 0x6d);

let manager: ManagerServer;
let app: TestServer;
let laptop: FakeLaptop;

t.before(async () => {
  manager = await startManager(t);
  app = await startServer(t, 'app');
  laptop = await startLaptop(t, manager.port);
  // Watch the diversions but answer none: each copy waits for a flow that does not open.
  await laptop.stopWatching();
  const held = laptop.client.WatchDiversions({ session_id: laptop.sessionId });
  held.on('data', () => undefined);
  held.on('error', () => undefined);
  t.teardown(() => held.cancel());
});

async function dropped(id: string): Promise<number> {
  const i = (await laptop.listIntercepts()).find((x) => x.id === id);
  return Number(i?.mirrors_dropped ?? 0);
}

async function eventuallyDropped(id: string, atLeast: number): Promise<number> {
  const until = Date.now() + 5000;
  let n = await dropped(id);
  while (n < atLeast && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    n = await dropped(id);
  }
  return n;
}

async function mirrorAgent(t: Teardown, appPort: number, limits = LIMITS): Promise<{ agent: TrafficAgent; id: string }> {
  const agent = await startAgent(t, manager.port, appPort, { mirrorLimits: limits });
  const id = await intercept(laptop, agent, { mirror: true, local_port: 9 });
  t.teardown(() => laptop.removeIntercept(id));
  return { agent, id };
}

function post1(port: number, path: string, body: Buffer): Promise<{ status: number; served: string; length: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', agent: false }, (res) => {
      let length = 0;
      res.on('data', (c: Buffer) => (length += c.length));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, served: String(res.headers['x-served-by']), length }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

t.test('HTTP/1: a copy over the per-copy limit is dropped and counted; the app gets the body', async (t) => {
  const { agent, id } = await mirrorAgent(t, app.port);
  const r = await post1(agent.listenPort, '/h1', BODY);
  t.equal(r.status, 200);
  t.equal(r.served, 'app');
  t.equal(r.length, `app POST /h1 body=\n`.length + BODY.length, 'the app echoed the whole body');
  t.equal(await eventuallyDropped(id, 1), 1, 'one copy dropped, reported by the heartbeat');
});

t.test('HTTP/2: the same for a stream', async (t) => {
  const { agent, id } = await mirrorAgent(t, app.port);
  const s = http2.connect(`http://127.0.0.1:${agent.listenPort}`);
  s.on('error', () => undefined);
  t.teardown(() => s.destroy());
  const length = await new Promise<number>((resolve, reject) => {
    const req = s.request({ ':path': '/h2', ':method': 'POST' });
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => resolve(n));
    req.on('error', reject);
    req.end(BODY);
  });
  t.equal(length, `app POST /h2 body=\n`.length + BODY.length, 'the app echoed the whole body');
  t.equal(await eventuallyDropped(id, 1), 1);
});

t.test('a raw TCP connection: the copy is cut past the limit, the app hears every byte', async (t) => {
  const echo = await startEcho(t, 'app');
  const { agent, id } = await mirrorAgent(t, echo.port);
  const payload = Buffer.concat([Buffer.from([0, 1, 2]), BODY]);
  const heard = await new Promise<number>((resolve) => {
    const s = net.connect({ port: agent.listenPort, host: '127.0.0.1', allowHalfOpen: true });
    let n = 0;
    s.on('data', (c: Buffer) => (n += c.length));
    s.on('end', () => resolve(n));
    s.on('error', () => resolve(n));
    s.end(payload);
  });
  t.equal(echo.received.join('').length, payload.length, 'the app got every byte');
  t.ok(heard >= payload.length, 'and answered');
  t.equal(await eventuallyDropped(id, 1), 1);
});

t.test('copies beyond the in-flight limit are not sent, and counted', async (t) => {
  const { agent, id } = await mirrorAgent(t, app.port, { ...LIMITS, inFlight: 1 });
  // The first copy waits for the laptop; the next two find no room.
  for (const p of ['/a', '/b', '/c']) t.equal((await get(agent.listenPort, p)).headers['x-served-by'], 'app');
  t.equal(await eventuallyDropped(id, 2), 2);
});

t.test('the limits together: two copies that each fit but not both', async (t) => {
  const { agent, id } = await mirrorAgent(t, app.port, { copyBytes: 512 * KiB, totalBytes: 640 * KiB, inFlight: 4 });
  const half = BODY.subarray(0, 400 * KiB);
  const [a, b] = await Promise.all([post1(agent.listenPort, '/t1', half), post1(agent.listenPort, '/t2', half)]);
  t.equal(a.served + b.served, 'appapp');
  t.equal(await eventuallyDropped(id, 1), 1, 'the agent-wide limit cut one copy');
  t.ok(agent.mirrors.held >= 400 * KiB, `the other copy is still queued whole (${agent.mirrors.held} bytes)`);
});

t.test('a laptop that keeps up gets every copy', async (t) => {
  const lap = await startServer(t, 'laptop');
  const other = await startLaptop(t, manager.port, 'fast@laptop');
  // Copies trail their requests a little: room for all five in flight at once.
  const agent = await startAgent(t, manager.port, app.port, { mirrorLimits: { ...LIMITS, inFlight: 8 } });
  const id = await intercept(other, agent, { mirror: true, local_port: lap.port });
  t.teardown(() => other.removeIntercept(id));
  // Below the per-copy limit, sent one after another.
  for (let i = 0; i < 5; i++) t.equal((await post1(agent.listenPort, `/k${i}`, BODY.subarray(0, 200 * KiB))).served, 'app');
  await waitFor(() => lap.seen.filter((s) => s.startsWith('POST /k')).length === 5, 5000, 'five copies');
  t.equal(Number((await other.listIntercepts()).find((x) => x.id === id)?.mirrors_dropped ?? 0), 0);
});
