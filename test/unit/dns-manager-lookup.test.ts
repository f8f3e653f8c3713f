import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as dnsPacket from 'dns-packet';
import { ManagerServer } from '../../manager/server';
import { DnsServer } from '../../daemon/root/dns/dns-server';
import { managerLookup } from '../../daemon/root/dns/manager-lookup';
import { CHANNEL_OPTIONS, managerPackage, type ManagerClient } from '../../src/rpc/services';
import { query, udpAsk } from './dns-client';

// lookupCluster against a real in-process manager over gRPC. Only answers
// that need no DNS traffic are asked here (the manager would otherwise use
// this machine's resolver); real lookups are in test/sandbox/dns-connect.

let mgr: ManagerServer;
let client: ManagerClient;

t.before(async () => {
  mgr = new ManagerServer({ listen: '127.0.0.1:0', serviceSubnets: [], podSubnets: [], clusterDomain: 'cluster.local', namespace: 'rdbg', leaseSeconds: 15 });
  const port = await mgr.start();
  client = new (managerPackage().Manager)(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as ManagerClient;
});
t.teardown(async () => {
  client.close();
  await mgr.stop();
});

t.test('an RPC error (no such session) rejects with its gRPC status, and the server answers SERVFAIL', async (t) => {
  const lookup = managerLookup(client, () => 'no-such-session');
  await t.rejects(lookup('echo.default', 1), { code: grpc.status.NOT_FOUND });
  const server = new DnsServer({
    listen: [{ address: '127.0.0.1', port: 0 }], clusterDomain: 'cluster.local', namespaces: () => ['default'], lookupCluster: lookup, upstreams: [],
  });
  const [{ port }] = await server.start();
  t.teardown(() => server.stop());
  const a = await udpAsk(port, query('echo.default', 'A'));
  t.equal((dnsPacket.decode(a!) as { rcode?: string }).rcode, 'SERVFAIL');
});

t.test('a manager that is gone: rejected within the deadline', async (t) => {
  const dead = new (managerPackage().Manager)('127.0.0.1:1', grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as ManagerClient;
  t.teardown(() => dead.close());
  const start = Date.now();
  await t.rejects(managerLookup(dead, () => 's', 500)('echo.default', 1));
  t.ok(Date.now() - start < 2000);
});
