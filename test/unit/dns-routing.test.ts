import t from 'tap';
import { DnsRouter } from '../../daemon/root/dns/routing';
import { reverseNameIn, reverseNameToAddress, reverseZones } from '../../daemon/root/dns/reverse-name';
import { parseCidr } from '../../src/core/cidr';

// Which names the laptop's resolver sends to the cluster.

const router = new DnsRouter({
  clusterDomain: 'cluster.local',
  namespaces: () => ['default', 'prod', 'io'],
  include: ['internal.corp'],
  exclude: ['com', 'io', 'net', 'org', 'ru', 'legacy.internal.corp'],
  reverseCidrs: ['198.19.128.0/20', '2001:db8:96::/64'],
});

t.test('cluster domain, namespaces, include', async (t) => {
  for (const name of [
    'echo.default.svc.cluster.local', 'ECHO.Default.svc.cluster.local.', 'cluster.local', 'x.cluster.local',
    'echo.default', 'echo.default.', 'echo.default.svc', 'echo.prod', 'a.b.prod', 'db.internal.corp', 'internal.corp',
  ]) t.equal(router.route(name), 'cluster', name);
});

t.test('everything else goes upstream', async (t) => {
  for (const name of [
    'www.example.com', 'echo', 'default', 'echo.nosuchns', 'echo.nosuchns.svc', 'svc', 'default.svc',
    'www.example.test', 'localcluster.local', 'x.cluster.local.evil', '', '.',
    // a namespace called `io` cannot capture the internet's names: exclude wins
    'github.io', 'x.io',
    // exclude wins over include
    'legacy.internal.corp', 'a.legacy.internal.corp',
  ]) t.equal(router.route(name), 'upstream', JSON.stringify(name));
});

t.test('a generic exclude never takes the cluster domain itself', async (t) => {
  const r = new DnsRouter({ clusterDomain: 'k8s.corp.net', namespaces: () => ['default'] });
  t.equal(r.route('echo.default.svc.k8s.corp.net'), 'cluster');
  t.equal(r.route('www.corp.net'), 'upstream');
  const r2 = new DnsRouter({ clusterDomain: 'cluster.local', namespaces: () => [], exclude: ['legacy.cluster.local'] });
  t.equal(r2.route('a.legacy.cluster.local'), 'upstream', 'an exclude under the cluster domain applies');
  t.equal(r2.route('a.cluster.local'), 'cluster');
});

t.test('default excludes are Telepresence\'s', async (t) => {
  const r = new DnsRouter({ clusterDomain: 'cluster.local', namespaces: () => ['com', 'org'] });
  t.equal(r.route('google.com'), 'upstream');
  t.equal(r.route('wikipedia.org'), 'upstream');
});

t.test('namespaces are read on every decision', async (t) => {
  let ns: string[] = [];
  const r = new DnsRouter({ clusterDomain: 'cluster.local', namespaces: () => ns });
  t.equal(r.route('echo.team-a'), 'upstream');
  ns = ['team-a'];
  t.equal(r.route('echo.team-a'), 'cluster');
});

t.test('reverse names of the cluster subnets only', async (t) => {
  t.equal(router.route('10.128.19.198.in-addr.arpa'), 'cluster');
  t.equal(router.route('255.143.19.198.in-addr.arpa.'), 'cluster', 'last address of the /20');
  t.equal(router.route('0.144.19.198.in-addr.arpa'), 'upstream', 'first address after it');
  t.equal(router.route('1.0.0.127.in-addr.arpa'), 'upstream');
  t.equal(router.route('19.198.in-addr.arpa'), 'upstream', 'a zone, not an address');
  t.equal(router.route('300.128.19.198.in-addr.arpa'), 'upstream');
  const v6 = '0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.8.b.d.0.1.0.0.2.ip6.arpa';
  t.equal(router.route(v6), 'cluster');
  t.equal(router.route(v6.replace(/^0\.1/, 'g.1')), 'upstream');
  t.same(reverseNameToAddress('4.3.2.1.in-addr.arpa'), { family: 4, value: 0x01020304n });
});

t.test('reverse zones of a subnet: exactly its addresses, as DNS delegates them', async (t) => {
  const z = (c: string): string[] => reverseZones(parseCidr(c));
  t.same(z('10.96.0.0/16'), ['96.10.in-addr.arpa']);
  t.same(z('10.244.0.0/24'), ['0.244.10.in-addr.arpa']);
  t.same(z('10.0.0.5/32'), ['5.0.0.10.in-addr.arpa']);
  const slash20 = z('198.19.128.0/20');
  t.equal(slash20.length, 16, 'a /20 is 16 zones of a /24');
  t.same([slash20[0], slash20[15]], ['128.19.198.in-addr.arpa', '143.19.198.in-addr.arpa']);
  t.same(z('10.96.0.0/12'), Array.from({ length: 16 }, (_, i) => `${96 + i}.10.in-addr.arpa`));
  t.same(z('10.96.0.0/11'), ['10.in-addr.arpa'], 'more than 16 zones: the covering zone');
  t.same(z('0.0.0.0/0'), ['in-addr.arpa']);
  t.same(z('2001:db8:96::/112'), ['0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.8.b.d.0.1.0.0.2.ip6.arpa'.split('.').slice(4).join('.')]);
  t.same(z('fd00:10:96::/106').length, 4, 'a /106 is 4 zones of 27 nibbles');
  t.same(z('2001:db8::/32'), ['8.b.d.0.1.0.0.2.ip6.arpa']);
  // Every address of a subnet has its reverse name under one of the zones, and no zone holds an address outside it.
  for (const [cidr, inside, outside] of [
    ['198.19.128.0/20', '198.19.143.255', '198.19.144.0'],
    ['fd00:10:96::/106', 'fd00:10:96::3f:ffff', 'fd00:10:96::40:0'],
  ]) {
    const ptr = (ip: string): string =>
      ip.includes(':')
        ? [...expand6(ip)].reverse().join('.') + '.ip6.arpa'
        : ip.split('.').reverse().join('.') + '.in-addr.arpa';
    const under = (n: string): boolean => z(cidr).some((zone) => n.endsWith(`.${zone}`));
    t.ok(under(ptr(inside)) && reverseNameIn(ptr(inside), [parseCidr(cidr)]), `${inside} is under a zone of ${cidr}`);
    t.notOk(under(ptr(outside)), `${outside} is under no zone of ${cidr}`);
  }
});

function expand6(ip: string): string {
  const [head, tail] = ip.split('::');
  const h = head ? head.split(':') : [];
  const tl = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl];
  return groups.map((g) => g.padStart(4, '0')).join('');
}

t.test('the name the manager is asked for', async (t) => {
  t.equal(router.managerName('echo.default'), 'echo.default', 'short forms: bare, the manager expands them');
  t.equal(router.managerName('Echo.Default.svc.cluster.local.'), 'echo.default.svc.cluster.local.', 'absolute');
  t.equal(router.managerName('10.128.19.198.in-addr.arpa'), '10.128.19.198.in-addr.arpa.');
});

t.test('upstream addresses', async (t) => {
  const { parseUpstream } = await import('../../daemon/root/dns/upstream');
  t.same(parseUpstream('192.0.2.53'), { address: '192.0.2.53', port: 53, family: 4 });
  t.same(parseUpstream('192.0.2.53:5353'), { address: '192.0.2.53', port: 5353, family: 4 });
  t.same(parseUpstream('2001:db8::53'), { address: '2001:db8::53', port: 53, family: 6 });
  t.same(parseUpstream('[2001:db8::53]:5353'), { address: '2001:db8::53', port: 5353, family: 6 });
  t.same(parseUpstream('[fe80::1%eth0]'), { address: 'fe80::1%eth0', port: 53, family: 6 });
  for (const bad of ['', 'dns.example', '192.0.2.53:0', '192.0.2.53:70000', '[2001:db8::53', '1.2.3.4:53:53']) {
    t.throws(() => parseUpstream(bad), { code: 'RDBG_DNS_BAD_UPSTREAM' }, JSON.stringify(bad));
  }
});
