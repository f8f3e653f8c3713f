import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as net from 'node:net';
import type { TrafficAgent } from '../../agent/traffic-agent';
import type { FakeLaptop } from '../helpers/fake-laptop';
import { grpcClient, intercept, removeIntercept, startAgent, startGrpc, startLaptop, startManager, type Msg } from './agent-harness';

// gRPC (grpc-js on both sides) through the agent: metadata decides the side;
// messages, status codes, headers and trailers come through intact.

let agent: TrafficAgent;
let laptop: FakeLaptop;
let client: ReturnType<typeof grpcClient>;
let appGrpc: { cancelled: string[] };
let lapGrpc: { cancelled: string[] };

t.before(async () => {
  const manager = await startManager(t);
  const app = await startGrpc(t, 'app');
  const lap = await startGrpc(t, 'laptop');
  appGrpc = app;
  lapGrpc = lap;
  agent = await startAgent(t, manager.port, app.port);
  laptop = await startLaptop(t, manager.port);
  await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: lap.port });
  client = grpcClient(t, agent.listenPort);
});

interface UnaryResult {
  err: grpc.ServiceError | null;
  res?: Msg;
  trailers?: grpc.Metadata;
}

function unary(req: Msg, user?: string, c = client): Promise<UnaryResult> {
  const md = new grpc.Metadata();
  if (user) md.set('x-user', user);
  return new Promise((resolve) => {
    let trailers: grpc.Metadata | undefined;
    const call = (c.Unary as (...a: unknown[]) => grpc.ClientUnaryCall)(req, md, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, res?: Msg) =>
      setImmediate(() => resolve({ err, res, trailers: trailers ?? err?.metadata })),
    );
    call.on('status', (s: grpc.StatusObject) => (trailers = s.metadata));
  });
}

function stream(req: Msg, user?: string): Promise<{ msgs: Msg[]; headers?: grpc.Metadata; status: grpc.StatusObject }> {
  const md = new grpc.Metadata();
  if (user) md.set('x-user', user);
  return new Promise((resolve) => {
    const msgs: Msg[] = [];
    let headers: grpc.Metadata | undefined;
    const call = (client.Stream as (...a: unknown[]) => grpc.ClientReadableStream<Msg>)(req, md, { deadline: Date.now() + 10_000 });
    call.on('metadata', (m: grpc.Metadata) => (headers = m));
    call.on('data', (m: Msg) => msgs.push(m));
    call.on('error', () => undefined);
    call.on('status', (status: grpc.StatusObject) => resolve({ msgs, headers, status }));
  });
}

t.test('unary: with the metadata to the laptop, without to the app; trailers intact', async (t) => {
  for (const user of ['alice', 'bob', undefined]) {
    const side = user === 'alice' ? 'laptop' : 'app';
    const r = await unary({ text: 'hi' }, user);
    t.error(r.err);
    t.same(r.res, { who: side, text: 'hi', user: user ?? '' }, `${user ?? 'no metadata'} -> ${side}`);
    t.same(r.trailers?.get('x-served-by'), [side], 'trailing metadata forwarded');
  }
});

t.test('status codes and messages come back from either side (trailers-only responses)', async (t) => {
  for (const [user, side] of [
    ['alice', 'laptop'],
    ['bob', 'app'],
  ]) {
    for (const code of [grpc.status.INVALID_ARGUMENT, grpc.status.NOT_FOUND, grpc.status.PERMISSION_DENIED]) {
      const r = await unary({ text: 'no', fail: code }, user);
      t.equal(r.err?.code, code, `${side}: code ${code}`);
      t.equal(r.err?.details, `${side} refuses: no`);
      t.same(r.err?.metadata.get('x-served-by'), [side]);
    }
  }
});

t.test('server streaming: messages, headers, trailers and a failing stream', async (t) => {
  for (const [user, side] of [
    ['alice', 'laptop'],
    [undefined, 'app'],
  ]) {
    const ok = await stream({ n: 50 }, user);
    t.equal(ok.status.code, grpc.status.OK);
    t.equal(ok.msgs.length, 50);
    t.ok(ok.msgs.every((m) => m.who === side), `all from ${side}`);
    t.same(ok.headers?.get('x-header-from'), [side], 'response headers');
    t.same(ok.status.metadata.get('x-served-by'), [side], 'trailers');
    const bad = await stream({ n: 5, fail: grpc.status.RESOURCE_EXHAUSTED }, user);
    t.equal(bad.msgs.length, 5, 'messages before the error arrive');
    t.equal(bad.status.code, grpc.status.RESOURCE_EXHAUSTED);
    t.equal(bad.status.details, `${side} stream failed`);
  }
});

t.test('many concurrent calls on one channel are split correctly', async (t) => {
  const calls = [];
  for (let i = 0; i < 60; i++) calls.push(unary({ text: `m${i}` }, i % 2 ? 'alice' : 'bob').then((r) => ({ i, r })));
  for (const { i, r } of await Promise.all(calls)) {
    t.equal(r.res?.who, i % 2 ? 'laptop' : 'app');
    t.equal(r.res?.text, `m${i}`);
  }
});

t.test('a laptop that is not listening: UNAVAILABLE with the reason; other calls fine', async (t) => {
  const dead = net.createServer();
  const port = await new Promise<number>((r) => dead.listen(0, '127.0.0.1', () => r((dead.address() as net.AddressInfo).port)));
  await new Promise((r) => dead.close(r));
  const id = await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'carol', regex: false }], local_port: port });
  t.teardown(() => removeIntercept(laptop, agent, id));
  const [bad, a, b] = await Promise.all([unary({ text: 'x' }, 'carol'), unary({ text: 'y' }, 'alice'), unary({ text: 'z' })]);
  t.equal(bad.err?.code, grpc.status.UNAVAILABLE);
  t.equal(bad.err?.details, `rdbg intercept of shop by dev@laptop could not reach 127.0.0.1:${port}: connection refused (ECONNREFUSED)`);
  t.equal(a.res?.who, 'laptop');
  t.equal(b.res?.who, 'app');
});

t.test('a deadline or a cancel on the caller reaches the side that serves the call', async (t) => {
  for (const [user, side] of [
    ['alice', lapGrpc],
    ['bob', appGrpc],
  ] as const) {
    const md = new grpc.Metadata();
    md.set('x-user', user);
    const err = await new Promise<grpc.ServiceError | null>((resolve) =>
      (client.Slow as (...a: unknown[]) => grpc.ClientUnaryCall)({ ms: 5000, text: `deadline-${user}` }, md, { deadline: Date.now() + 300 }, (e: grpc.ServiceError | null) => resolve(e)),
    );
    t.equal(err?.code, grpc.status.DEADLINE_EXCEEDED);
    const call = (client.Slow as (...a: unknown[]) => grpc.ClientUnaryCall)({ ms: 5000, text: `cancel-${user}` }, md, () => undefined);
    await new Promise((r) => setTimeout(r, 200));
    call.cancel();
    const t0 = Date.now();
    while (side.cancelled.length < 2 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 20));
    t.same(side.cancelled.sort(), [`cancel-${user}`, `deadline-${user}`], `${user}: the serving side saw both end`);
  }
});
