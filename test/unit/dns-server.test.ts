import t from 'tap';
import * as dnsPacket from 'dns-packet';
import { DnsServer, type ClusterResult } from '../../daemon/root/dns/dns-server';
import { LOOP_OPTION_CODE } from '../../daemon/root/dns/loop-marker';
import { FakeUpstream, query, tcpAsk, udpAsk } from './dns-client';

// The laptop's DNS server on loopback: cluster names answered from a table
// standing in for the manager (the real manager is in test/sandbox/dns-*),
// other names relayed to a real UDP/TCP server standing in for the original resolver.

const D = 'svc.cluster.local';
const records: Record<string, ClusterResult['answers']> = {
  [`1:echo.default.${D}`]: [{ name: `echo.default.${D}`, type: 1, ttl: 30, address: '198.19.128.10' }],
  [`33:_http._tcp.echo.default.${D}`]: [{ name: `_http._tcp.echo.default.${D}`, type: 33, ttl: 30, target: `echo.default.${D}`, port: 80, priority: 0, weight: 100 }],
  [`16:echo.default.${D}`]: [{ name: `echo.default.${D}`, type: 16, ttl: 30, txt: ['hello', 'world'] }],
  [`5:alias.default.${D}`]: [{ name: `alias.default.${D}`, type: 5, ttl: 30, target: `echo.default.${D}` }],
  [`12:10.128.19.198.in-addr.arpa`]: [{ name: '10.128.19.198.in-addr.arpa', type: 12, ttl: 30, target: `echo.default.${D}` }],
  [`1:big.default.${D}`]: Array.from({ length: 60 }, (_, i) => ({ name: `big.default.${D}`, type: 1, ttl: 30, address: `198.19.1.${i + 1}` })),
};
const existing = new Set(Object.keys(records).map((k) => k.split(':')[1]));
const calls: string[] = [];
let mode: 'normal' | 'throw' | 'hang' = 'normal';

/** Expands like the manager: absolute names as they are, short forms under `svc.cluster.local`. */
async function lookupCluster(name: string, qtype: number): Promise<ClusterResult> {
  calls.push(`${qtype}:${name}`);
  if (mode === 'throw') throw new Error('manager unreachable');
  if (mode === 'hang') return new Promise(() => undefined);
  const full = name.endsWith('.') ? name.slice(0, -1) : name.endsWith('.svc') ? `${name}.cluster.local` : `${name}.${D}`;
  const answers = records[`${qtype}:${full}`];
  if (answers) return { rcode: 0, name: full, answers };
  return { rcode: existing.has(full) ? 0 : 3, name: full, answers: [] };
}

const up = new FakeUpstream();
let server: DnsServer;
let port = 0;

t.before(async () => {
  const upPort = await up.start();
  server = new DnsServer({
    listen: [{ address: '127.0.0.1', port: 0 }],
    clusterDomain: 'cluster.local',
    namespaces: () => ['default', 'prod'],
    reverseCidrs: ['198.19.128.0/20'],
    lookupCluster,
    upstreams: [`127.0.0.1:${upPort}`],
    upstreamTimeoutMs: 300,
    clusterTimeoutMs: 300,
  });
  [{ port }] = await server.start();
});
t.teardown(async () => {
  await server.stop();
  up.stop();
});

type Decoded = dnsPacket.DecodedPacket & { rcode: string };
const decode = (b: Buffer | undefined): Decoded => dnsPacket.decode(b!) as Decoded;

t.test('A for a short name: owned by the question, TTL capped, ID and RD kept', async (t) => {
  const r = decode(await udpAsk(port, query('echo.default', 'A', { id: 777 })));
  t.equal(r.id, 777);
  t.equal(r.rcode, 'NOERROR');
  t.ok(r.flag_rd && r.flag_ra && r.flag_qr);
  t.same(r.questions, [{ name: 'echo.default', type: 'A', class: 'IN' }]);
  t.match(r.answers, [{ name: 'echo.default', type: 'A', ttl: 5, data: '198.19.128.10' }]);
});

t.test('the full name and the `ns.svc` form', async (t) => {
  for (const name of [`echo.default.${D}`, 'echo.default.svc', 'Echo.Default.Svc']) {
    const r = decode(await udpAsk(port, query(name, 'A')));
    t.match(r.answers, [{ name, data: '198.19.128.10' }], name);
  }
});

t.test('AAAA without addresses: empty NOERROR; unknown names: NXDOMAIN', async (t) => {
  const r = decode(await udpAsk(port, query('echo.default', 'AAAA')));
  t.equal(r.rcode, 'NOERROR');
  t.same(r.answers, []);
  const n = decode(await udpAsk(port, query('nope.default', 'A')));
  t.equal(n.rcode, 'NXDOMAIN');
});

t.test('SRV, TXT, CNAME, PTR', async (t) => {
  const srv = decode(await udpAsk(port, query('_http._tcp.echo.default', 'SRV')));
  t.match(srv.answers, [{ type: 'SRV', name: '_http._tcp.echo.default', data: { port: 80, target: `echo.default.${D}`, weight: 100 } }]);
  const txt = decode(await udpAsk(port, query('echo.default', 'TXT')));
  t.same(((txt.answers![0] as dnsPacket.TxtAnswer).data as Buffer[]).map(String), ['hello', 'world']);
  const cname = decode(await udpAsk(port, query('alias.default', 'CNAME')));
  t.match(cname.answers, [{ type: 'CNAME', data: `echo.default.${D}` }]);
  const ptr = decode(await udpAsk(port, query('10.128.19.198.in-addr.arpa', 'PTR')));
  t.match(ptr.answers, [{ type: 'PTR', name: '10.128.19.198.in-addr.arpa', data: `echo.default.${D}` }]);
  t.ok(calls.includes('12:10.128.19.198.in-addr.arpa.'), 'reverse names are asked absolute');
});

t.test('other types for a cluster name: empty NOERROR, no manager call', async (t) => {
  const before = calls.length;
  for (const type of ['MX', 'NS', 'SOA'] as const) {
    const r = decode(await udpAsk(port, query('echo.default', type)));
    t.equal(r.rcode, 'NOERROR', type);
    t.same(r.answers, []);
  }
  t.equal(calls.length, before);
});

t.test('big answers: TC over UDP, everything over TCP; EDNS size honoured', async (t) => {
  const u = decode(await udpAsk(port, query('big.default', 'A')));
  t.ok(u.flag_tc, 'truncated');
  t.same(u.answers, []);
  const e = decode(await udpAsk(port, query('big.default', 'A', { edns: 4096 })));
  t.notOk(e.flag_tc, 'fits in 4096');
  t.equal(e.answers!.length, 60);
  t.match(e.additionals, [{ type: 'OPT' }], 'EDNS answered with EDNS');
  const [tcp] = await tcpAsk(port, [query('big.default', 'A')]);
  t.equal(decode(tcp).answers!.length, 60);
  t.ok(server.counters().truncated >= 1);
});

t.test('TCP: several queries on one connection, cluster and forwarded', async (t) => {
  const answers = (await tcpAsk(port, [query('echo.default', 'A', { id: 1 }), query('www.example.com', 'A', { id: 2 })])).map(decode);
  t.same(answers.map((a) => a.id).sort(), [1, 2]);
  t.match(answers.find((a) => a.id === 1)!.answers, [{ data: '198.19.128.10' }]);
  t.match(answers.find((a) => a.id === 2)!.answers, [{ data: '192.0.2.1' }]);
  t.same(up.tcpSeen.at(-1), query('www.example.com', 'A', { id: 2 }), 'TCP forwarded over TCP, bytes untouched');
});

t.test('other names: query bytes and answer bytes relayed untouched', async (t) => {
  const q = query('WwW.Example.COM', 'A', { id: 31337 });
  const a = await udpAsk(port, q);
  t.same(up.udpSeen.at(-1), q, 'query as sent');
  t.same(a, up.lastAnswer, 'answer as received');
  t.equal(decode(a).id, 31337);
});

t.test('EDNS queries are forwarded with the loop marker appended, nothing else changed', async (t) => {
  const q = query('www.example.org', 'AAAA', { edns: 1232 });
  const a = await udpAsk(port, q);
  const seen = up.udpSeen.at(-1)!;
  t.same(seen.subarray(0, q.length - 2), q.subarray(0, q.length - 2), 'same bytes up to the OPT RDLENGTH');
  t.match(decode(seen).additionals, [{ type: 'OPT', udpPayloadSize: 1232, options: [{ code: LOOP_OPTION_CODE }] }]);
  t.same(a, up.lastAnswer);
});

t.test('a query carrying our marker is a loop: SERVFAIL, not forwarded', async (t) => {
  const seenBefore = up.udpSeen.length;
  const q = dnsPacket.encode({
    id: 9, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name: 'loop.example.net', type: 'A' }],
    additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false,
      options: [{ code: LOOP_OPTION_CODE, data: Buffer.from('rdbg') } as unknown as dnsPacket.PacketOpt] }],
  });
  const r = decode(await udpAsk(port, q));
  t.equal(r.rcode, 'SERVFAIL');
  t.equal(up.udpSeen.length, seenBefore);
  t.ok(server.counters().loops >= 1);
});

t.test('upstream silent: SERVFAIL after the timeout, never a hang', async (t) => {
  up.silent = true;
  t.teardown(() => void (up.silent = false));
  const start = Date.now();
  const r = decode(await udpAsk(port, query('slow.example.com', 'A')));
  t.equal(r.rcode, 'SERVFAIL');
  t.ok(Date.now() - start < 1500, `answered in ${Date.now() - start} ms`);
  t.ok(server.counters().upstreamTimeouts >= 1);
});

t.test('manager failing or hanging: SERVFAIL', async (t) => {
  t.teardown(() => void (mode = 'normal'));
  mode = 'throw';
  t.equal(decode(await udpAsk(port, query('fail1.default', 'A'))).rcode, 'SERVFAIL');
  mode = 'hang';
  const start = Date.now();
  t.equal(decode(await udpAsk(port, query('fail2.default', 'A'))).rcode, 'SERVFAIL');
  t.ok(Date.now() - start < 1500);
});

t.test('answers are cached for their (capped) TTL and concurrent asks share one lookup', async (t) => {
  const name = 'echo.default.svc';
  const before = calls.filter((c) => c === `28:${name}`).length;
  await Promise.all(Array.from({ length: 5 }, () => udpAsk(port, query(name, 'AAAA'))));
  await udpAsk(port, query(name, 'AAAA'));
  t.equal(calls.filter((c) => c === `28:${name}`).length - before, 1);
  t.ok(server.counters().cacheHits >= 1);
});

t.test('our own address is never an upstream', async (t) => {
  server.setUpstreams([`127.0.0.1:${port}`, `127.0.0.1:${up.port}`]);
  t.same(server.upstreams(), [`127.0.0.1:${up.port}`]);
  const s = new DnsServer({ listen: [{ address: '127.0.0.1', port: 0 }], clusterDomain: 'cluster.local', namespaces: () => [], lookupCluster, upstreams: [] });
  const [{ port: p2 }] = await s.start();
  s.setUpstreams([`127.0.0.1:${p2}`]);
  t.same(s.upstreams(), []);
  t.equal(decode(await udpAsk(p2, query('www.example.com', 'A'))).rcode, 'SERVFAIL', 'no upstream: SERVFAIL');
  await s.stop();
  // Not started: nothing listens on the machine's wildcard address in a test.
  const w = new DnsServer({ listen: [{ address: '0.0.0.0', port: 5353 }], clusterDomain: 'cluster.local', namespaces: () => [], lookupCluster, upstreams: [] });
  w.setUpstreams(['127.0.0.1:5353', '127.0.0.53:5353', '192.0.2.1:5353', '127.0.0.1']);
  t.same(w.upstreams(), ['192.0.2.1:5353', '127.0.0.1:53'], 'a wildcard listen owns every loopback address on its port');
});

t.test('counters', async (t) => {
  const c = server.counters();
  t.ok(c.queries > 20 && c.cluster > 10 && c.forwarded >= 4 && c.errors >= 3, JSON.stringify(c));
});

t.test('a listen address that cannot be had fails with a code', async (t) => {
  const s = new DnsServer({ listen: [{ address: '127.0.0.1', port }], clusterDomain: 'cluster.local', namespaces: () => [], lookupCluster, upstreams: [] });
  await t.rejects(s.start(), { code: 'RDBG_DNS_LISTEN' });
});
