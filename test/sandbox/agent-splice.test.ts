import t from 'tap';
import { execFile } from 'node:child_process';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { TrafficAgent } from '../../agent/traffic-agent';
import type { FakeLaptop } from '../helpers/fake-laptop';
import { intercept, listen, removeIntercept, startAgent, startLaptop, startManager, startServer, type TestServer } from './agent-harness';

// h2c on a port that nothing intercepts: the caller and the app speak HTTP/2
// to each other through the agent untouched. When an intercept arrives, open
// connections are told (GOAWAY, no stream refused) to move to a new
// connection, which the agent routes per stream.

let app: TestServer;
let laptopServer: TestServer;
let agent: TrafficAgent;
let laptop: FakeLaptop;
let managerPort: number;
/** The HTTP/2 settings the app's sessions received from their peer. */
const appPeerSettings: http2.Settings[] = [];

t.before(async () => {
  const manager = await startManager(t);
  managerPort = manager.port;
  app = await startServer(t, 'app');
  app.h2.on('session', (s: http2.ServerHttp2Session) => s.once('remoteSettings', (st) => appPeerSettings.push(st)));
  laptopServer = await startServer(t, 'laptop');
  agent = await startAgent(t, manager.port, app.port);
  laptop = await startLaptop(t, manager.port);
});

function session(t: { teardown(fn: () => unknown): void }, settings?: http2.Settings): http2.ClientHttp2Session {
  const s = http2.connect(`http://127.0.0.1:${agent.listenPort}`, settings ? { settings } : {});
  s.on('error', () => undefined);
  t.teardown(() => s.destroy());
  return s;
}

function get(s: http2.ClientHttp2Session, path: string, headers: Record<string, string> = {}): Promise<{ servedBy: string; bytes: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = s.request({ ':path': path, ...headers });
    let servedBy = '';
    const chunks: Buffer[] = [];
    req.on('response', (h) => (servedBy = String(h['x-served-by'])));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const all = Buffer.concat(chunks);
      resolve({ servedBy, bytes: all.length, body: all.length < 4096 ? all.toString() : '' });
    });
    req.on('error', reject);
    req.setTimeout(15_000, () => req.close(http2.constants.NGHTTP2_CANCEL));
  });
}

t.test('nothing intercepted: the app speaks HTTP/2 with the caller itself', async (t) => {
  const s = session(t, { initialWindowSize: 123_457, maxHeaderListSize: 54_321 });
  const r = await get(s, '/plain', { 'x-user': 'alice' });
  t.equal(r.servedBy, 'app');
  t.equal(r.body, 'app GET /plain\n');
  const seen = appPeerSettings.at(-1)!;
  t.equal(seen.initialWindowSize, 123_457, "the app got the caller's own SETTINGS, not the agent's");
  t.equal(seen.maxHeaderListSize, 54_321);
  const out = await new Promise<string>((resolve, reject) =>
    execFile('h2load', ['-n', '2000', '-c', '4', '-m', '10', `http://127.0.0.1:${agent.listenPort}/load`], { timeout: 30_000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout),
    ),
  );
  t.match(out, /2000 succeeded, 0 failed, 0 errored/, 'h2load: every request answered');
});

t.test('an intercept arrives: open connections move on, their streams finish on the app, new ones are routed', async (t) => {
  const s = session(t);
  t.equal((await get(s, '/before')).servedBy, 'app');
  const slow = get(s, '/slow?ms=400');
  // A large response is under way while the GOAWAY goes in between two of the app's frames.
  const big = get(s, '/big?n=16777216');
  await new Promise((r) => setTimeout(r, 50));
  const goaway = new Promise<{ code: number; last: number }>((resolve) => s.once('goaway', (code, last) => resolve({ code, last })));
  const id = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: laptopServer.port });
  t.teardown(() => removeIntercept(laptop, agent, id));
  const g = await goaway;
  t.equal(g.code, http2.constants.NGHTTP2_NO_ERROR, 'a graceful GOAWAY');
  t.equal(g.last, 2 ** 31 - 1, 'that refuses no stream');
  t.equal((await slow).servedBy, 'app', 'a stream open before it finishes');
  const b = await big;
  t.equal(b.bytes, 16777216, 'the large response arrived whole around the GOAWAY');
  const s2 = session(t);
  t.equal((await get(s2, '/after', { 'x-user': 'alice' })).servedBy, 'laptop', 'the new connection is routed per stream');
  t.equal((await get(s2, '/after')).servedBy, 'app');
});

t.test('a connection that is idle when the intercept arrives is told at once', async (t) => {
  t.equal(agent.table.size, 0, 'nothing intercepted when the connection opens');
  const s = session(t);
  t.equal((await get(s, '/idle')).servedBy, 'app');
  const goaway = new Promise<number>((resolve) => s.once('goaway', (_code, last) => resolve(last)));
  const id = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'bob', regex: false }], local_port: laptopServer.port });
  t.teardown(() => removeIntercept(laptop, agent, id));
  t.equal(await goaway, 2 ** 31 - 1);
});

t.test('a raw client that splits frames anywhere still gets whole frames and one GOAWAY between them', async (t) => {
  // An h2 server that answers with frames written a few bytes at a time.
  const srv = net.createServer((sock) => {
    sock.on('error', () => undefined);
    sock.once('data', () => {
      const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
      const ping = (n: number): Buffer => Buffer.concat([Buffer.from([0, 0, 8, 6, 0, 0, 0, 0, 0]), Buffer.alloc(8, n)]);
      const bytes = Buffer.concat([settings, ping(1), ping(2), ping(3)]);
      let i = 0;
      const drip = (): void => {
        if (i >= bytes.length) return;
        sock.write(bytes.subarray(i, i + 5));
        i += 5;
        setTimeout(drip, 20);
      };
      drip();
    });
  });
  const port = await listen(srv, t);
  const a = await startAgent(t, managerPort, port);
  const c = net.connect(a.listenPort, '127.0.0.1');
  t.teardown(() => c.destroy());
  c.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + '\0\0\0\x04\0\0\0\0\0');
  let got = Buffer.alloc(0);
  c.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
  await new Promise((r) => setTimeout(r, 60));
  const id = await intercept(laptop, a, { headers: [{ name: 'x-user', value: 'dan', regex: false }], local_port: laptopServer.port });
  t.teardown(() => removeIntercept(laptop, a, id));
  await new Promise((r) => setTimeout(r, 600));
  const types: number[] = [];
  for (let i = 0; i + 9 <= got.length; ) {
    const len = got.readUIntBE(i, 3);
    types.push(got[i + 3]);
    i += 9 + len;
  }
  t.same(types.filter((x) => x === 7).length, 1, 'one GOAWAY');
  t.same(
    types.filter((x) => x !== 7),
    [4, 6, 6, 6],
    "the app's frames all arrive whole, in order",
  );
});
