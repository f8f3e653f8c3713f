import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as net from 'node:net';
import { ManagerServer } from '../../manager/server';
import { DialPolicy } from '../../manager/dial-policy';
import { CHANNEL_OPTIONS, managerPackage, type ManagerClient } from '../../src/rpc/services';
import { PROTOCOL, VERSION } from '../../src/core/version';
import { H2FlowClient } from '../../src/tunnel/h2/client';
import { DialError } from '../../src/tunnel/messages';
import { readConfig } from '../../src/core/config';
import { readLine } from '../../src/tunnel/fast-socket';
import { RawFlowBudget, ephemeralPortCount } from '../../src/tunnel/raw/budget';
import { formatRequest, openRawFlow, openRawTcp, parseRequest } from '../../src/tunnel/raw/flow';

// Raw flows on the manager's data port (src/tunnel/raw/flow.ts), against a real
// manager and real TCP servers on loopback.

let mgr: ManagerServer;
let client: ManagerClient;
let session = '';
let data = '';
const servers: net.Server[] = [];

function serve(onConn: (s: net.Socket) => void): Promise<number> {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    onConn(s);
  });
  servers.push(srv);
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve((srv.address() as net.AddressInfo).port)));
}

let echoPort = 0;
let closedPort = 0;

t.before(async () => {
  echoPort = await serve((s) => s.pipe(s)); // ends its side after the client's FIN, once everything is echoed
  const probe = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => probe.once('listening', r));
  closedPort = (probe.address() as net.AddressInfo).port;
  probe.close();
  mgr = new ManagerServer({ listen: '127.0.0.1:0', serviceSubnets: [], podSubnets: [], clusterDomain: 'cluster.local', namespace: 'rdbg', leaseSeconds: 15, dialPolicy: DialPolicy.permissive() });
  const port = await mgr.start();
  data = `127.0.0.1:${mgr.data.port}`;
  const Manager = managerPackage().Manager;
  client = new Manager(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as ManagerClient;
  session = await new Promise((resolve, reject) =>
    client.arrive({ client_version: VERSION, protocol: PROTOCOL, user: 'test' }, (err, res) => (err ? reject(err) : resolve(res!.session_id))),
  );
});
t.teardown(async () => {
  client.close();
  await mgr.stop();
  servers.forEach((s) => s.close());
});

const to = (port: number, host = '127.0.0.1') => ({ session, protocol: 'tcp', host, port, source: '127.0.0.1:1' });

/** Send `msg`, half-close, and read until the far end closes. */
function exchange(sock: net.Socket, msg: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    sock.on('data', (d: Buffer) => got.push(d));
    sock.on('end', () => resolve(Buffer.concat(got)));
    sock.on('error', reject);
    sock.resume();
    sock.end(msg);
  });
}

async function echoWorks(): Promise<boolean> {
  const s = await openRawTcp(data, to(echoPort), 5000);
  return (await exchange(s, Buffer.from('still alive'))).toString() === 'still alive';
}

/** What the manager answers a hand-written first line (and whether it then closes). */
function rawExchange(bytes: string | Buffer): Promise<{ reply: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(mgr.data.port, '127.0.0.1');
    let reply = '';
    s.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => resolve({ reply, closed: true }));
    s.write(bytes);
  });
}

t.test('request lines: what is sent is what is parsed, and malformed lines are named', async (t) => {
  const line = formatRequest({ session: 's1', protocol: 'tcp', host: 'echo.default', port: 7, source: '' });
  t.same(parseRequest(line.trimEnd()), { session: 's1', protocol: 'tcp', host: 'echo.default', port: 7, source: '' });
  t.match(parseRequest('GET / HTTP/1.1'), /not a flow request/);
  t.match(parseRequest('RDBG-FLOW/1 s tcp h 7'), /malformed/);
  t.match(parseRequest('RDBG-FLOW/1 s tcp h 70000 -'), /invalid destination/);
  t.match(parseRequest('RDBG-FLOW/1 s tcp h 0x10 -'), /invalid destination/);
  t.throws(() => formatRequest({ session: 'has space', protocol: 'tcp', host: 'h', port: 1, source: '' }), DialError);
});

t.test('a raw flow carries bytes both ways and ends with a half-close', async (t) => {
  const s = await openRawTcp(data, to(echoPort), 5000);
  const big = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
  const back = await exchange(s, big);
  t.equal(back.length, big.length, 'all bytes echoed');
  t.ok(back.equals(big), 'byte-exact');
});

t.test('bytes the server sends first arrive even when they come with the dial reply', async (t) => {
  const port = await serve((s) => s.end('banner\n'));
  const s = await openRawTcp(data, to(port), 5000);
  t.equal((await exchange(s, Buffer.alloc(0))).toString(), 'banner\n');
});

t.test('a closed port is refused at once, with the address in the message', async (t) => {
  const t0 = Date.now();
  await t.rejects(openRawTcp(data, to(closedPort), 5000), { code: 'REFUSED', message: /ECONNREFUSED/ });
  t.ok(Date.now() - t0 < 2000, 'fast');
});

t.test('a flow of an unknown session is denied', async (t) => {
  await t.rejects(openRawTcp(data, { ...to(echoPort), session: 'nope' }, 5000), { code: 'DENIED', message: /no such session/ });
});

t.test('an unknown name is a name error', async (t) => {
  await t.rejects(openRawTcp(data, to(echoPort, 'nosuch.invalid'), 5000), { code: 'NAME_ERROR' });
});

t.test('malformed first lines fail that connection only', async (t) => {
  for (const bad of ['RDBG-FLOW/1 x\n', `RDBG-FLOW/1 ${session} udp 127.0.0.1 7 -\n`, 'RDBG-FLOW/1 \x00\x01\x02 tcp h 1 -\n']) {
    const r = await rawExchange(bad);
    t.match(r.reply, /^FAILED - \S+\n$/, `answered FAILED for ${JSON.stringify(bad)}`);
    t.ok(r.closed, 'and closed');
  }
  const long = await rawExchange(Buffer.alloc(4096, 'R'));
  t.equal(long.reply, '', 'a line without end is dropped without an answer');
  t.ok(long.closed);
  t.ok(await echoWorks(), 'other flows unaffected');
});

t.test('the HTTP/2 data plane still answers on the same port', async (t) => {
  const h2 = new H2FlowClient(data, () => ({ 'rdbg-session': session }));
  t.teardown(() => h2.close());
  const stream = await h2.open('tcp', '127.0.0.1', echoPort);
  const got: Buffer[] = [];
  stream.on('data', (d: Buffer) => got.push(d));
  stream.end('over http/2');
  await new Promise((r) => stream.on('end', r));
  t.equal(Buffer.concat(got).toString(), 'over http/2');
});

t.test("a reset from the destination resets the client's socket", async (t) => {
  const port = await serve((s) => s.once('data', () => s.resetAndDestroy()));
  const s = await openRawTcp(data, to(port), 5000);
  s.resume();
  s.write('trigger');
  const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    s.on('error', resolve);
    s.on('close', () => resolve(undefined));
  });
  t.equal(err?.code, 'ECONNRESET');
});

t.test('splice: a local half-close reaches the far end, which still answers', async (t) => {
  // local app <-> [a | splice | b] <-> raw flow <-> server that answers after the FIN
  const port = await serve((s) => {
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.on('end', () => s.end(`got ${n}`));
  });
  const front = net.createServer({ allowHalfOpen: true });
  servers.push(front);
  front.listen(0, '127.0.0.1');
  await new Promise((r) => front.once('listening', r));
  let result: string | undefined = 'pending';
  const done = new Promise<void>((resolve) =>
    front.once('connection', async (a) => {
      const flow = await openRawFlow(data, to(port), () => undefined);
      flow.join(a, (err) => {
        result = err;
        resolve();
      });
    }),
  );
  const app = net.connect({ port: (front.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  t.equal((await exchange(app, Buffer.alloc(100_000, 1))).toString(), 'got 100000');
  app.end();
  await done;
  t.equal(result, undefined, 'the flow ended cleanly');
});

/** A local app's socket joined through openRawFlow (the fast reader path) to a server on `port`. */
async function viaFlow(port: number): Promise<{ app: net.Socket; done: Promise<string | undefined> }> {
  const front = net.createServer({ allowHalfOpen: true });
  servers.push(front);
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  const done = new Promise<string | undefined>((resolve) =>
    front.once('connection', async (a) => {
      const flow = await openRawFlow(data, to(port), () => undefined);
      flow.join(a, resolve);
    }),
  );
  const app = net.connect({ port: (front.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  return { app, done };
}

function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + (i >> 16)) & 0xff;
  return b;
}

t.test('a download through a flow arrives byte-exact to a reader that keeps pausing', async (t) => {
  const big = pattern(24 * 1024 * 1024);
  const port = await serve((s) => s.end(big));
  const { app, done } = await viaFlow(port);
  const got: Buffer[] = [];
  app.on('data', (d: Buffer) => {
    got.push(Buffer.from(d));
    // a slow program: every chunk stops the reading for a moment, so the relay must wait
    app.pause();
    setTimeout(() => app.resume(), 1);
  });
  await new Promise((r) => app.on('end', r));
  const all = Buffer.concat(got);
  t.equal(all.length, big.length, 'every byte');
  t.ok(all.equals(big), 'in order, none overwritten');
  app.end();
  t.equal(await done, undefined, 'the flow ended cleanly');
});

t.test('an upload and a download at once through a flow both arrive byte-exact', async (t) => {
  const up = pattern(16 * 1024 * 1024);
  const port = await serve((s) => s.pipe(s));
  const { app } = await viaFlow(port);
  t.ok((await exchange(app, up)).equals(up), 'echoed byte-exact');
});

t.test('a banner that comes with the dial reply reaches the program first', async (t) => {
  const port = await serve((s) => {
    s.write('220 ready\n');
    s.on('end', () => s.end('221 bye\n'));
  });
  const { app, done } = await viaFlow(port);
  const first = await new Promise<string>((r) => app.once('data', (d: Buffer) => r(d.toString())));
  t.equal(first, '220 ready\n');
  t.equal((await exchange(app, Buffer.alloc(0))).toString(), '221 bye\n', 'and the goodbye after our FIN');
  t.equal(await done, undefined, 'the flow ended cleanly');
});

t.test('the budget: raw flows up to the limit, each given back once', async (t) => {
  const b = new RawFlowBudget(2);
  const r1 = b.take()!;
  const r2 = b.take()!;
  t.equal(b.take(), undefined, 'full');
  r1();
  r1();
  t.equal(b.inUse, 1, 'a second release does not count');
  t.ok(b.take(), 'room again');
  r2();
  t.equal(RawFlowBudget.forLimits(20_000, 28_232).max, 4872, 'at once: a quarter of what the file limit leaves');
  t.equal(RawFlowBudget.forLimits(20_000, 28_232).maxPerMinute, 7058, 'per minute: a quarter of the ephemeral ports');
  t.equal(RawFlowBudget.forThisProcess(20_000, readConfig('user', { RDBG_RAW_FLOWS_MAX: '0' }).rawFlowsMax).max, 0, 'RDBG_RAW_FLOWS_MAX=0 turns raw flows off');
  t.equal(RawFlowBudget.forThisProcess(20_000, readConfig('user', {}).rawFlowsMax).max, 4872, 'unset: a share of the file limit');
  t.equal(ephemeralPortCount(() => '32768\t60999\n'), 28232, 'the range as Linux writes it');
  t.equal(ephemeralPortCount(() => 'garbage'), 28232, "Linux's default when it cannot be read");
  let released = 0;
  await t.rejects(openRawFlow(data, to(closedPort), () => released++), { code: 'REFUSED' });
  t.equal(released, 1, 'a failed dial gives its place back');
});

t.test('the budget per minute: only flows the laptop closed first count, and their ports come back after a minute', async (t) => {
  let now = 1_000_000;
  const b = new RawFlowBudget(1000, 3, () => now);
  for (let i = 0; i < 10; i++) b.take()!(); // closed by the manager first: no port of ours lingers
  t.ok(b.take(), 'ten flows that did not close first leave room');
  for (let i = 0; i < 3; i++) b.closedFirst();
  t.equal(b.closedFirstLastMinute, 3);
  t.equal(b.take(), undefined, 'three closed first this minute: the next flow goes over HTTP/2');
  now += 30_000;
  t.equal(b.take(), undefined, 'still within the minute');
  now += 30_000;
  t.ok(b.take(), 'a minute later there is room again');
  now += 10_000;
  b.closedFirst();
  b.closedFirst();
  t.ok(b.take(), 'two in the last minute');
  b.closedFirst();
  t.equal(b.take(), undefined, 'three in the last minute');
  now += 10 * 60_000;
  t.ok(b.take(), 'a long pause forgets everything');
  t.equal(b.closedFirstLastMinute, 0);
});

t.test('readLine puts back what follows the line', async (t) => {
  const port = await serve((s) => s.end('first line\nand the rest'));
  const s = net.connect(port, '127.0.0.1');
  t.equal(await readLine(s, Buffer.alloc(0), 2000), 'first line');
  const rest: Buffer[] = [];
  s.on('data', (d: Buffer) => rest.push(d));
  s.resume();
  await new Promise((r) => s.on('end', r));
  t.equal(Buffer.concat(rest).toString(), 'and the rest');
});
