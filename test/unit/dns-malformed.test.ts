import t, { type Test } from 'tap';
import * as dnsPacket from 'dns-packet';
import { DnsServer, type ClusterResult } from '../../daemon/root/dns/dns-server';
import { FakeUpstream, query, tcpAsk, udpAsk } from './dns-client';

// Malformed queries: precise errors where an ID can be read, silence where
// not, and the server keeps serving. Fuzzed with a fixed seed, bounded.

const SEED = 0x5eed_d25;
const CASES = 3000;
const OVER_THE_WIRE = 300;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const lookupCluster = async (name: string): Promise<ClusterResult> => ({
  rcode: 0, name, answers: [{ name, type: 1, ttl: 5, address: '198.19.128.10' }],
});
const up = new FakeUpstream();
let server: DnsServer;
let port = 0;

t.before(async () => {
  await up.start();
  server = new DnsServer({
    listen: [{ address: '127.0.0.1', port: 0 }],
    clusterDomain: 'cluster.local',
    namespaces: () => ['default'],
    lookupCluster,
    upstreams: [`127.0.0.1:${up.port}`],
    upstreamTimeoutMs: 200,
  });
  [{ port }] = await server.start();
});
t.teardown(async () => {
  await server.stop();
  up.stop();
});

type Decoded = dnsPacket.DecodedPacket & { rcode: string; opcode: string };
const rcodeOf = (b: Buffer | undefined): string | undefined => (b ? (dnsPacket.decode(b) as Decoded).rcode : undefined);

async function stillServes(t: Test): Promise<void> {
  const a = await udpAsk(port, query('echo.default', 'A'));
  t.match(a && dnsPacket.decode(a).answers, [{ data: '198.19.128.10' }], 'still answers over UDP');
  const [b] = await tcpAsk(port, [query('echo.default', 'A')]);
  t.ok(b, 'still answers over TCP');
}

function header(id: number, flags: number, qd: number, an = 0, ns = 0, ar = 0): Buffer {
  const h = Buffer.alloc(12);
  [id, flags, qd, an, ns, ar].forEach((v, i) => h.writeUInt16BE(v, i * 2));
  return h;
}

t.test('specific malformed queries', async (t) => {
  const q = query('echo.default', 'A', { id: 0x1234 });
  const label63 = Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x61)]);
  const longName = Buffer.concat([...Array(5).fill(label63), Buffer.from([0, 0, 1, 0, 1])]);
  const cases: [string, Buffer, string | undefined][] = [
    ['empty', Buffer.alloc(0), undefined],
    ['one byte', Buffer.from([1]), undefined],
    ['only an ID', Buffer.from([0x12, 0x34]), 'FORMERR'],
    ['header cut short', q.subarray(0, 7), 'FORMERR'],
    ['question cut short', q.subarray(0, q.length - 3), 'FORMERR'],
    ['QDCOUNT 0', header(1, 0x0100, 0), 'FORMERR'],
    ['QDCOUNT 2', Buffer.concat([header(1, 0x0100, 2), q.subarray(12), q.subarray(12)]), 'FORMERR'],
    ['QDCOUNT 65535', Buffer.concat([header(1, 0x0100, 65535), q.subarray(12)]), 'FORMERR'],
    ['ARCOUNT promises more than there is', Buffer.concat([header(1, 0x0100, 1, 0, 0, 3), q.subarray(12)]), 'FORMERR'],
    ['name longer than 255 bytes', Buffer.concat([header(1, 0x0100, 1), longName]), 'FORMERR'],
    ['compression pointer to itself', Buffer.concat([header(1, 0x0100, 1), Buffer.from([0xc0, 12, 0, 1, 0, 1])]), 'FORMERR'],
    ['bad label type', Buffer.concat([header(1, 0x0100, 1), Buffer.from([0x80, 1, 0, 0, 1, 0, 1])]), 'FORMERR'],
    ['opcode STATUS', Buffer.concat([header(1, 0x1100, 1), q.subarray(12)]), 'NOTIMP'],
    ['a response, not a query', Buffer.concat([header(1, 0x8180, 1), q.subarray(12)]), undefined],
  ];
  for (const [what, bytes, want] of cases) {
    const got = await server.handle(bytes);
    t.equal(rcodeOf(got), want, what);
    if (got && bytes.length >= 2) t.equal(got.readUInt16BE(0), bytes.readUInt16BE(0), `${what}: the client's ID`);
  }
  await stillServes(t);
});

t.test(`fuzz: ${CASES} mutated and random queries (seed ${SEED})`, async (t) => {
  const rnd = mulberry32(SEED);
  const int = (n: number): number => Math.floor(rnd() * n);
  const seeds = [
    query('echo.default', 'A'), query('www.example.com', 'AAAA', { edns: 1232 }), query('_http._tcp.echo.default', 'SRV'),
    query('10.128.19.198.in-addr.arpa', 'PTR', { edns: 4096 }),
  ];
  const mutate = (): Buffer => {
    const kind = int(5);
    if (kind === 0) return Buffer.from(Array.from({ length: int(600) }, () => int(256)));
    const b = Buffer.from(seeds[int(seeds.length)]);
    if (kind === 1) for (let i = 0, n = 1 + int(8); i < n; i++) b[int(b.length)] ^= 1 << int(8);
    if (kind === 2) return b.subarray(0, int(b.length));
    if (kind === 3) b.writeUInt16BE([0, 2, 3, 255, 65535][int(5)], 4 + 2 * int(4));
    if (kind === 4) return Buffer.concat([b, Buffer.from(Array.from({ length: int(64) }, () => int(256)))]);
    return b;
  };
  const inputs = Array.from({ length: CASES }, mutate);
  let answered = 0;
  let dropped = 0;
  for (const input of inputs) {
    const out = await server.handle(input);
    if (!out) {
      dropped++;
      continue;
    }
    answered++;
    // Every answer is a response to the client's ID.
    if (out.readUInt16BE(0) !== input.readUInt16BE(0) || !(out[2] & 0x80)) t.fail(`bad answer to ${input.toString('hex')}`);
  }
  t.ok(answered > CASES / 2, `${answered} answered, ${dropped} dropped`);
  // A share of them over the wire too, UDP and TCP.
  await Promise.all(inputs.slice(0, OVER_THE_WIRE).map((b) => udpAsk(port, b, 500)));
  await tcpAsk(port, inputs.slice(0, OVER_THE_WIRE).filter((b) => b.length > 0), 1000);
  await stillServes(t);
});

t.test('TCP framing abuse', async (t) => {
  // A length prefix that promises more than ever comes, a zero-length frame, and garbage.
  for (const junk of [Buffer.from([0xff, 0xff, 1, 2, 3]), Buffer.from([0, 0]), Buffer.from('GET / HTTP/1.1\r\n\r\n')]) {
    const net = await import('node:net');
    await new Promise<void>((resolve) => {
      const c = net.connect({ port, host: '127.0.0.1' }, () => c.write(junk));
      c.on('error', () => undefined);
      c.on('data', () => undefined);
      setTimeout(() => {
        c.destroy();
        resolve();
      }, 200);
    });
  }
  await stillServes(t);
  t.ok(server.counters().errors > 0);
});
