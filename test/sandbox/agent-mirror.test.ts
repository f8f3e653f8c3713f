import t from 'tap';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { TrafficAgent } from '../../agent/traffic-agent';
import type { FakeLaptop } from '../helpers/fake-laptop';
import { get, intercept, removeIntercept, startAgent, startEcho, startLaptop, startManager, startServer, waitFor, type TestServer } from './agent-harness';

// Mirror intercepts: the app answers the caller; the laptop gets a copy whose
// answer is dropped, and a slow, paused or absent laptop never delays the caller.

let app: TestServer;
let laptopServer: TestServer;
let agent: TrafficAgent;
let laptop: FakeLaptop;
let managerPort: number;

t.before(async () => {
  const manager = await startManager(t);
  managerPort = manager.port;
  app = await startServer(t, 'app');
  laptopServer = await startServer(t, 'laptop');
  agent = await startAgent(t, manager.port, app.port);
  laptop = await startLaptop(t, manager.port);
});

t.test('HTTP/1 and h2: the app answers, the laptop sees a copy', async (t) => {
  const id = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], mirror: true, local_port: laptopServer.port });
  t.teardown(() => removeIntercept(laptop, agent, id));
  const r = await get(agent.listenPort, '/m1', { 'x-user': 'alice' });
  t.equal(r.headers['x-served-by'], 'app');
  const r2 = await get(agent.listenPort, '/m2', { 'x-user': 'bob' });
  t.equal(r2.headers['x-served-by'], 'app');
  await waitFor(() => laptopServer.seen.includes('GET /m1'), 3000, 'the laptop got the copy');
  t.notOk(laptopServer.seen.includes('GET /m2'), 'non-matching requests are not copied');
  t.ok(app.seen.includes('GET /m1') && app.seen.includes('GET /m2'));

  const s = http2.connect(`http://127.0.0.1:${agent.listenPort}`);
  s.on('error', () => undefined);
  t.teardown(() => s.destroy());
  const body = await new Promise<string>((resolve, reject) => {
    const req = s.request({ ':path': '/m3', ':method': 'POST', 'x-user': 'alice' });
    let out = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (out += c));
    req.on('end', () => resolve(out));
    req.on('error', reject);
    req.end('payload');
  });
  t.equal(body, 'app POST /m3 body=payload\n');
  await waitFor(() => laptopServer.seen.includes('POST /m3'), 3000, 'the laptop got the h2 copy');
});

t.test('a mirror and a divert on the same port work side by side', async (t) => {
  const m = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], mirror: true, local_port: laptopServer.port });
  const d = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'bob', regex: false }], local_port: laptopServer.port });
  t.teardown(async () => {
    await removeIntercept(laptop, agent, m);
    await removeIntercept(laptop, agent, d);
  });
  t.equal((await get(agent.listenPort, '/s1', { 'x-user': 'alice' })).headers['x-served-by'], 'app');
  t.equal((await get(agent.listenPort, '/s2', { 'x-user': 'bob' })).headers['x-served-by'], 'laptop');
});

t.test('a paused or absent mirror laptop never delays the caller', async (t) => {
  const conns: net.Socket[] = [];
  const stuck = net.createServer((s) => {
    s.on('error', () => undefined);
    conns.push(s);
  });
  const port = await new Promise<number>((r) => stuck.listen(0, '127.0.0.1', () => r((stuck.address() as net.AddressInfo).port)));
  t.teardown(() => {
    for (const c of conns) c.destroy();
    stuck.close();
  });
  const id = await intercept(laptop, agent, { mirror: true, local_port: port });
  const t0 = Date.now();
  for (let i = 0; i < 10; i++) t.equal((await get(agent.listenPort, `/p${i}`)).headers['x-served-by'], 'app');
  t.ok(Date.now() - t0 < 2000, `ten requests in ${Date.now() - t0} ms`);
  await waitFor(() => conns.length > 0, 3000, 'copies reached the paused laptop');
  // A global mirror and a header mirror compete for the same requests: one at a time.
  await removeIntercept(laptop, agent, id);

  const dead = net.createServer();
  const deadPort = await new Promise<number>((r) => dead.listen(0, '127.0.0.1', () => r((dead.address() as net.AddressInfo).port)));
  await new Promise((r) => dead.close(r));
  const id2 = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'zed', regex: false }], mirror: true, local_port: deadPort });
  t.teardown(() => removeIntercept(laptop, agent, id2));
  const r = await get(agent.listenPort, '/q', { 'x-user': 'zed' });
  t.equal(r.status, 200);
  t.equal(r.headers['x-served-by'], 'app');
});

t.test('a global mirror of a raw TCP port copies the bytes to the laptop', async (t) => {
  const appEcho = await startEcho(t, 'app');
  const lapEcho = await startEcho(t, 'laptop');
  const a = await startAgent(t, managerPort, appEcho.port);
  const id = await intercept(laptop, a, { mirror: true, local_port: lapEcho.port });
  t.teardown(() => removeIntercept(laptop, a, id));
  const out = await new Promise<string>((resolve) => {
    const s = net.connect({ port: a.listenPort, host: '127.0.0.1', allowHalfOpen: true });
    let buf = '';
    s.on('data', (c) => (buf += c));
    s.on('end', () => resolve(buf));
    s.write('\x00\x01binary');
    setTimeout(() => s.end(), 50);
  });
  t.equal(out, 'app:\x00\x01binary', 'the caller hears only the app');
  await waitFor(() => lapEcho.received.join('') === '\x00\x01binary', 3000, 'the laptop got the bytes');
  t.pass('copied');
});
