import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLUSTER, NETCLIENT, SERVERS, Sandbox } from '../helpers/sandbox';
import { waitForLine } from '../helpers/netns';

// What the standalone manager dials for a laptop: its dial policy against real
// clients (curl through SOCKS5, socat through the TUN device).
//   198.18.60.0/24  allowed by --allow-cidr: a server at .2, the manager's own address at .1
//   198.18.61.0/24  neither the cluster's nor allowed: a server at .2
//   127.0.0.1:80    a server on the manager's own loopback
//   198.19.140.5    inside the announced service subnet, but the cluster namespace has no route to it

let sb: Sandbox;
const SOCKS = '127.0.0.1:1080';
const ALLOWED = '198.18.60.2';
const MANAGER_OWN = '198.18.60.1';
const OUTSIDE = '198.18.61.2';
const NO_ROUTE = '198.19.140.5';

t.before(async () => {
  sb = await Sandbox.create({ laptops: 2, managerArgs: ['--allow-cidr', '198.18.60.0/24'] });
  const allowed = sb.addNamespace('a', 60);
  const outside = sb.addNamespace('o', 61);
  await Promise.all([
    waitForLine(allowed.spawn('node', [SERVERS, ALLOWED]), (l) => l === 'READY', 15_000, 'allowed server'),
    waitForLine(outside.spawn('node', [SERVERS, OUTSIDE]), (l) => l === 'READY', 15_000, 'outside server'),
    waitForLine(sb.cluster.spawn('node', [SERVERS, '127.0.0.1']), (l) => l === 'READY', 15_000, 'loopback server'),
  ]);
  const socks = await sb.laptops[0].rdbg(['connect', '--manager', sb.laptops[0].managerAddress, '--socks', SOCKS]);
  if (socks.code !== 0) throw new Error(`connect --socks failed: ${socks.stderr}`);
  const tun = await sb.laptops[1].rdbg(['connect', '--manager', sb.laptops[1].managerAddress]);
  if (tun.code !== 0) throw new Error(`connect failed: ${tun.stderr}`);
});
t.teardown(() => sb?.destroy());

const curlSocks = (url: string) => sb.laptops[0].ns.run('curl', ['-sS', '--max-time', '10', '--socks5-hostname', SOCKS, url], 15_000);
const daemonLog = (): string => readFileSync(join(sb.laptops[0].home, 'daemon.log'), 'utf8');
const managerAlive = (): boolean => sb.manager!.exitCode === null && sb.manager!.signalCode === null;

t.test('curl through SOCKS5 is refused what the manager must not dial, with the reason in the daemon log', async (t) => {
  const refused: [string, RegExp][] = [
    ['http://127.0.0.1/', /127\.0\.0\.1:80 is a loopback address/],
    ['http://loopback.default/', /127\.0\.0\.1:80 is a loopback address/], // a cluster name that resolves to loopback
    [`http://${MANAGER_OWN}:${CLUSTER.managerPort}/`, /198\.18\.60\.1:8081 is the traffic manager's own address/],
    [`http://${OUTSIDE}/`, /198\.18\.61\.2:80 is outside the cluster's subnets and the manager's allow list \(rdbg manager serve --allow-cidr/],
    ['http://169.254.169.254/latest/meta-data/', /169\.254\.169\.254:80 is link-local/],
  ];
  for (const [url, why] of refused) {
    const logged = daemonLog().length;
    const r = await curlSocks(url);
    t.not(r.code, 0, `${url} refused`);
    t.notMatch(r.stdout, /hello from/, `${url}: no page`);
    t.match(r.stderr, /not allowed|SOCKS5/i, `${url}: curl names the SOCKS refusal: ${r.stderr.trim()}`);
    t.match(daemonLog().slice(logged), why, `${url}: the reason is in the user daemon's log`);
  }
  t.ok(managerAlive());
});

t.test('what --allow-cidr names and the cluster subnets are dialled', async (t) => {
  for (const url of [`http://${ALLOWED}/`, `http://${CLUSTER.echoIp}/`, 'http://echo.default/']) {
    const r = await curlSocks(url);
    t.equal(r.code, 0, `${url}: ${r.stderr}`);
    t.match(r.stdout, /^hello from /);
  }
});

t.test('a UDP datagram to a cluster address the manager cannot route fails that flow only', async (t) => {
  const tunLaptop = sb.laptops[1].ns;
  // Through the TUN device: the manager's connect() fails with ENETUNREACH.
  const sent = await tunLaptop.run('sh', ['-c', `echo x | socat -T 2 - UDP4:${NO_ROUTE}:9999`], 15_000);
  t.equal(sent.code, 0, `socat: ${sent.stderr}`);
  // Through SOCKS5 UDP ASSOCIATE: no reply comes, and nothing else happens.
  const socksUdp = await sb.laptops[0].ns.run('node', [NETCLIENT, 'udp', '--socks', SOCKS, '--dst', `${NO_ROUTE}:9999`], 20_000);
  t.not(socksUdp.code, 0, 'no UDP reply through SOCKS5');
  await new Promise((r) => setTimeout(r, 1000));
  t.ok(managerAlive(), 'the manager is still running');
  const curl = await tunLaptop.run('curl', ['-sS', '--max-time', '10', `http://${CLUSTER.echoIp}/`], 15_000);
  t.equal(curl.code, 0, `curl through the TUN device afterwards: ${curl.stderr}`);
  t.match(curl.stdout, /^hello from /);
  const echo = await sb.laptops[0].ns.run('node', [NETCLIENT, 'udp', '--socks', SOCKS, '--dst', `${CLUSTER.echoIp}:7`], 20_000);
  t.match(echo.stdout, /ping over udp/, `a UDP flow through SOCKS5 afterwards: ${echo.stderr}`);
});
