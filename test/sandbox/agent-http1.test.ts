import t from 'tap';
import * as http from 'node:http';
import * as net from 'node:net';
import type { TrafficAgent } from '../../agent/traffic-agent';
import type { FakeLaptop } from '../helpers/fake-laptop';
import {
  get,
  intercept,
  listen,
  rawExchange,
  removeIntercept,
  startAgent,
  startLaptop,
  startManager,
  startServer,
  wsFrame,
  wsParse,
  type TestServer,
} from './agent-harness';

// HTTP/1.1 through the traffic agent: a real manager, the agent, an app, and a
// laptop server reached through the FakeLaptop (stand-in for the user daemon).

let app: TestServer;
let laptopServer: TestServer;
let agent: TrafficAgent;
let laptop: FakeLaptop;
let interceptId: string;

t.before(async () => {
  const manager = await startManager(t);
  app = await startServer(t, 'app');
  laptopServer = await startServer(t, 'laptop');
  agent = await startAgent(t, manager.port, app.port);
  laptop = await startLaptop(t, manager.port);
  interceptId = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: laptopServer.port });
});

t.test('with and without the header, alternating on one keep-alive connection', async (t) => {
  const ka = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => ka.destroy());
  const sockets = new Set<net.Socket>();
  for (let i = 0; i < 6; i++) {
    const alice = i % 2 === 0;
    const r = await get(agent.listenPort, `/item/${i}`, alice ? { 'x-user': 'alice' } : { 'x-user': 'bob' }, ka);
    sockets.add(r.socket);
    t.equal(r.status, 200);
    t.equal(r.headers['x-served-by'], alice ? 'laptop' : 'app', `request ${i} answered by the right side`);
    t.equal(r.body, `${alice ? 'laptop' : 'app'} GET /item/${i}\n`);
  }
  t.equal(sockets.size, 1, 'all six requests used one client connection');
});

t.test('pipelined requests are answered in order, each by its side', async (t) => {
  const reqs = [
    'GET /slow?ms=150&n=1 HTTP/1.1\r\nHost: x\r\nx-user: alice\r\n\r\n',
    'GET /p2 HTTP/1.1\r\nHost: x\r\n\r\n',
    'POST /p3 HTTP/1.1\r\nHost: x\r\nx-user: alice\r\nContent-Length: 5\r\n\r\nhello',
    'GET /slow?ms=50&n=4 HTTP/1.1\r\nHost: x\r\n\r\n',
    'GET /p5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
  ].join('');
  const out = await rawExchange(agent.listenPort, reqs, () => false, 8000);
  const bodies = out.split(/HTTP\/1\.1 200 OK/).slice(1).map((r) => r.slice(r.indexOf('\r\n\r\n') + 4));
  t.same(bodies, [
    'laptop GET /slow?ms=150&n=1\n',
    'app GET /p2\n',
    'laptop POST /p3 body=hello\n',
    'app GET /slow?ms=50&n=4\n',
    'app GET /p5\n',
  ]);
});

t.test('a pipelined batch followed by FIN (half-close) is still answered', async (t) => {
  const out = await new Promise<string>((resolve) => {
    const s = net.connect({ port: agent.listenPort, host: '127.0.0.1', allowHalfOpen: true });
    let buf = '';
    s.on('data', (c) => (buf += c));
    s.on('end', () => resolve(buf));
    s.on('error', () => resolve(buf));
    s.end('GET /a HTTP/1.1\r\nHost: x\r\nx-user: alice\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n');
  });
  t.match(out, /laptop GET \/a\n[\s\S]*app GET \/b\n/);
});

t.test('kube-probe always reaches the app, even with a matching header', async (t) => {
  const r = await get(agent.listenPort, '/healthz', { 'user-agent': 'kube-probe/1.30', 'x-user': 'alice' });
  t.equal(r.headers['x-served-by'], 'app');
  const r2 = await get(agent.listenPort, '/healthz', { 'x-user': 'alice' });
  t.equal(r2.headers['x-served-by'], 'laptop', 'the same request without the probe agent is diverted');
});

t.test('request bodies, status codes, chunked responses and trailers pass through both ways', async (t) => {
  for (const user of ['alice', 'bob']) {
    const side = user === 'alice' ? 'laptop' : 'app';
    const res = await new Promise<{ status: number; body: string; trailers: NodeJS.Dict<string> }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: agent.listenPort, path: '/trailer', method: 'PUT', headers: { 'x-user': user } }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, trailers: res.trailers }));
      });
      req.on('error', reject);
      req.write('chunk-1 ');
      req.end('chunk-2');
    });
    t.equal(res.body, `${side} PUT /trailer body=chunk-1 chunk-2\n`);
    t.equal(res.trailers['x-checksum'], `${side}-sum`, `${side}: trailer forwarded`);
    const st = await get(agent.listenPort, '/status/418', { 'x-user': user });
    t.equal(st.status, 418, `${side}: status code intact`);
    t.equal(st.headers['x-served-by'], side);
  }
});

t.test('WebSocket through an intercept, and without it to the app', async (t) => {
  for (const user of ['alice', 'bob']) {
    const side = user === 'alice' ? 'laptop' : 'app';
    const sock = net.connect(agent.listenPort, '127.0.0.1');
    t.teardown(() => sock.destroy());
    sock.write(
      `GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nx-user: ${user}\r\n\r\n`,
    );
    const frames: string[] = [];
    let buf = Buffer.alloc(0);
    let head = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`websocket timed out: ${head} ${frames}`)), 5000);
      sock.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        if (!head) {
          const end = buf.indexOf('\r\n\r\n');
          if (end === -1) return;
          head = buf.subarray(0, end).toString();
          buf = buf.subarray(end + 4);
        }
        while (buf.length >= 2 && buf.length >= 2 + (buf[1] & 0x7f)) {
          const n = 2 + (buf[1] & 0x7f);
          frames.push(wsParse(buf.subarray(0, n))!);
          buf = buf.subarray(n);
          if (frames.length === 1) sock.write(wsFrame(`ping-${user}`, true));
          if (frames.length === 2) {
            clearTimeout(timer);
            resolve();
          }
        }
      });
    });
    t.match(head, /^HTTP\/1\.1 101 /);
    t.match(head, new RegExp(`x-served-by: ${side}`));
    t.same(frames, [`hello from ${side}`, `${side} echo ping-${user}`]);
  }
});

t.test('CONNECT is routed like a request and spliced', async (t) => {
  const out = await rawExchange(agent.listenPort, 'CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\nx-user: alice\r\n\r\nhi', (s) => s.includes('laptop:hi'));
  t.match(out, /^HTTP\/1\.1 200 /);
  t.match(out, /laptop:hi/);
  const out2 = await rawExchange(agent.listenPort, 'CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\nhi', (s) => s.includes('app:hi'));
  t.match(out2, /app:hi/);
});

t.test('a laptop that is not listening gets a 502 with the reason; others are unaffected', async (t) => {
  const dead = net.createServer();
  const port = await new Promise<number>((r) => dead.listen(0, '127.0.0.1', () => r((dead.address() as net.AddressInfo).port)));
  await new Promise((r) => dead.close(r));
  const id = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'carol', regex: false }], local_port: port });
  t.teardown(() => removeIntercept(laptop, agent, id));
  const [bad, good, app2] = await Promise.all([
    get(agent.listenPort, '/x', { 'x-user': 'carol' }),
    get(agent.listenPort, '/y', { 'x-user': 'alice' }),
    get(agent.listenPort, '/z'),
  ]);
  t.equal(bad.status, 502);
  t.equal(bad.body, `rdbg intercept of shop by dev@laptop could not reach 127.0.0.1:${port}: connection refused (ECONNREFUSED)\n`);
  t.equal(good.headers['x-served-by'], 'laptop');
  t.equal(app2.headers['x-served-by'], 'app');
});

t.test('a paused laptop holds only its own requests', async (t) => {
  // A server that accepts and never answers: a process stopped in a debugger.
  const conns: net.Socket[] = [];
  const stuck = net.createServer((s) => {
    s.on('error', () => undefined);
    conns.push(s);
  });
  const port = await new Promise<number>((r) => stuck.listen(0, '127.0.0.1', () => r((stuck.address() as net.AddressInfo).port)));
  t.teardown(() => new Promise((r) => stuck.close(r)));
  const id = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'dave', regex: false }], local_port: port });
  t.teardown(() => removeIntercept(laptop, agent, id));
  const held = get(agent.listenPort, '/held', { 'x-user': 'dave' }).catch((e: Error) => e);
  await new Promise((r) => setTimeout(r, 100));
  const t0 = Date.now();
  const others = await Promise.all([get(agent.listenPort, '/a'), get(agent.listenPort, '/b', { 'x-user': 'alice' })]);
  t.same(others.map((r) => r.headers['x-served-by']), ['app', 'laptop']);
  t.ok(Date.now() - t0 < 2000, 'others answered at once');
  let settled = false;
  void held.then(() => (settled = true));
  await new Promise((r) => setTimeout(r, 200));
  t.notOk(settled, 'the paused request is still waiting');
  // The debugged process goes away: the held caller gets its answer (a 502), not a hang.
  for (const c of conns) c.destroy();
  const r = await held;
  t.equal((r as { status?: number }).status, 502);
});

t.test('the client is gone: 502 saying so', async (t) => {
  await laptop.stopWatching();
  t.teardown(() => laptop.watchDiversions());
  const r = await get(agent.listenPort, '/gone', { 'x-user': 'alice' });
  t.equal(r.status, 502);
  t.match(r.body, /^rdbg intercept of shop by dev@laptop could not reach 127\.0\.0\.1:\d+: the rdbg client of dev@laptop is not connected/);
  const ok = await get(agent.listenPort, '/fine');
  t.equal(ok.headers['x-served-by'], 'app');
});

t.test('malformed HTTP/1.1 gets 400 on its own connection only', async (t) => {
  const ka = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => ka.destroy());
  const before = await get(agent.listenPort, '/before', {}, ka);
  const bads = [
    'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello',
    'GET / HTTP/1.1\r\nHo st: x\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
    'GET / HTTP/1.1\r\n' + 'X-Big: ' + 'a'.repeat(70_000) + '\r\n\r\n',
    'GET /\x00 HTTP/1.1\r\n\r\n',
  ];
  for (const bad of bads) {
    const out = await rawExchange(agent.listenPort, bad, (s) => /\r\n\r\n/.test(s));
    t.match(out, /^HTTP\/1\.1 4(00|31) /, `answered ${JSON.stringify(bad.slice(0, 40))}`);
  }
  const after = await get(agent.listenPort, '/after', {}, ka);
  t.equal(after.socket, before.socket, 'the good keep-alive connection survived');
  t.equal(after.headers['x-served-by'], 'app');
});

t.test('odd but legal requests: obs-text header values, HTTP/1.0, absolute-form, HEAD', async (t) => {
  const obs = await rawExchange(agent.listenPort, 'GET /obs HTTP/1.1\r\nHost: x\r\nx-user: alice\r\nX-Name: caf\xe9\r\nConnection: close\r\n\r\n', () => false);
  t.match(obs, /^HTTP\/1\.1 200 [\s\S]*laptop GET \/obs\n$/);
  const h10 = await rawExchange(agent.listenPort, 'GET /old HTTP/1.0\r\n\r\n', () => false);
  t.match(h10, /^HTTP\/1\.[01] 200 [\s\S]*app GET \/old\n$/);
  const abs = await rawExchange(agent.listenPort, 'GET http://shop/abs HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n', () => false);
  t.match(abs, /app GET http:\/\/shop\/abs\n$/);
  const head = await rawExchange(agent.listenPort, 'HEAD /h HTTP/1.1\r\nHost: x\r\nx-user: alice\r\nConnection: close\r\n\r\n', () => false);
  t.match(head, /^HTTP\/1\.1 200 [\s\S]*content-length: \d+\r\n/i);
  t.notMatch(head, /laptop HEAD/, 'no body for HEAD');
});

t.test('clients that vanish mid-request do not disturb others', async (t) => {
  const socks: net.Socket[] = [];
  for (const user of ['alice', 'bob']) {
    // Headers sent, half the body, then gone.
    const s = net.connect(agent.listenPort, '127.0.0.1');
    s.on('error', () => undefined);
    s.write(`POST /upload HTTP/1.1\r\nHost: x\r\nx-user: ${user}\r\nContent-Length: 100000\r\n\r\n` + 'x'.repeat(5000));
    socks.push(s);
    // Half a request line.
    const s2 = net.connect(agent.listenPort, '127.0.0.1');
    s2.on('error', () => undefined);
    s2.write('GET /half');
    socks.push(s2);
    // A response still streaming when the caller resets.
    const s3 = net.connect(agent.listenPort, '127.0.0.1');
    s3.on('error', () => undefined);
    s3.write(`GET /big?n=50000000 HTTP/1.1\r\nHost: x\r\nx-user: ${user}\r\n\r\n`);
    s3.once('data', () => s3.resetAndDestroy());
    socks.push(s3);
  }
  await new Promise((r) => setTimeout(r, 300));
  for (const s of socks) s.destroy();
  await new Promise((r) => setTimeout(r, 100));
  const [a, b] = await Promise.all([get(agent.listenPort, '/ok', { 'x-user': 'alice' }), get(agent.listenPort, '/ok')]);
  t.equal(a.headers['x-served-by'], 'laptop');
  t.equal(b.headers['x-served-by'], 'app');
});

t.test('curl agrees (keep-alive reuse, both sides)', async (t) => {
  const { execFile } = await import('node:child_process');
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      'curl',
      ['-sS', '--max-time', '10', `http://127.0.0.1:${agent.listenPort}/c1`, '-H', 'x-user: alice', '--next', `http://127.0.0.1:${agent.listenPort}/c2`],
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    ),
  );
  t.equal(out, 'laptop GET /c1\napp GET /c2\n');
});

t.test('requests to the laptop are counted and reported in heartbeats', async (t) => {
  await new Promise((r) => setTimeout(r, 1200));
  const list = await laptop.listIntercepts();
  const mine = list.find((i) => i.id === interceptId);
  t.ok(mine && mine.requests > 5, `requests counted (${mine?.requests})`);
});

t.test('requests the app and the agent could frame differently are refused before either side sees them', async (t) => {
  const smuggles = [
    // Which of the two decides where the body ends? Neither: 400.
    'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: x\nContent-Length: 30\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n',
  ];
  const before = app.seen.length;
  for (const bad of smuggles) {
    const out = await rawExchange(agent.listenPort, bad, (s) => /\r\n\r\n[\s\S]*\n/.test(s));
    t.match(out, /^HTTP\/1\.1 400 Bad Request\r\n/, `400 for ${JSON.stringify(bad.slice(0, 60))}`);
  }
  t.notOk(app.seen.slice(before).some((s) => s.includes('/smuggled')), 'no smuggled request reached the app');
});

t.test('curl uploads with Expect: 100-continue, to both sides', async (t) => {
  const { execFile } = await import('node:child_process');
  const body = 'u'.repeat(3 * 1024 * 1024);
  for (const user of ['alice', 'bob']) {
    const out = await new Promise<string>((resolve, reject) => {
      const c = execFile(
        'curl',
        ['-sS', '--max-time', '20', '-H', `x-user: ${user}`, '-H', 'Expect: 100-continue', '--data-binary', '@-', `http://127.0.0.1:${agent.listenPort}/up`],
        { maxBuffer: 16 << 20 },
        (err, stdout) => (err ? reject(err) : resolve(stdout)),
      );
      c.stdin!.end(body);
    });
    const side = user === 'alice' ? 'laptop' : 'app';
    t.equal(out.length, `${side} POST /up body=`.length + body.length + 1, `${side}: the whole body and its answer`);
    t.ok(out.startsWith(`${side} POST /up body=uuu`));
  }
});

t.test('an app that closes after every response (HTTP/1.0, python http.server) behind the agent', async (t) => {
  const { spawn } = await import('node:child_process');
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'rdbg-pyhttp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'f.txt'), 'from python\n');
  const probe = net.createServer();
  const port = await new Promise<number>((r) => probe.listen(0, '127.0.0.1', () => r((probe.address() as net.AddressInfo).port)));
  await new Promise((r) => probe.close(r));
  const py = spawn('python3', ['-m', 'http.server', '--bind', '127.0.0.1', '--directory', dir, String(port)], { stdio: 'ignore' });
  t.teardown(() => py.kill('SIGKILL'));
  const manager = await startManager(t);
  const a = await startAgent(t, manager.port, port);
  for (let i = 0; i < 50; i++) {
    try {
      await get(port, '/f.txt');
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  // A keep-alive client: python answers HTTP/1.0 and closes; the agent closes the caller's connection with it.
  const ka = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => ka.destroy());
  const sockets = new Set<net.Socket>();
  for (let i = 0; i < 5; i++) {
    const r = await get(a.listenPort, '/f.txt', {}, ka);
    t.equal(r.status, 200);
    t.equal(r.body, 'from python\n');
    sockets.add(r.socket);
  }
  t.equal(sockets.size, 5, 'a connection per request, as without the agent');
});

t.test('the app closes an idle keep-alive connection: the next request on the caller connection still gets its answer', async (t) => {
  // An app that closes a connection idle for 100 ms, and says nothing of it in its answers.
  const srv = net.createServer((sock) => {
    let idle = setTimeout(() => sock.end(), 100);
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => {
      clearTimeout(idle);
      const path = / (\S+) /.exec(d.toString('latin1'))?.[1] ?? '?';
      const body = `short-lived ${path}`;
      sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      idle = setTimeout(() => sock.end(), 100);
    });
  });
  const port = await listen(srv, t);
  const manager = await startManager(t);
  const a = await startAgent(t, manager.port, port);
  const ka = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => ka.destroy());
  const first = await get(a.listenPort, '/1', {}, ka);
  await new Promise((r) => setTimeout(r, 300));
  const second = await get(a.listenPort, '/2', {}, ka);
  t.equal(first.body, 'short-lived /1');
  t.equal(second.body, 'short-lived /2');
  t.equal(second.socket, first.socket, "the caller's connection outlived the app's");
});

t.test('a bug in the routing costs its own connection, never the agent', async (t) => {
  const table = agent.table as unknown as { divertFor: (...a: unknown[]) => unknown };
  const real = table.divertFor;
  table.divertFor = () => {
    throw new Error('a bug');
  };
  const broken = await get(agent.listenPort, '/boom', { 'x-user': 'alice' }).then(
    () => 'answered',
    (err: NodeJS.ErrnoException) => err.code ?? err.message,
  );
  table.divertFor = real;
  t.equal(broken, 'ECONNRESET', 'that connection is reset');
  t.equal((await get(agent.listenPort, '/fine', { 'x-user': 'alice' })).headers['x-served-by'], 'laptop', 'the next one is served');
});
