import t from 'tap';
import { startLoopbackManager, type LoopbackManager } from '../helpers/loopback-manager';
import * as grpc from '@grpc/grpc-js';
import { type ManagerClient } from '../../src/rpc/services';
import { PROTOCOL, VERSION } from '../../src/core/version';
import type { InterceptInfo__Output } from '../../src/gen/rdbg/v1/InterceptInfo';

// Which agents an intercept counts as serving it, against a real manager on loopback:
// `rdbg list` says ACTIVE with N agents only when N agents really have the intercept's rules.

let lm: LoopbackManager;
let client: ManagerClient;
let session = '';

t.before(async () => {
  lm = await startLoopbackManager();
  ({ client, session } = lm);
});
t.teardown(async () => {
  await lm.stop();
});

const call = <T>(fn: (cb: (err: grpc.ServiceError | null, res?: T) => void) => void): Promise<T> =>
  new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res!))));

function arrive(workload: string, pod: string, appPort = 8080): Promise<string> {
  const info = {
    version: VERSION, protocol: PROTOCOL, workload, namespace: 'default', pod_name: pod, pod_ip: '127.0.0.1',
    ports: [{ name: 'http', app_port: appPort, listen_port: appPort + 1010, service_port: 80 }],
  };
  return call<{ agent_id: string }>((cb) => client.agentArrive(info, cb)).then((s) => s.agent_id);
}

async function listed(workload: string): Promise<InterceptInfo__Output> {
  const l = await call<{ intercepts: InterceptInfo__Output[] }>((cb) => client.listIntercepts({ session_id: session, all: true }, cb));
  return l.intercepts.find((i) => i.spec?.workload === workload)!;
}

function watch(agentId: string): Promise<grpc.ClientReadableStream<unknown>> {
  const w = client.watchIntercepts({ agent_id: agentId });
  w.on('error', () => undefined);
  return new Promise((resolve) => w.once('data', () => resolve(w)));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('an agent counts once it watches the intercepts, not when it arrived', async (t) => {
  const spec = { workload: 'w1', namespace: 'default', port: 8080, headers: [{ name: 'x-dev', value: 'me', regex: false }], local_port: 8080 };
  const created = await call<InterceptInfo__Output>((cb) => client.createIntercept({ session_id: session, spec }, cb));
  t.equal(created.state, 'WAITING_FOR_AGENT');
  const a = await arrive('w1', 'w1-pod-a');
  t.match(await listed('w1'), { state: 'WAITING_FOR_AGENT', agents: 0 }, 'arrived, not watching: it has no rules yet');
  const wa = await watch(a);
  t.teardown(() => wa.cancel());
  t.match(await listed('w1'), { state: 'ACTIVE', agents: 1 });
  const b = await arrive('w1', 'w1-pod-b');
  t.match(await listed('w1'), { agents: 1 }, 'a second pod\'s agent that has not watched yet does not count');
  const wb = await watch(b);
  t.teardown(() => wb.cancel());
  t.match(await listed('w1'), { state: 'ACTIVE', agents: 2 });
  wb.cancel();
  await sleep(100);
  t.match(await listed('w1'), { agents: 1 }, 'an agent whose watch ended no longer counts');
});

t.test("a pod's agent that arrives again replaces its earlier registrations (the Arrives it gave up on during a pause)", async (t) => {
  const spec = { workload: 'w2', namespace: 'default', port: 8080, headers: [{ name: 'x-dev', value: 'me', regex: false }], local_port: 8080 };
  await call<InterceptInfo__Output>((cb) => client.createIntercept({ session_id: session, spec }, cb));
  const first = await arrive('w2', 'w2-pod');
  const w1 = await watch(first);
  t.teardown(() => w1.cancel());
  const ended = new Promise<void>((r) => w1.once('end', () => r()));
  const stale = await arrive('w2', 'w2-pod');
  const latest = await arrive('w2', 'w2-pod');
  await ended;
  t.pass("the first registration's watch was ended");
  const hb = (id: string) => call<{ ok: boolean }>((cb) => client.agentHeartbeat({ agent_id: id, requests: {} }, cb)).then(() => 'ok', (e: grpc.ServiceError) => e.code);
  t.equal(await hb(first), grpc.status.NOT_FOUND, 'the replaced registrations are gone');
  t.equal(await hb(stale), grpc.status.NOT_FOUND);
  t.equal(await hb(latest), 'ok');
  const w = await watch(latest);
  t.teardown(() => w.cancel());
  t.match(await listed('w2'), { state: 'ACTIVE', agents: 1 }, 'one pod, one agent');
});

t.test('one host, one agent per port: both stay registered and watching (no flapping)', async (t) => {
  const hb = (id: string) => call<{ ok: boolean }>((cb) => client.agentHeartbeat({ agent_id: id, requests: {} }, cb)).then(() => 'ok', (e: grpc.ServiceError) => e.code);
  const web = await arrive('w3', 'vm', 8080);
  const ww = await watch(web);
  t.teardown(() => ww.cancel());
  let ended = false;
  ww.once('end', () => (ended = true));
  const admin = await arrive('w3', 'vm', 8081);
  const wa = await watch(admin);
  t.teardown(() => wa.cancel());
  await sleep(100);
  t.equal(ended, false, "the port 8080 agent's watch goes on");
  t.equal(await hb(web), 'ok');
  t.equal(await hb(admin), 'ok');
  const spec = { workload: 'w3', namespace: 'default', port: 8081, headers: [{ name: 'x-dev', value: 'me', regex: false }], local_port: 8081 };
  await call<InterceptInfo__Output>((cb) => client.createIntercept({ session_id: session, spec }, cb));
  t.match(await listed('w3'), { state: 'ACTIVE', agents: 2 });
});
