import t from 'tap';
import * as net from 'node:net';
import { TrafficAgent } from '../../agent/traffic-agent';
import { get, intercept, startAgent, startLaptop, startManager, startServer, waitFor } from './agent-harness';

// The agent's link to the manager: it arrives, reports the app's environment,
// and survives a manager restart; while the manager is away every request
// goes to the app.

async function freePort(): Promise<number> {
  const s = net.createServer();
  const port = await new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as net.AddressInfo).port)));
  await new Promise((r) => s.close(r));
  return port;
}

t.test('the app environment is reported to the intercept owner', async (t) => {
  const manager = await startManager(t);
  const app = await startServer(t, 'app');
  const agent = await startAgent(t, manager.port, app.port, { env: { DATABASE_URL: 'postgres://db/shop', APP_MODE: 'test' } });
  const laptop = await startLaptop(t, manager.port);
  const info = await laptop.createIntercept({ workload: 'shop', namespace: 'default', port: agent.app.port, local_port: 1 });
  t.equal(info.state, 'ACTIVE');
  t.same(info.env, { DATABASE_URL: 'postgres://db/shop', APP_MODE: 'test' });
});

t.test('manager restart: requests go to the app meanwhile, intercepts work again after', async (t) => {
  const port = await freePort();
  const app = await startServer(t, 'app');
  const lap = await startServer(t, 'laptop');
  let manager = await startManager(t, port);
  const agent = await startAgent(t, port, app.port);
  let laptop = await startLaptop(t, port);
  await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: lap.port });
  t.equal((await get(agent.listenPort, '/1', { 'x-user': 'alice' })).headers['x-served-by'], 'laptop');

  // The manager crashes.
  manager.server.forceShutdown();
  await manager.stop();
  await waitFor(() => agent.table.size === 0, 5000, 'agent dropped the intercepts');
  t.equal((await get(agent.listenPort, '/2', { 'x-user': 'alice' })).headers['x-served-by'], 'app', 'without a manager, the app answers');

  // It comes back on the same address; the agent arrives again by itself.
  const firstId = agent.link.agentId;
  manager = await startManager(t, port);
  await waitFor(() => agent.link.agentId !== '' && agent.link.agentId !== firstId, 5000, 'agent arrived again');
  laptop = await startLaptop(t, port);
  await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: lap.port });
  t.equal((await get(agent.listenPort, '/3', { 'x-user': 'alice' })).headers['x-served-by'], 'laptop', 'diverted again');
  t.equal((await get(agent.listenPort, '/4')).headers['x-served-by'], 'app');
});

t.test('an agent started before its manager serves the app, then links', async (t) => {
  const port = await freePort();
  const app = await startServer(t, 'app');
  const agent = new TrafficAgent({ manager: `127.0.0.1:${port}`, workload: 'shop', namespace: 'default', appPort: app.port, listenPort: 0, listenHost: '127.0.0.1' });
  await agent.start();
  t.teardown(() => agent.stop());
  t.equal((await get(agent.listenPort, '/early')).headers['x-served-by'], 'app');
  await startManager(t, port);
  await waitFor(() => agent.link.agentId !== '', 6000, 'linked once the manager is up');
  t.pass('linked');
});

t.test('a lost agent session drops the intercepts until it arrives again', async (t) => {
  const manager = await startManager(t);
  const app = await startServer(t, 'app');
  const lap = await startServer(t, 'laptop');
  const agent = await startAgent(t, manager.port, app.port);
  const laptop = await startLaptop(t, manager.port);
  await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: lap.port });
  const first = agent.link.agentId;
  // The manager forgets the agent (as after its lease expired): its watch ends and heartbeats are refused.
  const registry = manager.intercepts as unknown as { agents: Map<string, unknown>; removeAgent(a: unknown): void };
  registry.removeAgent(registry.agents.get(first));
  await waitFor(() => agent.link.agentId !== first && agent.link.agentId !== '', 5000, 'arrived again');
  await waitFor(() => agent.table.size === 1, 5000, 'intercept back from the new snapshot');
  t.equal((await get(agent.listenPort, '/x', { 'x-user': 'alice' })).headers['x-served-by'], 'laptop');
});

// What a deleted manager pod leaves behind in a cluster: the agent dials the
// Service address, and for a while kube-proxy still sends new connections to
// the old pod, where they hang in silence (conntrack keeps them there). A relay
// stands in for the Service: in 'hold' it accepts and never answers, like the
// dead pod; then it forwards to the new manager, but a connection it held
// stays held.
t.test('a connection left hanging by a manager that is gone does not keep the agent from the new one', async (t) => {
  const app = await startServer(t, 'app');
  const lap = await startServer(t, 'laptop');
  let target = 0; // 0: hold
  const live = new Set<net.Socket>();
  const relay = net.createServer((s) => {
    live.add(s);
    s.on('close', () => live.delete(s));
    s.on('error', () => undefined);
    if (!target) return;
    const up = net.connect(target, '127.0.0.1');
    up.on('error', () => s.destroy());
    s.on('error', () => up.destroy());
    s.pipe(up).pipe(s);
    s.on('close', () => up.destroy());
    up.on('close', () => s.destroy());
  });
  const relayPort = await new Promise<number>((r) => relay.listen(0, '127.0.0.1', () => r((relay.address() as net.AddressInfo).port)));
  t.teardown(() => {
    for (const s of live) s.destroy();
    relay.close();
  });
  const first = await startManager(t);
  target = first.port;
  const agent = await startAgent(t, relayPort, app.port);
  const firstId = agent.link.agentId;
  t.ok(firstId, 'linked through the relay');

  target = 0;
  for (const s of live) s.destroy();
  first.server.forceShutdown();
  await first.stop();
  await waitFor(() => agent.link.agentId === '', 5000, 'the agent saw its manager go');
  await waitFor(() => live.size > 0, 5000, 'the agent dialled again, into the silence');

  const second = await startManager(t);
  target = second.port;
  await waitFor(() => agent.link.agentId !== '', 10_000, 'linked to the new manager, well before a keepalive would give up on the hanging connection');
  const laptop = await startLaptop(t, second.port);
  await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: lap.port });
  t.equal((await get(agent.listenPort, '/back', { 'x-user': 'alice' })).headers['x-served-by'], 'laptop', 'diverted by the new manager');
});
