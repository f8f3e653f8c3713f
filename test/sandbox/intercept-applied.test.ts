import t from 'tap';
import * as net from 'node:net';
import { NAMESPACE, startAgent, startLaptop, startManager, startServer, WORKLOAD } from './agent-harness';

// When `rdbg intercept` or `rdbg leave` returns, every agent of the workload
// routes by it already: the developer's next request goes where they said,
// with no retry. Two of the three agents here reach the manager through a
// relay that holds each chunk from the manager 300 ms, as an agent on a busy
// node or a congested link would see it.

const HOLD_MS = 300;

/** A TCP relay to `port` on 127.0.0.1 that delays what comes back from it by `holdMs`. */
async function slowRelay(t: { teardown(fn: () => unknown): void }, port: number, holdMs: number): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on('data', (d: Buffer) => void setTimeout(() => client.writable && client.write(d), holdMs));
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', () => setTimeout(end, holdMs));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise((r) => server.close(r));
  });
  return (server.address() as net.AddressInfo).port;
}

t.test('intercept and leave return once every agent of the workload routes by them', async (t) => {
  const manager = await startManager(t);
  const app = await startServer(t, 'app');
  const relay = await slowRelay(t, manager.port, HOLD_MS);
  const agents = [
    await startAgent(t, manager.port, app.port, { podName: 'shop-a' }),
    await startAgent(t, relay, app.port, { podName: 'shop-b' }),
    await startAgent(t, relay, app.port, { podName: 'shop-c' }),
  ];
  const laptop = await startLaptop(t, manager.port);
  // The agents watch the registry a moment after they link: wait until the manager counts all three.
  const probe = await laptop.createIntercept({ workload: WORKLOAD, namespace: NAMESPACE, port: app.port, local_port: 1, headers: [{ name: 'x-probe', value: '1', regex: false }] });
  for (let i = 0; i < 100 && (await laptop.listIntercepts()).find((x) => x.id === probe.id)?.agents !== 3; i++) await new Promise((r) => setTimeout(r, 50));
  await laptop.removeIntercept(probe.id);

  for (let round = 1; round <= 3; round++) {
    const info = await laptop.createIntercept({
      workload: WORKLOAD,
      namespace: NAMESPACE,
      port: app.port,
      headers: [{ name: 'x-dev', value: `me-${round}`, regex: false }],
      local_port: 1,
    });
    t.equal(info.state, 'ACTIVE', `round ${round}: active`);
    t.equal(info.agents, 3, `round ${round}: three agents`);
    t.same(agents.map((a) => a.table.get(info.id) !== undefined), [true, true, true], `round ${round}: every agent has the intercept when it returns`);
    await laptop.removeIntercept(info.id);
    t.same(agents.map((a) => a.table.get(info.id) === undefined), [true, true, true], `round ${round}: none has it when leave returns`);
  }
});
