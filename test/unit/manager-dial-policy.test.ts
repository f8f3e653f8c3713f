import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { DialPolicy } from '../../manager/dial-policy';
import { ManagerServer } from '../../manager/server';
import { CHANNEL_OPTIONS, managerPackage, type ManagerClient } from '../../src/rpc/services';
import { PROTOCOL } from '../../src/core/version';
import { openRawTcp } from '../../src/tunnel/raw/flow';

t.test('the policy: what is always refused, what the cluster and the allow list let through', async (t) => {
  const subnets = ['10.96.0.0/12', '10.244.0.0/16'];
  const p = new DialPolicy({
    clusterSubnets: () => subnets,
    allowCidrs: ['192.168.5.0/24'],
    ownAddresses: () => [
      { address: '127.0.0.1', loopbackDevice: true },
      { address: '10.244.1.7', loopbackDevice: false },
      { address: 'fd00::7', loopbackDevice: false },
    ],
  });
  const refused: [string, RegExp][] = [
    ['127.0.0.1', /loopback/], ['127.1.2.3', /loopback/], ['::1', /loopback/], ['::ffff:127.0.0.1', /loopback/],
    ['169.254.169.254', /link-local/], ['fe80::1', /link-local/],
    ['0.0.0.0', /unspecified/], ['::', /unspecified/],
    ['224.0.0.251', /multicast/], ['ff02::1', /multicast/], ['255.255.255.255', /broadcast/],
    ['10.244.1.7', /traffic manager's own address/], ['fd00::7', /own address/],
    ['192.168.6.1', /outside the cluster's subnets and the manager's allow list \(rdbg manager serve --allow-cidr \/ Helm manager\.allowCidrs\)/],
    ['8.8.8.8', /outside/], ['2001:db8::1', /outside/],
  ];
  for (const [ip, why] of refused) t.match(p.refusal(ip, 80), why, ip);
  t.match(p.refusal('10.0.0.5', 80), /^10\.0\.0\.5:80 is outside/, 'the message names the destination');
  t.match(p.refusal('fd00::7', 443), /^\[fd00::7\]:443 /);
  for (const ip of ['10.96.0.1', '10.244.1.8', '192.168.5.9', '::ffff:10.96.0.10']) t.equal(p.refusal(ip, 80), undefined, ip);
  subnets.push('172.20.0.0/16');
  t.equal(p.refusal('172.20.3.4', 80), undefined, 'subnets found later are read at each check');
});

t.test('an address is judged the same however it is spelled', async (t) => {
  const p = new DialPolicy({
    clusterSubnets: () => ['fd00::/64', '10.244.0.0/16'],
    ownAddresses: () => [{ address: 'fd00::7', loopbackDevice: false }, { address: '10.244.1.7', loopbackDevice: false }],
  });
  for (const ip of ['fd00::7', 'fd00:0:0:0:0:0:0:7', 'FD00::0:7', '::ffff:10.244.1.7', '::ffff:af4:107']) {
    t.match(p.refusal(ip, 80), /own address/, ip);
  }
  t.match(p.refusal('0:0:0:0:0:0:0:1', 80), /loopback/);
  t.match(p.refusal('::ffff:7f00:1', 80), /loopback/);
  t.equal(p.refusal('fd00:0:0:0:0:0:0:8', 80), undefined, 'a neighbour in the subnet is let through');
});

t.test('an address on the loopback device counts as the manager\'s own unless the subnets or the allow list name it', async (t) => {
  const p = new DialPolicy({
    clusterSubnets: () => ['198.19.128.0/20'],
    ownAddresses: () => [{ address: '198.19.128.10', loopbackDevice: true }, { address: '198.19.200.1', loopbackDevice: true }],
  });
  t.equal(p.refusal('198.19.128.10', 80), undefined);
  t.match(p.refusal('198.19.200.1', 80), /own address/);
});

t.test('the default own addresses are this host\'s interfaces', async (t) => {
  const p = new DialPolicy({ clusterSubnets: () => [], allowCidrs: ['0.0.0.0/0'] });
  t.match(p.refusal('127.0.0.1', 80), /loopback/);
  t.equal(p.refusal('192.0.2.1', 80), undefined, 'allowed, and no interface of this host holds it');
});

// A manager with the default policy on loopback: every dial path refuses a loopback server.
t.test('every dial path of a real manager applies the policy', async (t) => {
  const echo = net.createServer((s) => s.pipe(s)).listen(0, '127.0.0.1');
  await new Promise((r) => echo.once('listening', r));
  const echoPort = (echo.address() as net.AddressInfo).port;
  const mgr = new ManagerServer({ listen: '127.0.0.1:0', serviceSubnets: ['10.96.0.0/12'], podSubnets: [], clusterDomain: 'cluster.local', namespace: 'rdbg', leaseSeconds: 15 });
  const port = await mgr.start();
  const client = new (managerPackage().Manager)(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as ManagerClient;
  t.teardown(async () => {
    client.close();
    await mgr.stop();
    echo.close();
  });
  const session: string = await new Promise((resolve, reject) =>
    client.arrive({ client_version: '0.1.0', protocol: PROTOCOL, user: 'test' }, (err, res) => (err ? reject(err) : resolve(res!.session_id))),
  );

  const h2 = http2.connect(`http://127.0.0.1:${mgr.data.port}`);
  h2.on('error', () => undefined);
  for (const protocol of ['tcp', 'udp']) {
    const req = h2.request({
      ':method': 'POST', ':path': '/rdbg.v1/flow', 'rdbg-session': session, 'rdbg-protocol': protocol, 'rdbg-host': '127.0.0.1', 'rdbg-port': String(echoPort),
    });
    req.on('error', () => undefined);
    const h = await new Promise<http2.IncomingHttpHeaders>((r) => req.once('response', r));
    req.close();
    t.equal(h['rdbg-dial'], 'DENIED', `HTTP/2 ${protocol}`);
    t.match(decodeURIComponent(String(h['rdbg-message'])), /is a loopback address/);
  }
  h2.close();

  const raw = await openRawTcp(`127.0.0.1:${mgr.data.port}`, { session, protocol: 'tcp', host: '127.0.0.1', port: echoPort, source: '127.0.0.1:1' }, 5000).then(
    (s) => (s.destroy(), 'opened'),
    (err: Error & { code?: string }) => `${err.code}: ${err.message}`,
  );
  t.match(raw, /^DENIED: .*127\.0\.0\.1:\d+ is a loopback address/, 'raw flow');
  t.equal(mgr.stats.flowsOpened, 0, 'nothing was dialled');
});
