import t from 'tap';
import { startLoopbackManager, type LoopbackManager } from '../helpers/loopback-manager';
import * as net from 'node:net';
import { ManagerServer } from '../../manager/server';
import { HALF_CLOSE_MAGIC, HalfCloseChannel } from '../../src/tunnel/raw/half-close';
import { DataPlaneClient } from '../../src/tunnel/client';
import { openRawTcp, rawFlowId } from '../../src/tunnel/raw/flow';

// Raw flows' half-closes on a connection of their own (src/tunnel/raw/half-close.ts),
// against a real manager and a real server on loopback.

let lm: LoopbackManager;
let mgr: ManagerServer;
let session = '';
let slowPort = 0;
let dataAddress = '';
const closers: (() => void)[] = [];

t.before(async () => {
  // Reads until the client's FIN, then answers with the byte count.
  const slow = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.on('end', () => s.end(`got ${n} bytes`));
  });
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', () => r()));
  closers.push(() => slow.close());
  slowPort = (slow.address() as net.AddressInfo).port;
  lm = await startLoopbackManager();
  ({ mgr, session } = lm);
  dataAddress = `127.0.0.1:${mgr.data.port}`;
});
t.teardown(async () => {
  await lm.stop();
  closers.forEach((c) => c());
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw flow to the slow server with `msg` sent: its socket, id and the answer to come. */
async function flowWith(msg: string): Promise<{ sock: net.Socket; id: string; answer: Promise<string> }> {
  const sock = await openRawTcp(dataAddress, { session, protocol: 'tcp', host: '127.0.0.1', port: slowPort, source: '127.0.0.1:1' }, 5000);
  const got: Buffer[] = [];
  sock.on('data', (d: Buffer) => got.push(d));
  const answer = new Promise<string>((r) => sock.once('end', () => r(Buffer.concat(got).toString())));
  sock.resume();
  sock.write(msg);
  return { sock, id: rawFlowId(sock)!, answer };
}

/** Connections to the data port from this process, by local port. */
async function connectionsToDataPort(): Promise<number> {
  const { execFileSync } = await import('node:child_process');
  const out = execFileSync('ss', ['-Htn', 'state', 'established', 'dst', dataAddress], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim()).length;
}

t.test('half-closes of many flows travel on one connection, and each destination gets its FIN', async (t) => {
  const ch = new HalfCloseChannel(dataAddress, () => session);
  t.teardown(() => ch.close());
  const flows = await Promise.all(Array.from({ length: 30 }, (_, i) => flowWith('x'.repeat(i + 1))));
  const before = await connectionsToDataPort();
  const taken = await Promise.all(flows.map((f, i) => ch.halfClose(f.id, i + 1)));
  t.same(taken, Array(30).fill(true), 'the manager took every one');
  t.equal(await connectionsToDataPort(), before + 1, 'on one more connection, not one per flow');
  t.same(await Promise.all(flows.map((f) => f.answer)), flows.map((_, i) => `got ${i + 1} bytes`), 'every server saw all its bytes, then the FIN');
  t.equal(ch.waiting, 0);
  flows.forEach((f) => f.sock.destroy());
});

t.test('the manager refuses what it should, and says so per flow', async (t) => {
  const ch = new HalfCloseChannel(dataAddress, () => session);
  t.teardown(() => ch.close());
  const f = await flowWith('abc');
  t.teardown(() => f.sock.destroy());
  await sleep(50);
  t.equal(await ch.halfClose('999999', 0), false, 'an unknown flow');
  t.equal(await ch.halfClose(f.id, 2), false, 'a count below what already arrived');
  t.equal(await ch.halfClose(f.id, 3), true, 'the flow itself, every byte counted');
  t.equal(await f.answer, 'got 3 bytes');
  // Another session's channel: the manager does not know it, so it is not a way for those half-closes.
  const other = new HalfCloseChannel(dataAddress, () => 'someone-else');
  t.teardown(() => other.close());
  const g = await flowWith('abc');
  t.teardown(() => g.sock.destroy());
  t.equal(await other.halfClose(g.id, 3), undefined, 'an unknown session gets no channel');
  t.equal(await other.halfClose(g.id, 3), undefined, 'and does not try again');
});

t.test('a malformed line closes that connection only; the channel opens a new one', async (t) => {
  const raw = net.connect(mgr.data.port, '127.0.0.1');
  raw.setEncoding('latin1');
  let text = '';
  raw.on('data', (d: string) => (text += d));
  raw.write(`${HALF_CLOSE_MAGIC} ${session}\nnot a half-close\n`);
  await new Promise((r) => raw.once('close', r));
  t.match(text, /^OK /, 'the manager took the session');
  t.notMatch(text, /\nK |\nN /, 'and answered nothing to the garbage: it closed the connection');
  const ch = new HalfCloseChannel(dataAddress, () => session);
  t.teardown(() => ch.close());
  const f = await flowWith('hello');
  t.teardown(() => f.sock.destroy());
  t.equal(await ch.halfClose(f.id, 5), true, 'others are served as before');
  t.equal(await f.answer, 'got 5 bytes');
});

t.test('a manager without this channel: the half-close goes as an HTTP/2 request instead', async (t) => {
  // An older manager in front of the real one: it answers a half-close connection's
  // first line as a malformed flow request; HTTP/2 and flows pass through.
  let refused = 0;
  const old = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    s.once('data', (first: Buffer) => {
      if (first.toString('latin1').startsWith(HALF_CLOSE_MAGIC)) {
        refused++;
        return void s.end('FAILED - not%20a%20flow%20request\n');
      }
      const up = net.connect(mgr.data.port, '127.0.0.1');
      up.on('error', () => s.destroy());
      up.write(first);
      s.pipe(up);
      up.pipe(s);
    });
  });
  await new Promise<void>((r) => old.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => old.close());
  const ch = new HalfCloseChannel(`127.0.0.1:${(old.address() as net.AddressInfo).port}`, () => session);
  t.teardown(() => ch.close());
  t.equal(await ch.halfClose('1', 1), undefined, 'not carried');
  t.equal(await ch.halfClose('2', 1), undefined, 'nor the next');
  t.equal(refused, 1, 'which did not try again');
  // The data-plane client, as the daemons use it: the raw flow's half-close takes the HTTP/2 way, not a FIN.
  const dp = new DataPlaneClient({ fileLimit: 4096 });
  t.teardown(() => dp.close());
  dp.use({ address: `127.0.0.1:${(old.address() as net.AddressInfo).port}`, session, direct: true });
  const flow = await dp.tcp('127.0.0.1', slowPort, '127.0.0.1:1');
  const app = await localPair((inner) => flow.join(inner, () => undefined));
  t.teardown(() => app.destroy());
  const got: Buffer[] = [];
  app.on('data', (d: Buffer) => got.push(d));
  app.end('four');
  await new Promise((r) => app.once('end', r));
  t.equal(Buffer.concat(got).toString(), 'got 4 bytes', 'the app half-closed and got its answer');
  t.equal(refused, 2, 'after one try on the channel');
  t.equal(dp.budget.closedFirstLastMinute, 0, 'the half-close went beside the flow as an HTTP/2 request: no FIN went first');
});

/** A connected pair of loopback sockets: `inner` goes to `take`, the app end comes back. */
async function localPair(take: (inner: net.Socket) => void): Promise<net.Socket> {
  const srv = net.createServer({ allowHalfOpen: true }, (inner) => {
    srv.close();
    take(inner);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return net.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
}

t.test('a manager that stops answering: the half-closes come back undecided, to go another way', async (t) => {
  // Takes the connection and never says a word, as a frozen port-forward would.
  const mute = net.createServer((s) => s.on('error', () => undefined));
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => mute.close());
  let now = 0;
  const ch = new HalfCloseChannel(`127.0.0.1:${(mute.address() as net.AddressInfo).port}`, () => session, () => now);
  t.teardown(() => ch.close());
  const answer = ch.halfClose('7', 1);
  now = 60_000; // the sweep sees it waiting past its time
  t.equal(await answer, undefined, 'given back, not lost');
  t.equal(ch.waiting, 0);
});

t.test('renew (a new manager behind the address): waiting half-closes come back undecided, the next ones go on a new connection', async (t) => {
  const ch = new HalfCloseChannel(dataAddress, () => session);
  t.teardown(() => ch.close());
  const f = await flowWith('one');
  const g = await flowWith('two');
  t.teardown(() => (f.sock.destroy(), g.sock.destroy()));
  const first = ch.halfClose(f.id, 3);
  ch.renew();
  const second = ch.halfClose(g.id, 3);
  t.equal(await first, undefined, 'the one on the old connection: to go another way');
  t.equal(await second, true, 'the next one, on a new connection');
  t.equal(await g.answer, 'got 3 bytes');
});
