import t from 'tap';
import { execFile } from 'node:child_process';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { TrafficAgent } from '../../agent/traffic-agent';
import type { FakeLaptop } from '../helpers/fake-laptop';
import { get, intercept, removeIntercept, startAgent, startLaptop, startManager, startServer, type TestServer } from './agent-harness';

// h2c through the traffic agent: every stream routed on its own.

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
  await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: laptopServer.port });
});

function h2session(t: { teardown(fn: () => unknown): void }): http2.ClientHttp2Session {
  const s = http2.connect(`http://127.0.0.1:${agent.listenPort}`);
  s.on('error', () => undefined);
  t.teardown(() => s.destroy());
  return s;
}

function h2get(s: http2.ClientHttp2Session, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = s.request({ ':path': path, ':method': body ? 'POST' : 'GET', ...headers }, { endStream: body === undefined });
    let status = 0;
    let h: http2.IncomingHttpHeaders = {};
    let out = '';
    req.on('response', (rh) => {
      status = Number(rh[':status']);
      h = rh;
    });
    req.setEncoding('utf8');
    req.on('data', (c: string) => (out += c));
    req.on('end', () => resolve({ status, headers: h, body: out }));
    req.on('error', reject);
    req.setTimeout(10_000, () => req.close(http2.constants.NGHTTP2_CANCEL));
    if (body !== undefined) req.end(body);
  });
}

t.test('concurrent streams on one h2c connection are split between both sides', async (t) => {
  const s = h2session(t);
  const jobs = [];
  for (let i = 0; i < 40; i++) {
    const alice = i % 3 === 0;
    jobs.push(
      h2get(s, `/slow?ms=${(i % 5) * 20}&i=${i}`, alice ? { 'x-user': 'alice' } : {}, i % 4 === 0 ? `body-${i}` : undefined).then((r) => ({ i, alice, r })),
    );
  }
  const results = await Promise.all(jobs);
  for (const { i, alice, r } of results) {
    const side = alice ? 'laptop' : 'app';
    t.equal(r.headers['x-served-by'], side, `stream ${i} -> ${side}`);
    const method = i % 4 === 0 ? 'POST' : 'GET';
    t.equal(r.body, `${side} ${method} /slow?ms=${(i % 5) * 20}&i=${i}${i % 4 === 0 ? ` body=body-${i}` : ''}\n`);
  }
});

t.test('large responses stream through both paths', async (t) => {
  const s = h2session(t);
  for (const user of ['alice', 'bob']) {
    const n = 8 * 1024 * 1024;
    const got = await new Promise<number>((resolve, reject) => {
      const req = s.request({ ':path': `/big?n=${n}`, 'x-user': user });
      let k = 0;
      req.on('data', (c: Buffer) => (k += c.length));
      req.on('end', () => resolve(k));
      req.on('error', reject);
    });
    t.equal(got, n, `${user}: all bytes`);
  }
});

t.test('curl --http2-prior-knowledge reaches both sides', async (t) => {
  const run = (args: string[]): Promise<string> =>
    new Promise((resolve, reject) => execFile('curl', ['-sS', '--max-time', '10', '--http2-prior-knowledge', ...args], (err, out) => (err ? reject(err) : resolve(out))));
  t.equal(await run([`http://127.0.0.1:${agent.listenPort}/c1`, '-H', 'x-user: alice']), 'laptop GET /c1\n');
  t.equal(await run([`http://127.0.0.1:${agent.listenPort}/c2`]), 'app GET /c2\n');
  const both = await run(['-D', '-', `http://127.0.0.1:${agent.listenPort}/status/404`, '-H', 'x-user: alice']);
  t.match(both, /^HTTP\/2 404/);
});

t.test('h2load: many streams over several connections, all answered', async (t) => {
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      'h2load',
      ['-n', '600', '-c', '4', '-m', '20', '-H', 'x-user: alice', `http://127.0.0.1:${agent.listenPort}/load`],
      { timeout: 30_000 },
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    ),
  );
  t.match(out, /requests: 600 total, 600 started, 600 done, 600 succeeded, 0 failed, 0 errored/);
  const out2 = await new Promise<string>((resolve, reject) =>
    execFile('h2load', ['-n', '600', '-c', '4', '-m', '20', `http://127.0.0.1:${agent.listenPort}/load`], { timeout: 30_000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    ),
  );
  t.match(out2, /600 succeeded, 0 failed/);
});

t.test('kube-probe over h2 reaches the app', async (t) => {
  const s = h2session(t);
  const r = await h2get(s, '/healthz', { 'user-agent': 'kube-probe/1.30', 'x-user': 'alice' });
  t.equal(r.headers['x-served-by'], 'app');
});

t.test('a laptop that is not listening: 502 with the reason on that stream only', async (t) => {
  const dead = net.createServer();
  const port = await new Promise<number>((r) => dead.listen(0, '127.0.0.1', () => r((dead.address() as net.AddressInfo).port)));
  await new Promise((r) => dead.close(r));
  const id = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'carol', regex: false }], local_port: port });
  t.teardown(() => removeIntercept(laptop, agent, id));
  const s = h2session(t);
  const [bad, a, b] = await Promise.all([h2get(s, '/x', { 'x-user': 'carol' }), h2get(s, '/y', { 'x-user': 'alice' }), h2get(s, '/z')]);
  t.equal(bad.status, 502);
  t.equal(bad.body, `rdbg intercept of shop by dev@laptop could not reach 127.0.0.1:${port}: connection refused (ECONNREFUSED)\n`);
  t.equal(a.headers['x-served-by'], 'laptop');
  t.equal(b.headers['x-served-by'], 'app');
});

t.test('the laptop session dies and is opened again', async (t) => {
  const s = h2session(t);
  t.equal((await h2get(s, '/one', { 'x-user': 'alice' })).headers['x-served-by'], 'laptop');
  // The laptop side drops every flow (its daemon restarts).
  await laptop.stopWatching();
  laptop.watchDiversions();
  await new Promise((r) => setTimeout(r, 200));
  const r = await h2get(s, '/two', { 'x-user': 'alice' });
  t.equal(r.headers['x-served-by'], 'laptop', 'a new session to the laptop');
  t.equal((await h2get(s, '/three')).headers['x-served-by'], 'app');
});

t.test('malformed HTTP/2 frames cost only their own connection', async (t) => {
  const s = h2session(t);
  t.equal((await h2get(s, '/before')).headers['x-served-by'], 'app');
  const preface = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
  const garbage = [
    Buffer.concat([Buffer.from(preface), Buffer.from([0, 0, 4, 0xff, 0, 0, 0, 0, 0, 1, 2, 3, 4])]), // unknown-type frame is fine, then garbage
    Buffer.concat([Buffer.from(preface), Buffer.from([0, 0, 6, 4, 0, 0, 0, 0, 1])]), // truncated SETTINGS on stream 1
    Buffer.concat([Buffer.from(preface), Buffer.from([0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0])]), // oversized DATA on stream 0
    Buffer.concat([Buffer.from(preface), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]), Buffer.from([0, 0, 5, 1, 5, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0x00])]), // HEADERS with a broken HPACK block
    Buffer.from(preface.slice(0, 24) + 'x'.repeat(50)),
  ];
  for (const g of garbage) {
    await new Promise<void>((resolve) => {
      const c = net.connect(agent.listenPort, '127.0.0.1');
      c.on('error', () => undefined);
      c.on('close', () => resolve());
      c.on('data', () => undefined);
      c.write(g);
      setTimeout(() => {
        c.destroy();
        resolve();
      }, 1000);
    });
  }
  // A stream reset by the caller mid-response.
  const big = s.request({ ':path': '/big?n=50000000', 'x-user': 'alice' });
  big.on('error', () => undefined);
  await new Promise<void>((r) => big.once('data', () => r()));
  big.close(http2.constants.NGHTTP2_CANCEL);
  // A caller connection that vanishes with streams open.
  const s2 = http2.connect(`http://127.0.0.1:${agent.listenPort}`);
  s2.on('error', () => undefined);
  const open = s2.request({ ':path': '/slow?ms=300', ':method': 'POST', 'x-user': 'alice' }, { endStream: false });
  open.on('error', () => undefined);
  open.write('partial');
  await new Promise((r) => setTimeout(r, 50));
  s2.destroy();
  t.equal((await h2get(s, '/after')).headers['x-served-by'], 'app', 'the good connection still works');
  t.equal((await h2get(s, '/after', { 'x-user': 'alice' })).headers['x-served-by'], 'laptop');
  t.equal((await get(agent.listenPort, '/h1-after')).headers['x-served-by'], 'app', 'HTTP/1 unaffected');
});

t.test('a bug in the routing costs its own connection, never the agent', async (t) => {
  const table = agent.table as unknown as { divertFor: (...a: unknown[]) => unknown };
  const real = table.divertFor;
  table.divertFor = () => {
    throw new Error('a bug');
  };
  const s = h2session(t);
  const broken = await h2get(s, '/boom', { 'x-user': 'alice' }).then(
    () => 'answered',
    (err: NodeJS.ErrnoException) => err.code ?? err.message,
  );
  table.divertFor = real;
  t.not(broken, 'answered', `that connection fails (${broken})`);
  const s2 = h2session(t);
  t.equal((await h2get(s2, '/fine', { 'x-user': 'alice' })).headers['x-served-by'], 'laptop', 'a new one is served');
});

t.test('a CONTINUATION flood ends its own connection with ENHANCE_YOUR_CALM', async (t) => {
  const { frame, PREFACE, T } = await import('../../agent/h2-frames');
  const sock = net.connect(agent.listenPort, '127.0.0.1');
  t.teardown(() => sock.destroy());
  let got = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
  sock.on('error', () => undefined);
  const closed = new Promise((r) => sock.on('close', r));
  sock.write(Buffer.concat([PREFACE, frame(T.SETTINGS, 0, 0), frame(T.HEADERS, 0, 1, Buffer.from([0x82]))]));
  const junk = frame(T.CONTINUATION, 0, 1, Buffer.alloc(16_000, 0x40));
  for (let i = 0; i < 40 && !sock.destroyed; i++) sock.write(junk);
  await closed;
  let code = -1;
  for (let i = 0; i + 9 <= got.length; ) {
    const len = got.readUIntBE(i, 3);
    if (got[i + 3] === T.GOAWAY) code = got.readUInt32BE(i + 13);
    i += 9 + len;
  }
  t.equal(code, 0xb, 'GOAWAY ENHANCE_YOUR_CALM');
  t.equal((await h2get(h2session(t), '/after')).headers['x-served-by'], 'app', 'others are served');
});

t.test("a laptop that answers before the app's SETTINGS: the answer waits for them (a server's first frame)", async (t) => {
  // The app's side of the connection is slow to start: 300 ms before its first byte.
  const slowFront = net.createServer((sock) => {
    sock.on('error', () => undefined);
    const up = net.connect(app.port, '127.0.0.1');
    up.on('error', () => sock.destroy());
    sock.pipe(up);
    setTimeout(() => up.pipe(sock), 300);
  });
  const port = await new Promise<number>((r) => slowFront.listen(0, '127.0.0.1', () => r((slowFront.address() as net.AddressInfo).port)));
  t.teardown(() => slowFront.close());
  const slow = await startAgent(t, managerPort, port);
  const id = await intercept(laptop, slow, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: laptopServer.port });
  t.teardown(() => removeIntercept(laptop, slow, id));
  const s = http2.connect(`http://127.0.0.1:${slow.listenPort}`);
  s.on('error', () => undefined);
  t.teardown(() => s.destroy());
  const r = await h2get(s, '/early', { 'x-user': 'alice' });
  t.equal(r.headers['x-served-by'], 'laptop');
  t.equal(r.body, 'laptop GET /early\n');
});
