import t from 'tap';
import { ipToBytes } from '../../src/core/address';
import * as dnsPacket from 'dns-packet';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildUdp, TCP_ACK, TCP_SYN } from '../../daemon/root/packet';
import { encodeAddress } from '../../daemon/user/socks5';
import { tcpSegment } from '../helpers/packets';
import { CLUSTER, Sandbox } from '../helpers/sandbox';
import { conversation, grpcMessage } from './h2-bytes';
import { mutated, report, runs, sample } from './fuzz';

// Malformed input into the real processes, while one well-formed client keeps
// working: the standalone manager's data port (HTTP/2 frames, raw-flow and
// half-close lines) and gRPC port, the root daemon's DNS server and TUN
// device, and the user daemon's SOCKS5 server. Afterwards every process is
// the one that started, and every request of the good client succeeded.

const BLASTER = resolve(__dirname, 'blaster.js');
const TUN_DNS = '169.254.83.1';
const SOCKS = '127.0.0.1:1080';

let sb: Sandbox;
let work: string;
const counts: Record<string, number> = {};

t.before(async () => {
  sb = await Sandbox.create({ laptops: 2 });
  work = mkdtempSync(join(tmpdir(), 'rdbg-fuzz-'));
  const a = await sb.laptops[0].rdbg(['connect', '--manager', sb.laptops[0].managerAddress]);
  if (a.code !== 0) throw new Error(`connect failed: ${a.stderr}`);
  const b = await sb.laptops[1].rdbg(['connect', '--manager', sb.laptops[1].managerAddress, '--socks', SOCKS]);
  if (b.code !== 0) throw new Error(`connect --socks failed: ${b.stderr}`);
});
t.teardown(() => {
  sb?.destroy();
  if (work) rmSync(work, { recursive: true, force: true });
});

type Blast = { sent: number; closedByPeer: number; reset: number; timedOut: number; answered: number; refused: number; connectFailed: number };

async function blast(laptop: number, job: { mode: 'tcp' | 'udp'; host: string; port: number; payloads: Buffer[]; waitMs?: number; refusal?: string }): Promise<Blast> {
  const file = join(work, `job-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify({ ...job, payloads: job.payloads.map((p) => p.toString('hex')) }));
  const r = await sb.laptops[laptop].ns.run('node', [BLASTER, file], 300_000);
  if (r.code !== 0) throw new Error(`blaster failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Blast;
}

/** Runs `client` over and over until `during` settles; every run must succeed. */
async function alongside(client: () => Promise<boolean>, during: Promise<unknown>): Promise<{ ok: number; failed: number }> {
  let over = false;
  const n = { ok: 0, failed: 0 };
  const loop = (async () => {
    while (!over) {
      if (await client()) n.ok++;
      else n.failed++;
    }
  })();
  await during.finally(() => (over = true));
  await loop;
  return n;
}

const curlTun = async (): Promise<boolean> => (await sb.laptops[0].ns.run('curl', ['-sS', '--max-time', '10', 'http://echo.default/'], 15_000)).stdout === `hello from ${CLUSTER.echoIp}\n`;
const digTun = async (): Promise<boolean> =>
  (await sb.laptops[0].ns.run('dig', ['+time=3', '+tries=1', '+short', `@${TUN_DNS}`, 'echo.default.svc.cluster.local', 'A'], 10_000)).stdout.trim() === CLUSTER.echoIp;
const curlSocks = async (): Promise<boolean> =>
  (await sb.laptops[1].ns.run('curl', ['-sS', '--max-time', '10', '--socks5-hostname', SOCKS, 'http://echo.default/'], 15_000)).stdout.startsWith('hello from ');

async function pids(): Promise<{ manager: number | null; root: number; user: number }> {
  const st = JSON.parse((await sb.laptops[0].rdbg(['status', '-o', 'json'])).stdout);
  const su = JSON.parse((await sb.laptops[1].rdbg(['status', '-o', 'json'])).stdout);
  return { manager: sb.manager!.exitCode, root: st.root?.pid, user: su.pid ?? su.state };
}

let before: Awaited<ReturnType<typeof pids>>;
t.before(async () => {
  before = await pids();
});

const dataPort = (): { host: string; port: number } => ({ host: '198.18.1.1', port: CLUSTER.managerPort + 1 });

t.test("the manager's data port: broken HTTP/2 flow requests, raw-flow lines and half-close lines", async (t) => {
  const flowHeaders: [string, string][] = [
    [':method', 'POST'], [':scheme', 'http'], [':authority', 'm'], [':path', '/rdbg.v1/flow'],
    ['rdbg-session', 'nosuchsession'], ['rdbg-protocol', 'udp'], ['rdbg-host', CLUSTER.echoIp], ['rdbg-port', '7'],
  ];
  const h2 = sample(mutated([
    conversation(flowHeaders, Buffer.from([0, 4, 1, 2, 3, 4]), false),
    conversation(flowHeaders.map(([k, v]) => [k, k === ':path' ? '/rdbg.v1/dns' : v]), Buffer.alloc(0)),
    conversation(flowHeaders.map(([k, v]) => [k, k === ':path' ? '/rdbg.v1/half-close' : v]), Buffer.from('1 10')),
  ], 200), runs(300), 1);
  const raw = sample(mutated([
    Buffer.from(`RDBG-FLOW/1 nosuchsession tcp ${CLUSTER.echoIp} 80 10.0.0.1:5000\n`),
    Buffer.from('RDBG-HALFCLOSE/1 nosuchsession\n1 10\n2 20\n'),
    Buffer.from(`RDBG-FLOW/1 s tcp echo.default 65536 -\nGET / HTTP/1.1\r\n\r\n`),
  ], 200).filter((b) => b[0] === 0x52), runs(300), 2);
  const run = Promise.all([
    blast(0, { mode: 'tcp', ...dataPort(), payloads: h2 }),
    blast(0, { mode: 'tcp', ...dataPort(), payloads: raw, refusal: '^(FAILED|DENIED|NAME_ERROR|REFUSED|UNREACHABLE) ' }),
  ]);
  const good = await alongside(curlTun, run);
  const [h, r] = await run;
  t.equal(good.failed, 0, `curl through the TUN while the data port was fuzzed: ${good.ok} ok`);
  t.ok(good.ok > 0);
  // Mutations that left the conversation well-formed keep their stream open: those time out here, which is fine.
  t.ok(h.answered > h.sent / 2, `the manager answered most broken HTTP/2 connections (GOAWAY, or a refused flow): ${JSON.stringify(h)}`);
  t.ok(r.refused > 0, `raw-flow lines refused with a dial code (${JSON.stringify(r)})`);
  counts['data port HTTP/2'] = h.sent;
  counts['data port raw lines'] = r.sent;
});

t.test("the manager's gRPC port: mutated gRPC messages to every kind of call", async (t) => {
  // ArriveRequest-like bytes: strings and varints in the first fields; unknown fields are skipped by protobuf.
  const msg = Buffer.from('0a0a646576406c6170746f7012036465761803220474657374', 'hex');
  const call = (method: string, body: Buffer): Buffer =>
    conversation([[':method', 'POST'], [':scheme', 'http'], [':authority', 'm'], [':path', `/rdbg.v1.Manager/${method}`], ['content-type', 'application/grpc'], ['te', 'trailers']], body);
  const seeds = ['Arrive', 'Heartbeat', 'LookupDNS', 'CreateIntercept', 'WatchDiversions', 'AgentArrive', 'WatchIntercepts'].map((m) => call(m, grpcMessage(msg)));
  const payloads = sample(mutated(seeds, 200), runs(300), 3);
  const run = blast(0, { mode: 'tcp', host: '198.18.1.1', port: CLUSTER.managerPort, payloads });
  const good = await alongside(curlTun, run);
  const g = await run;
  t.equal(good.failed, 0, `curl through the TUN while gRPC was fuzzed: ${good.ok} ok`);
  t.ok(g.sent > 0, JSON.stringify(g));
  counts['gRPC port'] = g.sent;
});

t.test("the root daemon's DNS server: mutated queries over UDP and TCP", async (t) => {
  const q = (name: string, type: dnsPacket.RecordType, edns = false): Buffer =>
    dnsPacket.encode({ type: 'query', id: 0x4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }], additionals: edns ? [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer] : [] });
  const seeds = [q('echo.default.svc.cluster.local', 'A'), q('echo.default', 'AAAA', true), q('_http._tcp.echo.default.svc.cluster.local', 'SRV'), q('10.128.19.198.in-addr.arpa', 'PTR'), q('www.example.test', 'A', true)];
  const udp = sample(mutated(seeds, 600), runs(600), 4);
  const tcp = sample(mutated(seeds, 300), runs(150), 5).map((m) => {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(m.length);
    return Buffer.concat([len, m]); // a length prefix that may lie, since m was mutated after it was counted
  });
  const run = Promise.all([blast(0, { mode: 'udp', host: TUN_DNS, port: 53, payloads: udp }), blast(0, { mode: 'tcp', host: TUN_DNS, port: 53, payloads: tcp, waitMs: 300 })]);
  const good = await alongside(digTun, run);
  const [u, c] = await run;
  t.equal(good.failed, 0, `dig while DNS was fuzzed: ${good.ok} ok`);
  t.ok(u.answered > u.sent / 3, `most datagrams answered (FORMERR or an answer): ${JSON.stringify(u)}`);
  counts['DNS over UDP'] = u.sent;
  counts['DNS over TCP'] = c.sent;
});

t.test('the TUN device: mutated IPv4 TCP and UDP packets to a cluster address', async (t) => {
  const dst = ipToBytes(CLUSTER.echoIp);
  const src = ipToBytes('198.18.1.2');
  const seeds = [
    tcpSegment(4, '198.18.1.2', 40000, CLUSTER.echoIp, 80, TCP_SYN),
    tcpSegment(4, '198.18.1.2', 40001, CLUSTER.echoIp, 80, TCP_ACK, Buffer.from('GET / HTTP/1.1\r\n\r\n')),
    buildUdp(4, src, 5353, dst, 53, Buffer.from('query')),
    buildUdp(4, src, 5353, dst, 7, Buffer.from('echo')),
  ];
  // The kernel fixes the IP header's length and checksum (IP_HDRINCL); what reaches the TUN is the transport's mess.
  const packets = sample(mutated(seeds, 100), runs(1500), 6).filter((p) => p.length >= 20).map((p) => {
    p[0] = 0x45;
    dst.copy(p, 16);
    return p.toString('hex');
  });
  const file = join(work, 'packets.txt');
  writeFileSync(file, packets.join('\n') + '\n');
  const py = `import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_RAW)
n=0
for line in open(sys.argv[1]):
  try:
    s.sendto(bytes.fromhex(line.strip()),(sys.argv[2],0)); n+=1
  except OSError: pass
print(n)`;
  const run = sb.laptops[0].ns.run('python3', ['-c', py, file, CLUSTER.echoIp], 120_000);
  const good = await alongside(curlTun, run);
  const r = await run;
  t.equal(r.code, 0, r.stderr);
  t.equal(good.failed, 0, `curl through the TUN while packets were fuzzed: ${good.ok} ok`);
  counts['TUN packets'] = Number(r.stdout.trim());
});

t.test("the user daemon's SOCKS5 server: mutated greetings and requests", async (t) => {
  const greet = Buffer.from([5, 1, 0]);
  const seeds = [
    Buffer.concat([greet, Buffer.from([5, 1, 0]), encodeAddress('echo.default', 80), Buffer.from('GET / HTTP/1.1\r\n\r\n')]),
    Buffer.concat([greet, Buffer.from([5, 1, 0]), encodeAddress(CLUSTER.echoIp, 7), Buffer.from('ping')]),
    Buffer.concat([greet, Buffer.from([5, 3, 0]), encodeAddress('0.0.0.0', 0)]),
    Buffer.concat([Buffer.from([5, 2, 0, 2]), Buffer.from([5, 1, 0]), encodeAddress('2001:db8:96::10', 80)]),
  ];
  const payloads = sample(mutated(seeds, 100), runs(300), 7);
  const run = blast(1, { mode: 'tcp', host: '127.0.0.1', port: 1080, payloads, waitMs: 400 });
  const good = await alongside(curlSocks, run);
  const s = await run;
  t.equal(good.failed, 0, `curl through SOCKS5 while it was fuzzed: ${good.ok} ok`);
  counts['SOCKS5'] = s.sent;
});

t.test('every process is the one that started, and still serves', async (t) => {
  const after = await pids();
  t.equal(after.manager, null, 'the manager is running');
  t.equal(after.root, before.root, 'the same root daemon');
  t.equal(after.user, before.user, 'the same user daemon (SOCKS laptop)');
  t.ok(await curlTun(), 'TUN + DNS + data port');
  t.ok(await curlSocks(), 'SOCKS5');
  t.pass(report('live laptop and manager', counts));
});
