import t from 'tap';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { TrafficAgent } from '../../agent/traffic-agent';
import type { FakeLaptop } from '../helpers/fake-laptop';
import { get, intercept, rawExchange, removeIntercept, startAgent, startEcho, startLaptop, startManager, startServer, waitFor, type TestServer } from './agent-harness';

// Raw TCP, TLS-looking bytes and server-speaks-first protocols pass to the app
// untouched; a global intercept (no header, no path) diverts whole connections.

let echoAgent: TrafficAgent;
let httpAgent: TrafficAgent;
let laptop: FakeLaptop;
let laptopEcho: { port: number; received: string[] };
let laptopHttp: TestServer;
let app: TestServer;
let managerPort: number;

t.before(async () => {
  const manager = await startManager(t);
  managerPort = manager.port;
  const appEcho = await startEcho(t, 'app');
  laptopEcho = await startEcho(t, 'laptop');
  app = await startServer(t, 'app');
  laptopHttp = await startServer(t, 'laptop');
  echoAgent = await startAgent(t, manager.port, appEcho.port);
  httpAgent = await startAgent(t, manager.port, app.port);
  laptop = await startLaptop(t, manager.port);
});

/** Write, half-close, and read until the other side ends. */
function talk(port: number, data: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let out = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no end; got ${JSON.stringify(out)}`));
    }, 5000);
    s.on('data', (c: Buffer) => (out += c.toString('latin1')));
    s.on('end', () => {
      clearTimeout(timer);
      s.end();
      resolve(out);
    });
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.write(data);
    setTimeout(() => s.end(), 50);
  });
}

t.test('raw TCP, TLS-looking bytes and redis-like verbs go to the app untouched', async (t) => {
  t.equal(await talk(echoAgent.listenPort, 'hello'), 'app:hello');
  const tls = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]);
  t.equal(await talk(echoAgent.listenPort, tls), 'app:' + tls.toString('latin1'));
  t.equal(await talk(echoAgent.listenPort, 'SET key value\r\n'), 'app:SET key value\r\n');
  // A FIN before the protocol is clear still delivers the bytes and the FIN.
  const early = await new Promise<string>((resolve) => {
    const s = net.connect({ port: echoAgent.listenPort, host: '127.0.0.1', allowHalfOpen: true });
    let out = '';
    s.on('data', (c) => (out += c));
    s.on('end', () => resolve(out));
    s.end('GE');
  });
  t.equal(early, 'app:GE');
});

t.test('a server that speaks first is reached (after the sniff timeout)', async (t) => {
  const greeter = await startEcho(t, 'db', '220 ready\r\n');
  const a = await startAgent(t, managerPort, greeter.port);
  const out = await rawExchange(a.listenPort, Buffer.alloc(0), (s) => s.includes('220 ready'));
  t.equal(out, '220 ready\r\n');
});

t.test('a global intercept diverts whole connections: raw TCP, HTTP/1 and h2', async (t) => {
  const id = await intercept(laptop, echoAgent, { local_port: laptopEcho.port });
  t.equal(await talk(echoAgent.listenPort, 'hello'), 'laptop:hello');
  t.ok(laptopEcho.received.includes('hello'));
  await removeIntercept(laptop, echoAgent, id);
  t.equal(await talk(echoAgent.listenPort, 'again'), 'app:again', 'back to the app once removed');

  const hid = await intercept(laptop, httpAgent, { local_port: laptopHttp.port });
  t.teardown(() => removeIntercept(laptop, httpAgent, hid));
  const r = await get(httpAgent.listenPort, '/any');
  t.equal(r.headers['x-served-by'], 'laptop');
  const probe = await get(httpAgent.listenPort, '/healthz', { 'user-agent': 'kube-probe/1.30' });
  t.equal(probe.headers['x-served-by'], 'app', 'kubelet probes still reach the app');
  const s = http2.connect(`http://127.0.0.1:${httpAgent.listenPort}`);
  s.on('error', () => undefined);
  const who = await new Promise<string>((resolve, reject) => {
    const req = s.request({ ':path': '/h2' });
    req.on('response', (h) => resolve(String(h['x-served-by'])));
    req.on('error', reject);
    req.resume();
  });
  t.equal(who, 'laptop');
  // Still open when the intercept ends (teardown): its diverted connection is reset under it.
  t.teardown(() => s.destroy());
});

t.test('a global intercept whose laptop is not listening: RST for raw TCP, 502 for HTTP', async (t) => {
  const dead = net.createServer();
  const port = await new Promise<number>((r) => dead.listen(0, '127.0.0.1', () => r((dead.address() as net.AddressInfo).port)));
  await new Promise((r) => dead.close(r));
  const id = await intercept(laptop, echoAgent, { local_port: port });
  const err = await talk(echoAgent.listenPort, 'hello').then(
    (out) => new Error(`answered ${out}`),
    (e: NodeJS.ErrnoException) => e,
  );
  t.equal((err as NodeJS.ErrnoException).code, 'ECONNRESET');
  await removeIntercept(laptop, echoAgent, id);

  const hid = await intercept(laptop, httpAgent, { local_port: port });
  t.teardown(() => removeIntercept(laptop, httpAgent, hid));
  const r = await get(httpAgent.listenPort, '/x');
  t.equal(r.status, 502);
  t.equal(r.body, `rdbg intercept of shop by dev@laptop could not reach 127.0.0.1:${port}: connection refused (ECONNREFUSED)\n`);
});

t.test('an intercept of a port no agent of the workload serves is refused, naming its ports', async (t) => {
  const before = echoAgent.table.size;
  await t.rejects(laptop.createIntercept({ workload: 'shop', namespace: 'default', port: 9, local_port: laptopEcho.port }),
    { code: 9, details: /^shop in namespace default has no port 9 \(its ports: / }); // FAILED_PRECONDITION
  await new Promise((r) => setTimeout(r, 300));
  t.equal(echoAgent.table.size, before, 'the agents hold nothing new');
  t.equal(await talk(echoAgent.listenPort, 'x'), 'app:x');
});

t.test('ending a global intercept resets the connections it diverted; new ones reach the app', async (t) => {
  const id = await intercept(laptop, echoAgent, { local_port: laptopEcho.port });
  const s = net.connect(echoAgent.listenPort, '127.0.0.1');
  t.teardown(() => s.destroy());
  let got = '';
  const closed = new Promise<string>((resolve) => {
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    s.on('close', () => resolve('closed'));
  });
  s.on('data', (c) => (got += c));
  s.write('one');
  const t0 = Date.now();
  while (!got.includes('laptop:one') && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 20));
  t.equal(got, 'laptop:one');
  await removeIntercept(laptop, echoAgent, id);
  t.equal(await closed, 'ECONNRESET', 'the diverted connection was reset');
  t.equal(await talk(echoAgent.listenPort, 'two'), 'app:two');
});

t.test("the app's connection opens as the caller's is accepted, before its first bytes; not when a global intercept takes the port", async (t) => {
  // An echo app, behind an agent that would wait 10 s for a silent caller's first bytes.
  const app = await startEcho(t, 'app');
  const agent = await startAgent(t, managerPort, app.port, { sniffTimeoutMs: 10_000 });

  const caller = net.connect({ port: agent.listenPort, host: '127.0.0.1', allowHalfOpen: true });
  t.teardown(() => caller.destroy());
  await waitFor(() => app.accepted() === 1, 3000, 'the app connection, while the caller has sent nothing');
  let out = '';
  caller.on('data', (c: Buffer) => (out += c.toString('latin1')));
  const ended = new Promise((r) => caller.once('end', r));
  caller.end('hello');
  await ended;
  t.equal(out, 'app:hello', "the caller's bytes went over that connection");
  t.equal(app.accepted(), 1, 'and no second one was opened');

  const id = await intercept(laptop, agent, { local_port: laptopEcho.port });
  t.teardown(() => removeIntercept(laptop, agent, id));
  t.equal(await talk(agent.listenPort, 'ping'), 'laptop:ping', 'diverted whole');
  t.equal(app.accepted(), 1, 'a diverted connection opens none to the app');
});
