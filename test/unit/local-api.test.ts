// A daemon's local API (src/rpc/local-api.ts, src/rpc/local-client.ts): one
// unix socket that serves gRPC and JSON lines. The service and its codecs are
// the user daemon's real ones; the handlers are the test's (what a daemon
// answers is tested with the daemons). The CLI runs through its shebang
// against it, as it does against a user daemon.
import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { daemonPackage, type UserDaemonClient } from '../../src/rpc/services';
import { listenLocalApi, MAX_LINE } from '../../src/rpc/local-api';
import { LocalClient, type UserDaemonApi } from '../../src/rpc/local-client';
import { daemonSocketPath } from '../../src/core/paths';
import { logger } from '../../src/core/log';
import type { InterceptInfo } from '../../src/gen/rdbg/v1/InterceptInfo';

const dir = mkdtempSync(join(tmpdir(), 'rdbg-local-api-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const info = (workload: string): InterceptInfo => ({
  id: `id-${workload}`,
  spec: { workload, namespace: 'team', port: 8080, headers: [{ name: 'x-dev', value: 'me' }], local_port: 9999 },
  owner: 'me@laptop',
  state: 'ACTIVE',
  env: { A: '1' },
  agents: 2,
  requests: 7,
});

interface Seen {
  lists: unknown[];
  cancelled: number;
  hold?: () => void;
}

function handlers(seen: Seen): grpc.UntypedServiceImplementation {
  return {
    Status: (_c: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { client_version: '9.9.9', pid: 42 }),
    Quit: (_c: unknown, cb: grpc.sendUnaryData<object>) => cb(null, {}),
    List: (call: grpc.ServerUnaryCall<object, object>, cb: grpc.sendUnaryData<object>) => {
      seen.lists.push(call.request);
      cb(null, { intercepts: [info('web')] });
    },
    Leave: (call: grpc.ServerUnaryCall<{ workload: string }, object>, cb: grpc.sendUnaryData<object>) =>
      cb({ code: grpc.status.NOT_FOUND, details: `no intercept of ${call.request.workload}` }),
    Intercept: (call: grpc.ServerUnaryCall<object, object>, cb: grpc.sendUnaryData<object>) => {
      // Answers only when the test says so; notes a client that went away meanwhile.
      call.on('cancelled', () => seen.cancelled++);
      seen.hold = () => cb(null, info('api'));
    },
    WatchSession: (call: grpc.ServerWritableStream<object, object>) => call.end(),
    LookupDNS: (_c: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { rcode: 0, answers: [] }),
  };
}

async function serve(path: string): Promise<{ seen: Seen; close: () => void }> {
  const seen: Seen = { lists: [], cancelled: 0 };
  const server = new grpc.Server();
  const service = daemonPackage().UserDaemon.service;
  const h = handlers(seen);
  server.addService(service, h);
  const api = await listenLocalApi(server, { path, service, handlers: h, log: logger('userd.api') });
  return { seen, close: () => (api.close(), server.forceShutdown()) };
}

/** One raw exchange: what the daemon writes back to `text` until it has sent `lines` lines or closed. */
function raw(path: string, text: string | Buffer, lines = 1): Promise<{ lines: string[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path, () => s.write(text));
    let got = '';
    const done = (closed: boolean): void => {
      s.destroy();
      resolve({ lines: got.split('\n').filter(Boolean), closed });
    };
    s.on('data', (d) => {
      got += d.toString();
      if (got.split('\n').length > lines) done(false);
    });
    s.on('close', () => done(true));
    s.on('error', reject);
  });
}

t.test('the CLI and a gRPC client on one socket get the same answers', async (t) => {
  const path = join(dir, 'both.sock');
  const d = await serve(path);
  t.teardown(d.close);
  t.equal(statSync(path).mode & 0o777, 0o600, 'only its owner can open the socket');

  const local = new LocalClient<UserDaemonApi>(path, 'UserDaemon');
  t.teardown(() => local.close());
  const grpcClient = new (daemonPackage().UserDaemon)(`unix://${path}`, grpc.credentials.createInsecure()) as unknown as UserDaemonClient;
  t.teardown(() => grpcClient.close());
  const viaGrpc = await new Promise((resolve, reject) => grpcClient.list({ session_id: '', all: true }, (e, r) => (e ? reject(e) : resolve(r))));
  const viaJson = await local.call('List', { session_id: '', all: true });
  t.same(viaJson, viaGrpc, 'the same decoded message, defaults filled alike');
  t.equal(viaJson.intercepts[0].spec?.path_prefix, '', 'a field the handler left out comes as its default');
  t.same(d.seen.lists[0], d.seen.lists[1], 'the handler got the same request from both');

  // Unknown fields are dropped and missing ones filled, as gRPC decoding does.
  await local.call('List', { all: true, nosuch: 1 } as never);
  t.same(d.seen.lists[2], { session_id: '', all: true });

  const err = await local.call('Leave', { workload: 'web', namespace: 'team' }).catch((e: unknown) => e);
  t.match(err, { code: grpc.status.NOT_FOUND, details: 'no intercept of web' }, "a handler's error keeps its gRPC code and details");

  const streams = await raw(path, JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'WatchSession', params: {} }) + '\n');
  t.match(JSON.parse(streams.lines[0]), { id: 3, error: { code: grpc.status.UNIMPLEMENTED } }, 'a stream method is for gRPC only');
});

t.test('bad input fails that one call or connection; the daemon goes on', async (t) => {
  const path = join(dir, 'bad.sock');
  const d = await serve(path);
  t.teardown(d.close);

  const two = await raw(path, '{not json\n' + JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'Status' }) + '\n', 2);
  t.match(JSON.parse(two.lines[0]), { id: null, error: { code: grpc.status.INVALID_ARGUMENT, message: /not JSON/ } });
  t.match(JSON.parse(two.lines[1]), { id: 2, result: { client_version: '9.9.9', pid: 42 } }, 'the next line on the same connection is served');

  const typed = await raw(path, JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'Intercept', params: { spec: 'web' } }) + '\n');
  t.match(JSON.parse(typed.lines[0]), { id: 4, error: { code: grpc.status.INVALID_ARGUMENT, message: /params of Intercept/ } }, 'a message field that is no object is refused');
  t.equal(d.seen.hold, undefined, 'and never reaches the handler');

  const arrays = await raw(path, '{"id":1}\n[1,2]\n' + '{"id":5,"method":"Nope"}\n', 3);
  t.match(JSON.parse(arrays.lines.shift()!), { id: 1, error: { code: grpc.status.UNIMPLEMENTED } }, 'a request without a method');
  t.match(JSON.parse(arrays.lines[0]), { error: { code: grpc.status.INVALID_ARGUMENT } });
  t.match(JSON.parse(arrays.lines[1]), { id: 5, error: { code: grpc.status.UNIMPLEMENTED } });

  const huge = await raw(path, '{"id":6,"method":"Status","params":{"x":"' + 'a'.repeat(MAX_LINE + 10), 1);
  t.match(JSON.parse(huge.lines[0]), { error: { code: grpc.status.RESOURCE_EXHAUSTED } }, 'an endless line is cut off');

  const junk = await raw(path, Buffer.from([0x16, 0x03, 0x01, 0x00]));
  t.ok(junk.closed, 'a connection that opens with neither protocol is closed');
  t.same(junk.lines, []);

  const local = new LocalClient<UserDaemonApi>(path, 'UserDaemon');
  t.teardown(() => local.close());
  t.match(await local.call('Status', {}), { pid: 42 }, 'the daemon still serves');
});

t.test('a client that goes away, a timeout, no daemon', async (t) => {
  const path = join(dir, 'away.sock');
  const d = await serve(path);
  t.teardown(d.close);

  const first = new LocalClient<UserDaemonApi>(path, 'UserDaemon');
  const waiting = first.call('Intercept', { name: 'api' }, 200).catch((e: unknown) => e);
  t.match(await waiting, { code: grpc.status.DEADLINE_EXCEEDED }, 'no answer within the timeout');
  first.close();
  for (let i = 0; i < 50 && d.seen.cancelled === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(d.seen.cancelled, 1, "the handler's call is cancelled when its client goes");
  d.seen.hold?.(); // the late answer goes nowhere, and harms nothing
  d.seen.hold = undefined;

  const second = new LocalClient<UserDaemonApi>(path, 'UserDaemon');
  t.teardown(() => second.close());
  const answer = second.call('Intercept', { name: 'api' });
  const held = (): (() => void) | undefined => d.seen.hold;
  for (let i = 0; i < 50 && !held(); i++) await new Promise((r) => setTimeout(r, 10));
  held()?.();
  t.match(await answer, { id: 'id-api', agents: 2 });

  const none = new LocalClient<UserDaemonApi>(join(dir, 'nosuch.sock'), 'UserDaemon');
  t.match(await none.call('Status', {}).catch((e: unknown) => e), { code: grpc.status.UNAVAILABLE }, 'no daemon: UNAVAILABLE, as gRPC says it');
});

t.test('a daemon that serves gRPC only (started by an older rdbg) is still reached', async (t) => {
  const path = join(dir, 'old.sock');
  const server = new grpc.Server();
  server.addService(daemonPackage().UserDaemon.service, handlers({ lists: [], cancelled: 0 }));
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  t.teardown(() => server.forceShutdown());
  const local = new LocalClient<UserDaemonApi>(path, 'UserDaemon');
  t.teardown(() => local.close());
  const [a, b] = await Promise.all([local.call('Status', {}), local.call('List', { session_id: '', all: false })]);
  t.match(a, { client_version: '9.9.9', pid: 42 });
  t.equal(b.intercepts[0].spec?.workload, 'web');
  t.match(await local.call('Leave', { workload: 'x' }).catch((e: unknown) => e), { code: grpc.status.NOT_FOUND, details: 'no intercept of x' });
});

t.test('rdbg list through its shebang, against the local API, loads no gRPC', async (t) => {
  const home = join(dir, 'home');
  const path = daemonSocketPath(home);
  const d = await serve(path);
  t.teardown(d.close);
  // Which modules the CLI process loaded, written as it exits.
  const probe = join(dir, 'probe.js');
  const loaded = join(dir, 'loaded.json');
  writeFileSync(probe, `process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(loaded)}, JSON.stringify(Object.keys(require.cache))));\n`);
  const bin = join(__dirname, '../../bin/rdbg.js');
  const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const p = spawn(bin, ['list'], { env: { ...process.env, RDBG_HOME: home, NODE_OPTIONS: `--require ${probe}` } });
    let out = '';
    p.stdout.on('data', (c) => (out += c));
    p.stderr.on('data', (c) => (out += c));
    p.on('exit', (code) => resolve({ code, out }));
  });
  t.equal(r.code, 0, r.out);
  t.match(r.out, /web\s+team\s+8080\s+header x-dev=me\s+127\.0\.0\.1:9999\s+me@laptop\s+ACTIVE\s+7/, 'the intercept as the daemon listed it');
  const files = JSON.parse((await import('node:fs')).readFileSync(loaded, 'utf8')) as string[];
  t.notOk(files.some((f) => /grpc|protobufjs/.test(f)), 'neither gRPC nor protobufjs was loaded');
});
