import t from 'tap';
import * as dnsPacket from 'dns-packet';
import type { ChildProcess } from 'node:child_process';
import { apply, restore } from '../../daemon/root/dns/resolv-conf';
import { CLUSTER_SEARCH, DNS, DNS_RUNNER, DnsSandbox, ORIGINAL_RESOLV_CONF } from './dns-fixture';

// The laptop's DNS with real programs: dnsmasq as the cluster's DNS and as the
// laptop's own resolver, a real manager resolving through the first, the
// laptop's resolv.conf (its namespace's own) pointed at rdbg, and dig asking.

let sb: DnsSandbox;
let resolver: ChildProcess;
let ready: Record<string, unknown>;

t.before(async () => {
  sb = await DnsSandbox.create();
  t.equal(sb.readResolvConf(), ORIGINAL_RESOLV_CONF);
  const { upstreams } = apply(sb.resolvConfPath, { nameserver: DNS.rdbg, search: CLUSTER_SEARCH }, sb.journal);
  t.same(upstreams, [DNS.original], 'the original resolver becomes the upstream');
  ({ proc: resolver, ready } = await sb.startResolver([DNS.rdbg, DNS.rdbg6], upstreams));
});
t.teardown(async () => {
  try {
    if (resolver && resolver.exitCode === null) await sb.stopResolver(resolver);
    if (sb) restore(sb.journal);
  } finally {
    sb?.destroy();
  }
});

async function dig(...args: string[]): Promise<string> {
  const r = await sb.laptop.run('dig', ['+time=3', '+tries=1', ...args], 20_000);
  return r.stdout;
}
const short = async (...args: string[]): Promise<string[]> => (await dig('+short', ...args)).trim().split('\n').filter(Boolean).sort();
const answer = async (...args: string[]): Promise<string[][]> =>
  (await dig('+noall', '+answer', ...args)).trim().split('\n').filter(Boolean).map((l) => l.split(/\s+/));
const status = async (...args: string[]): Promise<string | undefined> => /status: (\w+)/.exec(await dig(...args))?.[1];
const at = `@${DNS.rdbg}`;

t.test('the runner took the cluster info from the manager', async (t) => {
  t.match(ready, { cluster: { cluster_domain: 'cluster.local', service_subnets: [DNS.serviceCidr, DNS.serviceCidr6] } });
});

t.test('A and AAAA of a cluster service in every short form', async (t) => {
  for (const name of ['echo.default', 'echo.default.svc', 'echo.default.svc.cluster.local']) {
    t.same(await short(at, name, 'A'), [DNS.echo], `${name} A`);
    t.same(await short(at, name, 'AAAA'), [DNS.echo6], `${name} AAAA`);
  }
  const [rr] = await answer(at, 'echo.default', 'A');
  t.equal(rr[0], 'echo.default.', 'owned by the question\'s name');
  t.ok(Number(rr[1]) > 0 && Number(rr[1]) <= 5, `TTL ${rr[1]}: the cluster's 30 s capped at 5`);
});

t.test('a bare service name through the search list of the applied resolv.conf', async (t) => {
  t.match(sb.readResolvConf(), new RegExp(`^nameserver ${DNS.rdbg}$`, 'm'));
  t.same(await short('+search', 'echo', 'A'), [DNS.echo], 'dig +search (no @: the namespace\'s /etc/resolv.conf)');
  const g = await sb.laptop.run('getent', ['ahostsv4', 'echo'], 20_000);
  t.match(g.stdout, new RegExp(`^${DNS.echo.replace(/\./g, '\\.')}\\s`, 'm'), 'glibc (getent) resolves it too');
});

t.test('served on IPv6 too, UDP and TCP', async (t) => {
  t.same(await short(`@${DNS.rdbg6}`, 'echo.default', 'A'), [DNS.echo]);
  t.same(await short(`@${DNS.rdbg6}`, '+tcp', 'echo.default', 'AAAA'), [DNS.echo6]);
  t.same(await short(`@${DNS.rdbg6}`, 'www.example.test', 'A'), [DNS.www]);
});

t.test('headless service: both pod addresses', async (t) => {
  t.same(await short(at, 'headless.default', 'A'), [...DNS.headless].sort());
});

t.test('SRV, TXT, CNAME, PTR', async (t) => {
  t.same(await short(at, '_http._tcp.echo.default', 'SRV'), ['0 100 80 echo.default.svc.cluster.local.']);
  t.same(await short(at, 'echo.default', 'TXT'), ['"hello from the cluster"']);
  t.same(await short(at, 'alias.default', 'CNAME'), ['echo.default.svc.cluster.local.']);
  t.same(await short(at, '-x', DNS.echo), ['echo.default.svc.cluster.local.'], 'PTR of a service address');
  t.same(await short(at, '-x', DNS.echo6), ['echo.default.svc.cluster.local.'], 'PTR of an IPv6 service address');
  t.same(await short(`@${DNS.rdbg6}`, '-x', DNS.echo6), ['echo.default.svc.cluster.local.'], 'asked over IPv6 too');
});

t.test('unknown cluster name: NXDOMAIN; cluster name without AAAA: NOERROR, empty', async (t) => {
  t.equal(await status(at, 'nosuch.default', 'A'), 'NXDOMAIN');
  t.equal(await status(at, 'nosuch.default.svc.cluster.local', 'A'), 'NXDOMAIN');
  t.equal(await status(at, 'headless.default', 'AAAA'), 'NOERROR');
  t.same(await short(at, 'headless.default', 'AAAA'), []);
});

t.test('other names: answered by the original resolver, as it answers them', async (t) => {
  const direct = await answer(`@${DNS.original}`, 'www.example.test', 'A');
  t.same(await answer(at, 'www.example.test', 'A'), direct);
  t.same(await short(at, 'www.example.test', 'A'), [DNS.www]);
  t.equal(await status(at, 'nosuch.example.test', 'A'), 'NXDOMAIN', 'its NXDOMAIN too');
  t.same(await short('www.example.test'), [DNS.www], 'through the applied resolv.conf');
});

t.test('TCP', async (t) => {
  t.same(await short(at, '+tcp', 'echo.default', 'A'), [DNS.echo]);
  t.same(await short(at, '+tcp', 'headless.default', 'A'), [...DNS.headless].sort());
  t.same(await short(at, '+tcp', 'www.example.test', 'A'), [DNS.www]);
});

t.test('malformed queries get FORMERR or nothing, and the server keeps serving', async (t) => {
  const good = dnsPacket.encode({ id: 7, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name: 'echo.default', type: 'A' }] });
  const hdr = (qd: number): Buffer => Buffer.from([0xab, 0xcd, 1, 0, qd >> 8, qd & 255, 0, 0, 0, 0, 0, 0]);
  const payloads = [
    Buffer.from('ff', 'hex'),
    Buffer.from('this is not dns at all, not even close'),
    good.subarray(0, good.length - 2),
    hdr(0),
    Buffer.concat([hdr(2), good.subarray(12)]),
    Buffer.concat([hdr(1), Buffer.alloc(300, 0x3f)]),
    good,
  ];
  const r = await sb.laptop.run('node', [DNS_RUNNER, 'probe', DNS.rdbg, '53', ...payloads.map((p) => p.toString('hex'))], 20_000);
  const out = JSON.parse(r.stdout) as (string | null)[];
  const rcode = (hex: string | null): string | undefined => (hex ? (dnsPacket.decode(Buffer.from(hex, 'hex')) as { rcode?: string }).rcode : undefined);
  t.equal(out[0], null, 'one byte: dropped');
  t.equal(rcode(out[1]), 'FORMERR');
  t.equal(rcode(out[2]), 'FORMERR');
  t.equal(rcode(out[3]), 'FORMERR', 'QDCOUNT 0');
  t.equal(rcode(out[4]), 'FORMERR', 'QDCOUNT 2');
  t.equal(rcode(out[5]), 'FORMERR', 'a name past the limit');
  t.equal(rcode(out[6]), 'NOERROR', 'the good one after them');
  t.same(await short(at, 'echo.default', 'A'), [DNS.echo]);
});

t.test('a resolver that forwards back to us: SERVFAIL, no hang', async (t) => {
  // A second rdbg resolver whose "original" resolver (dnsmasq) forwards everything back to it.
  const loop = await sb.startResolver([DNS.rdbgLoop], [DNS.loopForwarder]);
  const start = Date.now();
  const st = await status(`@${DNS.rdbgLoop}`, 'loop.example.test', 'A');
  const ms = Date.now() - start;
  // Without EDNS the first pass cannot be marked; the forwarder adds EDNS, so a later pass is.
  const start2 = Date.now();
  t.equal(await status(`@${DNS.rdbgLoop}`, '+noedns', 'loop2.example.test', 'A'), 'SERVFAIL', 'no EDNS: SERVFAIL too');
  t.ok(Date.now() - start2 < 5000, `answered in ${Date.now() - start2} ms`);
  const counters = await sb.stopResolver(loop.proc);
  t.equal(st, 'SERVFAIL');
  t.ok(ms < 3000, `answered in ${ms} ms`);
  t.ok(counters.loops >= 1, `loop detected: ${JSON.stringify(counters)}`);
  t.comment(`loop: ${ms} ms, ${JSON.stringify(counters)}`);
});

t.test('manager gone: cluster names fail fast, every other name still resolves', async (t) => {
  await sb.killManager();
  const start = Date.now();
  t.equal(await status(at, 'alias.default', 'A'), 'SERVFAIL');
  t.ok(Date.now() - start < 4500, `SERVFAIL in ${Date.now() - start} ms`);
  t.same(await short(at, 'www.example.test', 'A'), [DNS.www]);
  t.same(await short('www.example.test'), [DNS.www], 'through the applied resolv.conf');
});

t.test('counters, then restore: resolv.conf byte-identical', async (t) => {
  const counters = await sb.stopResolver(resolver);
  t.ok(counters.queries > 20 && counters.cluster > 10 && counters.forwarded >= 4 && counters.errors >= 5, JSON.stringify(counters));
  t.same(restore(sb.journal), [{ path: sb.resolvConfPath, restored: true }]);
  t.equal(sb.readResolvConf(), ORIGINAL_RESOLV_CONF);
  t.same(sb.journal.entries(), []);
});
