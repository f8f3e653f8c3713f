import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as net from 'node:net';
import { ManagerServer } from '../../manager/server';
import { DialPolicy } from '../../manager/dial-policy';
import { CHANNEL_OPTIONS, managerPackage, type ManagerClient } from '../../src/rpc/services';
import { PROTOCOL, VERSION } from '../../src/core/version';
import { H2FlowClient } from '../../src/tunnel/h2-client';
import { DialError } from '../../src/tunnel/messages';
import { RawFlowBudget, openRawFlow, openRawTcp, rawFlowId } from '../../src/tunnel/raw-flow';
import { RAW_POOL_SIZE, RawConnectionPool, openPooledFlow, openTcpFlow, type TcpDataPlane } from '../../src/tunnel/raw-pool';
import { execFileSync } from 'node:child_process';

// Raw connections opened ahead (src/tunnel/raw-pool.ts), through a relay that
// behaves like the port-forward in front of the manager: it accepts at once and
// reaches the manager's data port a moment later. A real manager and a real
// echo server on loopback.

let mgr: ManagerServer;
let client: ManagerClient;
let session = '';
let echoPort = 0;
let slowPort = 0;
let h2: H2FlowClient;
const closers: (() => void)[] = [];

/**
 * A port-forward stand-in: counts connections; `resetAll` resets the ones it
 * holds. Like containerd's port-forward, after the laptop's FIN it ends the
 * connection once the pod side has been quiet for `lingerMs`.
 */
async function relay(delayMs = 3, lingerMs = 200, slowUpMs = 0): Promise<{ address: string; accepted: () => number; resetAll: () => void; freezeAll: () => void }> {
  const held = new Set<net.Socket>();
  const pairs: [net.Socket, net.Socket][] = [];
  let accepted = 0;
  const srv = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (local) => {
    accepted++;
    held.add(local);
    local.on('error', () => undefined);
    local.once('close', () => held.delete(local));
    setTimeout(() => {
      if (local.destroyed) return;
      const up = net.connect({ port: mgr.data.port, host: '127.0.0.1', allowHalfOpen: true });
      up.on('error', () => local.destroy());
      local.once('close', () => up.destroy());
      // slowUpMs holds the laptop's bytes back, so that what goes beside them arrives first
      if (slowUpMs) local.on('data', (d: Buffer) => setTimeout(() => up.write(d), slowUpMs));
      else local.pipe(up);
      up.pipe(local);
      pairs.push([local, up]);
      let linger: NodeJS.Timeout | undefined;
      const arm = (): void => {
        clearTimeout(linger);
        linger = setTimeout(() => (local.end(), up.destroy()), lingerMs);
      };
      local.once('end', arm);
      up.on('data', () => linger && arm());
      local.once('close', () => clearTimeout(linger));
      local.resume();
    }, delayMs);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  closers.push(() => {
    srv.close();
    for (const p of frozen) p.forEach((x) => x.destroy());
  });
  const frozen: [net.Socket, net.Socket][] = [];
  return {
    address: `127.0.0.1:${(srv.address() as net.AddressInfo).port}`,
    accepted: () => accepted,
    resetAll: () => held.forEach((s) => s.resetAndDestroy()),
    // the far side is gone and nothing says so: bytes stop, no FIN, no RST
    freezeAll: () =>
      pairs.splice(0).forEach(([local, up]) => {
        frozen.push([local, up]);
        local.unpipe(up);
        up.unpipe(local);
        local.pause();
        up.pause();
      }),
  };
}

t.before(async () => {
  const echo = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  closers.push(() => echo.close());
  echoPort = (echo.address() as net.AddressInfo).port;
  // Reads a request until the client's FIN, thinks for 600 ms, then answers with its length.
  const slow = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.on('end', () => setTimeout(() => s.end(`got ${n} bytes`), 600));
  });
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', () => r()));
  closers.push(() => slow.close());
  slowPort = (slow.address() as net.AddressInfo).port;
  mgr = new ManagerServer({ listen: '127.0.0.1:0', serviceSubnets: [], podSubnets: [], clusterDomain: 'cluster.local', namespace: 'rdbg', leaseSeconds: 15, dialPolicy: DialPolicy.permissive() });
  const port = await mgr.start();
  client = new (managerPackage().Manager)(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as ManagerClient;
  session = await new Promise((resolve, reject) =>
    client.arrive({ client_version: VERSION, protocol: PROTOCOL, user: 'test' }, (err, res) => (err ? reject(err) : resolve(res!.session_id))),
  );
  h2 = new H2FlowClient(`127.0.0.1:${mgr.data.port}`, () => ({ 'rdbg-session': session }));
});
t.teardown(async () => {
  h2.close();
  client.close();
  await mgr.stop();
  closers.forEach((c) => c());
});

const to = (port: number) => ({ session, protocol: 'tcp', host: '127.0.0.1', port, source: '127.0.0.1:1' });
const halfClose = (flow: string, n: number): Promise<boolean> => h2.halfClose(flow, n);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Join a flow to one end of a local socket pair and echo `msg` through it. */
async function echoThrough(flow: { join(s: net.Socket, d: (e?: string) => void): void }, msg: string): Promise<string> {
  const srv = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const c = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  const s = await accepted;
  srv.close();
  flow.join(s, () => undefined);
  const got: Buffer[] = [];
  c.on('data', (d: Buffer) => got.push(d));
  c.end(msg);
  await new Promise((r) => c.once('end', r));
  c.destroy();
  return Buffer.concat(got).toString();
}

t.test('the first flow finds the pool empty; it refills, and later flows are raw flows on connections opened ahead', async (t) => {
  const r = await relay();
  const budget = new RawFlowBudget(100);
  const pool = new RawConnectionPool(r.address, budget);
  t.teardown(() => pool.close());
  t.equal(pool.idleCount, 0, 'nothing is opened before the first flow');
  t.equal(await openPooledFlow(pool, to(echoPort), halfClose), undefined, 'an empty pool: the caller uses HTTP/2');
  await sleep(50);
  t.equal(pool.idleCount, RAW_POOL_SIZE, `refilled to ${RAW_POOL_SIZE}`);
  t.equal(budget.inUse, RAW_POOL_SIZE, 'each connection opened ahead holds its budget');
  for (let i = 0; i < 3; i++) {
    const flow = await openPooledFlow(pool, to(echoPort), halfClose);
    t.ok(flow, `flow ${i} got a pooled connection`);
    t.equal(await echoThrough(flow!, `hello ${i}`), `hello ${i}`, 'bytes echoed through the manager');
  }
  await sleep(50);
  t.equal(budget.inUse, RAW_POOL_SIZE, 'finished flows gave their budget back; the pool holds its own');
  t.equal(r.accepted(), RAW_POOL_SIZE + 3, 'one connection per flow, plus the pool');
  t.equal(pool.stats.taken, 3);
});

t.test('a half-close travels beside the flow: an answer after a pause still arrives whole', async (t) => {
  const r = await relay(3, 200);
  const pool = new RawConnectionPool(r.address, new RawFlowBudget(100), 2);
  t.teardown(() => pool.close());
  pool.take();
  await sleep(50);
  const request = 'x'.repeat(100_000);
  const flow = await openPooledFlow(pool, to(slowPort), halfClose);
  t.ok(flow, 'a pooled raw flow');
  t.equal(await echoThrough(flow!, request), 'got 100000 bytes', 'the server saw the FIN after every byte, and its late answer came through');
  // The control: the same flow with its FIN sent through the stand-in is cut off, as containerd does.
  const c = pool.take();
  t.ok(c, 'another pooled connection');
  const plain = await openRawFlow(r.address, to(slowPort), c!.release, { timeoutMs: 5000, opened: c!.sock });
  t.equal(await echoThrough(plain, request), '', 'without it the answer is lost');
});

t.test('a half-close that overtakes the last bytes waits for them', async (t) => {
  const r = await relay(3, 2000, 150);
  const pool = new RawConnectionPool(r.address, new RawFlowBudget(100), 1);
  t.teardown(() => pool.close());
  pool.take();
  await sleep(50);
  const flow = await openPooledFlow(pool, to(slowPort), halfClose);
  t.ok(flow, 'a pooled raw flow');
  t.equal(await echoThrough(flow!, 'y'.repeat(300_000)), 'got 300000 bytes', 'every byte reached the server before its FIN');
});

t.test('renew(): after the manager behind a port-forward changed, new flows skip the connection that went silent, whose ping timeout then reports nothing', async (t) => {
  const r = await relay();
  let lost = 0;
  const client = new H2FlowClient(r.address, () => ({ 'rdbg-session': session }), () => lost++, { everyMs: 100, timeoutMs: 200 });
  t.teardown(() => client.close());
  const echo = async (): Promise<string> => {
    const st = await client.open('tcp', '127.0.0.1', echoPort);
    const got = new Promise<string>((res) => st.once('data', (d: Buffer) => res(d.toString())));
    st.write('ping');
    const answer = await got;
    st.close();
    return answer;
  };
  t.equal(await echo(), 'ping', 'a flow through the stand-in port-forward');
  r.freezeAll(); // the manager pod is gone and nothing says so
  client.renew(); // as the daemons do when the session changes
  t.equal(await echo(), 'ping', 'a new flow works at once, on a new connection');
  await sleep(500); // the silent connection's ping times out meanwhile
  t.equal(lost, 0, 'which is not reported as the data plane lost');
  r.freezeAll(); // now the current connection goes silent
  await sleep(500);
  t.equal(lost, 1, 'that one is');
});

t.test('flush() drops the connections opened ahead; later flows refill the pool', async (t) => {
  const r = await relay();
  const budget = new RawFlowBudget(100);
  const pool = new RawConnectionPool(r.address, budget, 3);
  t.teardown(() => pool.close());
  pool.take();
  await sleep(50);
  t.equal(pool.idleCount, 3);
  pool.flush();
  t.equal(pool.idleCount, 0, 'dropped');
  t.equal(budget.inUse, 0, 'with their budget');
  pool.take();
  await sleep(50);
  t.equal(pool.idleCount, 3, 'refilled on the next flow');
});

/**
 * Connections in TIME_WAIT here whose far end is the manager's data port (ports of the laptop's that
 * linger), by local address: a set, so that older ones expiring meanwhile do not change a count of new ones.
 */
function laptopTimeWaits(): Set<string> {
  const out = execFileSync('ss', ['-Htan', 'state', 'time-wait', 'dst', `127.0.0.1:${mgr.data.port}`], { encoding: 'utf8' });
  return new Set(out.split('\n').filter((l) => l.trim()).map((l) => l.trim().split(/\s+/)[2]));
}
const newSince = (before: Set<string>): number => [...laptopTimeWaits()].filter((l) => !before.has(l)).length;

t.test('raw flows of their own: the half-close goes beside them, so the laptop never closes first and keeps no port in TIME_WAIT', async (t) => {
  const flows = 20;
  const run = async (dp: TcpDataPlane): Promise<string[]> => {
    const answers: string[] = [];
    await Promise.all(Array.from({ length: flows }, async () => answers.push(await echoThrough(await openTcpFlow(dp, to(slowPort)), 'ping'))));
    await sleep(300); // the last FINs and ACKs
    return answers;
  };
  const budget = new RawFlowBudget(100, 1000);
  const before = laptopTimeWaits();
  const answers = await run({ address: `127.0.0.1:${mgr.data.port}`, h2, rawFlows: true, budget });
  t.same(answers, Array(flows).fill('got 4 bytes'), 'every answer after the half-close arrived');
  t.equal(newSince(before), 0, 'no port of the laptop in TIME_WAIT');
  t.equal(budget.closedFirstLastMinute, 0, 'nothing counted against the minute');
  t.equal(budget.inUse, 0, 'every flow gave its place back');
  // Control: a data plane that does not take half-closes (an older manager): the FIN carries it, and the laptop's ports linger.
  const refusing = { halfClose: async () => false } as unknown as H2FlowClient;
  const budget2 = new RawFlowBudget(100, 1000);
  const answers2 = await run({ address: `127.0.0.1:${mgr.data.port}`, h2: refusing, rawFlows: true, budget: budget2 });
  t.same(answers2, Array(flows).fill('got 4 bytes'), 'a FIN is still a half-close');
  t.equal(newSince(before), flows, 'each flow left a port in TIME_WAIT');
  t.equal(budget2.closedFirstLastMinute, flows, 'and counted against the minute');
});

t.test('cancel counts a raw flow as closed first only while it is open', async (t) => {
  const budget = new RawFlowBudget(100, 1000);
  const dp = { address: `127.0.0.1:${mgr.data.port}`, h2, rawFlows: true, budget };
  const ended = await openTcpFlow(dp, to(slowPort));
  t.equal(await echoThrough(ended, 'ping'), 'got 4 bytes');
  await sleep(100);
  ended.cancel(); // as a caller tidying up after the flow's end would
  t.equal(budget.closedFirstLastMinute, 0, 'a flow that ended is not counted again');
  const unjoined = await openTcpFlow(dp, to(slowPort));
  unjoined.cancel();
  t.equal(budget.closedFirstLastMinute, 1, 'a flow given up before it was joined closes first, and counts');
  t.equal(budget.inUse, 0, 'both gave their place back');
});

t.test('the manager refuses a half-close for a flow it does not have in that session', async (t) => {
  t.equal(await h2.halfClose('999999', 0), false, 'an unknown flow');
  const sock = await openRawTcp(`127.0.0.1:${mgr.data.port}`, to(slowPort), 5000);
  t.teardown(() => sock.destroy());
  const id = rawFlowId(sock);
  t.ok(id, `the OK line named the flow (${id})`);
  const other = new H2FlowClient(`127.0.0.1:${mgr.data.port}`, () => ({ 'rdbg-session': 'someone-else' }));
  t.teardown(() => other.close());
  t.equal(await other.halfClose(id!, 0), false, 'another session cannot end my flow');
  const got: Buffer[] = [];
  sock.on('data', (d: Buffer) => got.push(d));
  sock.resume();
  sock.write('abc');
  await sleep(50);
  t.equal(await h2.halfClose(id!, 2), false, 'a count below what already arrived is refused');
  t.equal(await h2.halfClose(id!, 3), true, 'my own flow, with every byte counted');
  await new Promise((r) => sock.once('end', r));
  t.equal(Buffer.concat(got).toString(), 'got 3 bytes', 'the destination saw the FIN, with no FIN on the connection itself');
});

t.test('a flow whose server closed first: after our half-close beside it, the manager waits for our FIN (no reset)', async (t) => {
  // Says hello and closes its side at once, as an HTTP/1.0 server does; reads on until our half-close.
  const greeter = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    s.end('hello');
    s.resume();
  });
  await new Promise<void>((r) => greeter.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => greeter.close());
  const sock = await openRawTcp(`127.0.0.1:${mgr.data.port}`, to((greeter.address() as net.AddressInfo).port), 5000);
  t.teardown(() => sock.destroy());
  const errors: string[] = [];
  sock.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
  const got: Buffer[] = [];
  sock.on('data', (d: Buffer) => got.push(d));
  sock.resume();
  const ended = await Promise.race([new Promise((r) => sock.once('end', () => r(true))), sleep(5000).then(() => false)]);
  t.ok(ended, 'the server\'s FIN came through');
  t.equal(Buffer.concat(got).toString(), 'hello');
  sock.write('bye');
  t.equal(await h2.halfClose(rawFlowId(sock)!, 3), true, 'our half-close went beside the flow');
  // The server's connection is over now, but for our FIN: a reset in this
  // window would fail a program whose FIN is still on its way.
  await sleep(300);
  t.same(errors, [], 'no reset while our FIN was still to come');
  const port = sock.localPort;
  sock.end();
  const closed = await Promise.race([new Promise((r) => sock.once('close', () => r(true))), sleep(5000).then(() => false)]);
  t.ok(closed, 'our FIN closed the connection');
  t.same(errors, [], 'a clean close');
  // An orderly close leaves the manager's end (it sent the first FIN) in TIME_WAIT; a reset leaves nothing.
  await sleep(100);
  const tw = execFileSync('ss', ['-Htan', 'state', 'time-wait', 'src', `127.0.0.1:${mgr.data.port}`, 'dst', `127.0.0.1:${port}`], { encoding: 'utf8' });
  t.equal(tw.split('\n').filter((l) => l.trim()).length, 1, 'the manager closed its end in order, FIN for FIN');
});

t.test('a refused dial on a pooled connection is the manager\'s answer, not a reason to retry', async (t) => {
  const r = await relay();
  const pool = new RawConnectionPool(r.address, new RawFlowBudget(100), 2);
  t.teardown(() => pool.close());
  pool.take();
  await sleep(50);
  const probe = net.createServer().listen(0, '127.0.0.1');
  await new Promise((res) => probe.once('listening', res));
  const closed = (probe.address() as net.AddressInfo).port;
  probe.close();
  const err = await openPooledFlow(pool, to(closed), halfClose).then(() => undefined, (e: unknown) => e);
  t.ok(err instanceof DialError && err.code === 'REFUSED', `refused: ${String(err)}`);
  t.equal(pool.stats.taken, 1, 'on a pooled connection');
});

t.test('a pooled connection that broke before the manager answered is dropped; the flow falls back', async (t) => {
  const r = await relay(200); // the "port-forward" is slow: the manager has not been reached yet
  const budget = new RawFlowBudget(100);
  const pool = new RawConnectionPool(r.address, budget, 2);
  t.teardown(() => pool.close());
  pool.take();
  await sleep(30);
  t.equal(pool.idleCount, 2);
  const opening = openPooledFlow(pool, to(echoPort), halfClose);
  await sleep(10);
  r.resetAll(); // the pod went away under the port-forward
  t.equal(await opening, undefined, 'the caller opens the flow another way');
  await sleep(50);
  t.equal(pool.idleCount, 0, 'the other broken connection left the pool too');
  t.equal(budget.inUse, 0, 'and every budget came back');
  t.ok(pool.stats.broken >= 1, 'counted as broken');
});

t.test('a pooled connection that reaches a manager without the session (a replaced pod) falls back too', async (t) => {
  const r = await relay();
  const pool = new RawConnectionPool(r.address, new RawFlowBudget(100), 2);
  t.teardown(() => pool.close());
  pool.take();
  await sleep(50);
  t.equal(await openPooledFlow(pool, { ...to(echoPort), session: 'gone' }, halfClose), undefined, 'the caller opens the flow another way');
  t.equal(pool.stats.taken, 1);
});

t.test('unused connections close after their idle time; without new flows the pool drains and opens nothing', async (t) => {
  const r = await relay();
  let now = 1_000_000;
  const budget = new RawFlowBudget(100);
  const pool = new RawConnectionPool(r.address, budget, 2, { idleMs: 100, now: () => now });
  t.teardown(() => pool.close());
  pool.take();
  await sleep(50);
  t.equal(r.accepted(), 2);
  await sleep(120); // expired while flows are recent: replaced
  t.equal(pool.stats.expired, 2);
  t.equal(r.accepted(), 4, 'replaced while flows are recent');
  now += 31_000; // half a minute without a flow
  await sleep(150);
  t.equal(pool.idleCount, 0, 'drained');
  t.equal(r.accepted(), 4, 'and nothing new opened');
  t.equal(budget.inUse, 0);
  await sleep(150);
  t.equal(r.accepted(), 4, 'an idle laptop opens no port-forward streams');
});

t.test('at most 20 connections a second are opened ahead, however large the pool', async (t) => {
  const r = await relay();
  let now = 5_000_000; // the start of a second, on a clock the test moves
  const pool = new RawConnectionPool(r.address, new RawFlowBudget(1000), 100, { now: () => now });
  t.teardown(() => pool.close());
  pool.take();
  await sleep(100);
  t.equal(r.accepted(), 20, 'twenty in the first second');
  now += 1000;
  await sleep(1100); // the pool looks again after a second
  t.equal(r.accepted(), 40, 'twenty more in the next');
});

t.test('the budget bounds the pool; RDBG_RAW_POOL sets its size', async (t) => {
  const r = await relay();
  const pool = new RawConnectionPool(r.address, new RawFlowBudget(1), 4);
  t.teardown(() => pool.close());
  pool.take();
  await sleep(50);
  t.equal(pool.idleCount, 1, 'no more than the budget allows');
  t.equal(RawConnectionPool.sizeFromEnv({ RDBG_RAW_POOL: '0' }), 0, '0 turns it off');
  t.equal(RawConnectionPool.sizeFromEnv({ RDBG_RAW_POOL: '8' }), 8);
  t.equal(RawConnectionPool.sizeFromEnv({}), 0, 'off unless asked for');
  t.equal(RawConnectionPool.sizeFromEnv({ RDBG_RAW_POOL: 'lots' }), 0, 'a malformed value is ignored');
});
