import t from 'tap';
import fc from 'fast-check';
import { ipFromBytes, ipToBytes } from '../../src/core/address';
import {
  PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_SYN, buildEchoReply, buildHostUnreachable, buildRst,
  buildUdp, parsePacket, rewrite, transportChecksum,
} from '../../daemon/root/packet';
import { TcpNat } from '../../daemon/root/tcp-nat';
import { UdpRelay } from '../../daemon/root/udp-relay';
import { tcpSegment } from '../helpers/packets';
import { mutated, params, report, RUNS } from './fuzz';

// IP/TCP/UDP packets as the TUN device hands them over: whatever the bytes,
// parsePacket drops or parses (never throws), what it parses is internally
// consistent, and what the daemon writes back is itself a well-formed packet.

const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join('.'));
const v6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(':'));
const port = fc.integer({ min: 1, max: 65535 });
const payload = fc.uint8Array({ maxLength: 200 }).map((u) => Buffer.from(u));

/** A well-formed TCP or UDP packet of either family. */
const wellFormed = fc
  .tuple(fc.boolean(), fc.boolean(), v4, v4, v6, v6, port, port, fc.nat(0xff), payload)
  .map(([six, tcp, a4, b4, a6, b6, sp, dp, flags, data]) => {
    const [src, dst] = six ? [a6, b6] : [a4, b4];
    const family = six ? 6 : 4;
    return tcp ? tcpSegment(family, src, sp, dst, dp, flags, data) : buildUdp(family, ipToBytes(src), sp, ipToBytes(dst), dp, data);
  });

function checksumsValid(buf: Buffer): boolean {
  const p = parsePacket(Buffer.from(buf));
  if (!p) return false;
  const off = p.ipHeaderLen + (p.proto === PROTO_TCP ? 16 : 6);
  const stored = p.buf.readUInt16BE(off);
  p.buf.writeUInt16BE(0, off);
  if (p.family === 4) {
    let acc = 0;
    for (let i = 0; i < p.ipHeaderLen; i += 2) acc += p.buf.readUInt16BE(i);
    while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
    if ((acc & 0xffff) !== 0xffff) return false;
  }
  return transportChecksum(p) === stored;
}

const SEEDS = [
  tcpSegment(4, '169.254.83.1', 40000, '198.19.128.10', 80, TCP_SYN),
  tcpSegment(4, '169.254.83.1', 40000, '198.19.128.10', 80, TCP_ACK | TCP_FIN, Buffer.from('GET / HTTP/1.1\r\n\r\n')),
  tcpSegment(6, 'fd72:6462:6700::1', 40000, '2001:db8:96::10', 80, TCP_ACK, Buffer.from('hello')),
  buildUdp(4, ipToBytes('169.254.83.1'), 5353, ipToBytes('198.19.128.10'), 53, Buffer.from('query')),
  buildUdp(6, ipToBytes('fd72:6462:6700::1'), 5353, ipToBytes('2001:db8:96::10'), 53, Buffer.from('query')),
];
/** An IPv4 packet around `body` (header checksum left 0: the TUN side does not check it). */
function ipv4(proto: number, body: Buffer): Buffer {
  const h = Buffer.from('450000000000400040000000a9fe5301c613800a', 'hex');
  h.writeUInt16BE(20 + body.length, 2);
  h[9] = proto;
  return Buffer.concat([h, body]);
}
// An ICMP echo request, and ICMP messages whose body ends inside the echo header (buildEchoReply threw on them).
const ECHO = ipv4(PROTO_ICMP, Buffer.from('0800f7ff00010001' + '00'.repeat(8), 'hex'));
const SHORT_ICMP = ipv4(PROTO_ICMP, Buffer.from([8]));
const SHORT_ICMP6 = Buffer.concat([Buffer.from('6000000000013a40', 'hex'), Buffer.alloc(32), Buffer.from([128])]);
const REGRESSIONS = [ECHO, SHORT_ICMP, SHORT_ICMP6, ipv4(PROTO_ICMP, Buffer.from([8, 0, 0]))];

const packets = mutated([...SEEDS, ...REGRESSIONS], 120);

t.test('parsePacket never throws, and what it parses is consistent', async (t) => {
  let parsed = 0;
  fc.assert(
    fc.property(packets, (buf) => {
      const p = parsePacket(Buffer.from(buf));
      if (!p) return true;
      parsed++;
      return (
        (p.family === 4 ? p.src.length === 4 : p.src.length === 16) &&
        p.dst.length === p.src.length &&
        p.ipHeaderLen <= p.payloadOffset &&
        p.payloadOffset <= p.buf.length &&
        p.buf.length <= buf.length &&
        (p.proto !== PROTO_UDP || p.buf.length === p.ipHeaderLen + p.buf.readUInt16BE(p.ipHeaderLen + 4))
      );
    }),
    params(RUNS * 5),
  );
  t.ok(parsed > 0, report('packets', { cases: RUNS * 5, parsed }));
});

t.test('the builders never throw on a parsed packet, and build well-formed ones', async (t) => {
  fc.assert(
    fc.property(packets, (buf) => {
      const p = parsePacket(Buffer.from(buf));
      if (!p) return true;
      const out: Buffer[] = [buildHostUnreachable(p)];
      if (p.proto === PROTO_TCP) out.push(buildRst(p));
      const echo = buildEchoReply(p);
      if (echo) out.push(echo);
      return out.every((o) => parsePacket(o) !== undefined);
    }),
    params(RUNS * 5),
  );
  t.pass('no throw');
});

t.test('an ICMP message too short for an echo header gets no echo reply (regression)', async (t) => {
  t.ok(buildEchoReply(parsePacket(ECHO)!), 'a real echo request is answered');
  for (const p of [SHORT_ICMP, SHORT_ICMP6, REGRESSIONS[3]]) t.equal(buildEchoReply(parsePacket(p)!), undefined, `${p.length}-byte packet: dropped, not thrown on`);
});

t.test('rewrite keeps every checksum valid (random addresses, ports and payloads)', async (t) => {
  fc.assert(
    fc.property(wellFormed, fc.boolean(), v4, v4, v6, v6, port, port, (buf, _x, a4, b4, a6, b6, sp, dp) => {
      if (!checksumsValid(buf)) return false;
      const p = parsePacket(buf)!;
      const [src, dst] = p.family === 4 ? [a4, b4] : [a6, b6];
      rewrite(p, ipToBytes(src), sp, ipToBytes(dst), dp);
      const q = parsePacket(p.buf)!;
      return checksumsValid(p.buf) && q.srcPort === sp && q.dstPort === dp && ipFromBytes(q.dst) === ipFromBytes(ipToBytes(dst));
    }),
    params(),
  );
  t.pass('checksums hold');
});

t.test('the TCP NAT and the UDP relay take any parsed packet without throwing; all they write back is well-formed', async (t) => {
  const written: Buffer[] = [];
  const nat = new TcpNat({
    listen4: '169.254.83.1',
    listen6: 'fd72:6462:6700::1',
    fakes4: ['169.254.83.2'],
    fakes6: ['fd72:6462:6700::2'],
    listenPort: 1,
    write: (p) => (written.push(p), true),
    dialer: { dial: () => Promise.reject(new Error('no dialling in this test')) },
  });
  const relay = new UdpRelay({ dial: () => Promise.reject(new Error('no dialling')) }, (p) => (written.push(p), true));
  t.teardown(() => {
    relay.close();
    nat.close();
  });
  let carried = 0;
  fc.assert(
    fc.property(packets, (buf) => {
      const p = parsePacket(Buffer.from(buf));
      if (!p) return true;
      carried++;
      if (p.proto === PROTO_TCP) nat.onPacket(p);
      else if (p.proto === PROTO_UDP) relay.onPacket(p);
      return true;
    }),
    params(RUNS * 2),
  );
  await new Promise((r) => setTimeout(r, 50)); // the refused dials answer with RSTs and ICMP
  const bad = written.filter((w) => parsePacket(w) === undefined);
  t.equal(bad.length, 0, `${written.length} packets written back, all well-formed`);
  t.ok(carried > 0, report('TCP NAT / UDP relay', { cases: RUNS * 2, carried, written: written.length }));
});
