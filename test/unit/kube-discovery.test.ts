import t from 'tap';
import { createHash } from 'node:crypto';
import { coveringPrefixes } from '../../manager/kube/covering';
import { parsePodResolvConf } from '../../manager/kube/pod-dns';
import { isLoopback, peerAddress } from '../../manager/kube/peer';
import { claimAnnotation } from '../../manager/kube/claims';
import { cidrContains, parseCidr } from '../../src/core/cidr';

// The pure parts of the manager's Kubernetes mode: the fallbacks when the
// cluster publishes no subnets, the pod's resolv.conf, peers and claims.

t.test('covering prefix: the smallest one that holds every address, per family', async (t) => {
  t.same(coveringPrefixes(['10.96.0.1', '10.96.0.10']), ['10.96.0.0/28']);
  t.same(coveringPrefixes(['10.96.0.1', '10.96.200.3']), ['10.96.0.0/16']);
  t.same(coveringPrefixes(['10.96.0.1', '10.97.0.1']), ['10.96.0.0/15']);
  t.same(coveringPrefixes(['10.96.0.1']), ['10.96.0.1/32'], 'one address is its own /32');
  t.same(coveringPrefixes(['10.0.0.1', '11.0.0.1']), ['10.0.0.0/7']);
  t.same(coveringPrefixes(['1.2.3.4', '200.1.1.1']), ['0.0.0.0/0'], 'addresses with no common leading bit');
  t.same(coveringPrefixes([]), []);
  t.same(coveringPrefixes(['None', '', 'not-an-ip']), [], 'headless services (clusterIP None) are skipped');
  t.same(coveringPrefixes(['fd00:10:96::1', '10.96.0.10', 'fd00:10:96::a', '10.96.3.1']), ['10.96.0.0/22', 'fd00:10:96::/124'], 'both families');
  t.same(coveringPrefixes(['fd00:10:96::1', 'fd00:10:97::1']), ['fd00:10:96::/47']);
});

t.test('covering prefix holds every input and is minimal', async (t) => {
  // Random sets: the prefix contains all, and one bit longer would not.
  let seed = 7;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let round = 0; round < 200; round++) {
    const base = Math.floor(rnd() * 2 ** 32);
    const spread = Math.floor(rnd() * 2 ** Math.floor(rnd() * 24));
    const ips = Array.from({ length: 1 + Math.floor(rnd() * 6) }, () => {
      const v = (base + Math.floor(rnd() * (spread + 1))) % 2 ** 32;
      return [24, 16, 8, 0].map((s) => (v >>> s) & 255).join('.');
    });
    const [text] = coveringPrefixes(ips);
    const c = parseCidr(text);
    for (const ip of ips) t.ok(cidrContains(c, ip), `${text} holds ${ip}`);
    if (c.bits < 32) {
      const longer = parseCidr(`${ips[0]}/${c.bits + 1}`);
      t.notOk(ips.every((ip) => cidrContains(longer, ip)), `${longer.text} would not hold them all`);
    }
  }
});

t.test('pod resolv.conf gives the cluster domain, the namespace and the DNS server', async (t) => {
  const conf = 'search rdbg.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n';
  t.same(parsePodResolvConf(conf), { domain: 'cluster.local', namespace: 'rdbg', nameservers: ['10.96.0.10'] });
  const custom = '# kubelet\nnameserver 10.0.0.10\nsearch team-a.svc.k8s.example.org. svc.k8s.example.org k8s.example.org corp.example\n';
  t.same(parsePodResolvConf(custom), { domain: 'k8s.example.org', namespace: 'team-a', nameservers: ['10.0.0.10'] });
  t.same(parsePodResolvConf('nameserver 192.0.2.53\nsearch example.com\n'), { domain: undefined, namespace: undefined, nameservers: ['192.0.2.53'] },
    'a host resolv.conf (not a pod\'s) gives no cluster domain');
});

t.test('loopback peers: the kubelet\'s port-forward, and nothing else', async (t) => {
  t.equal(peerAddress('ipv4:127.0.0.1:51234'), '127.0.0.1');
  t.equal(peerAddress('ipv6:[::1]:51234'), '::1');
  t.equal(peerAddress('ipv6:[::ffff:127.0.0.1]:8081'), '::ffff:127.0.0.1');
  t.equal(peerAddress('ipv4:10.244.0.7:40000'), '10.244.0.7');
  for (const a of ['127.0.0.1', '127.5.0.1', '::1', '::ffff:127.0.0.1']) t.ok(isLoopback(a), a);
  for (const a of ['10.244.0.7', '::ffff:10.0.0.1', '0.0.0.0', '::', 'fe80::1', '', undefined, '128.0.0.1']) t.notOk(isLoopback(a), String(a));
});

t.test('an intercept claim names the session only by its hash', async (t) => {
  const session = '3f1e1c1a-8c3b-4f8e-9d43-4a5a2b1c0d9e';
  const hash = createHash('sha256').update(session).digest('hex');
  const c = claimAnnotation(session);
  t.equal(c.key, `rdbg.dev/claim-${hash.slice(0, 12)}`);
  t.equal(c.value, hash);
  t.notOk(c.key.includes(session.slice(0, 8)) || c.value.includes(session), 'the session id itself does not appear');
  t.ok(c.key.length - 'rdbg.dev/'.length <= 63, 'the annotation name fits the 63-character limit');
});
