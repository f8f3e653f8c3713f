import t from 'tap';
import { ipToBytes } from '../../src/core/address';
import {
  PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN, buildHostUnreachable, buildRst, buildUdp, parsePacket, rewrite, transportChecksum,
} from '../../daemon/root/packet';
import { tcpSegment } from '../helpers/packets';
import { TcpNat } from '../../daemon/root/tcp-nat';
import { UdpRelay } from '../../daemon/root/udp-relay';

function checksumsValid(buf: Buffer): boolean {
  const p = parsePacket(Buffer.from(buf))!;
  const off = p.proto === PROTO_TCP ? 16 : 6;
  const stored = p.buf.readUInt16BE(p.ipHeaderLen + off);
  p.buf.writeUInt16BE(0, p.ipHeaderLen + off);
  const fresh = transportChecksum(p);
  if (p.family === 4) {
    let acc = 0;
    for (let i = 0; i < p.ipHeaderLen; i += 2) acc += p.buf.readUInt16BE(i);
    while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
    if ((acc & 0xffff) !== 0xffff) return false;
  }
  return fresh === stored;
}

t.test('rewrite keeps IPv4 and IPv6 checksums correct', async (t) => {
  for (const [family, a, b, c, d] of [
    [4, '169.254.83.1', '198.19.128.10', '169.254.83.7', '169.254.83.1'],
    [6, 'fd72:6462:6700::1', '2001:db8:96::10', 'fd72:6462:6700::9', 'fd72:6462:6700::1'],
  ] as const) {
    const seg = tcpSegment(family, a, 40000, b, 80, TCP_ACK, Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    t.ok(checksumsValid(seg), `built v${family} segment is valid`);
    const p = parsePacket(seg)!;
    rewrite(p, ipToBytes(c), 1025, ipToBytes(d), 1);
    t.ok(checksumsValid(p.buf), `v${family} checksums valid after rewrite`);
    const q = parsePacket(p.buf)!;
    t.equal(q.srcPort, 1025);
    t.equal(q.dstPort, 1);
  }
  const udp = buildUdp(4, ipToBytes('198.19.128.10'), 7, ipToBytes('169.254.83.1'), 5555, Buffer.from('echo'));
  t.ok(checksumsValid(udp), 'built UDP is valid');
});

t.test('RST answers follow RFC 793', async (t) => {
  const syn = parsePacket(tcpSegment(4, '169.254.83.1', 40000, '198.19.128.10', 81, TCP_SYN))!;
  const rst = parsePacket(buildRst(syn))!;
  t.equal(rst.tcpFlags, TCP_RST | TCP_ACK);
  t.equal(rst.buf.readUInt32BE(rst.ipHeaderLen + 8), 1001, 'acks the SYN');
  t.equal(rst.srcPort, 81);
  t.ok(checksumsValid(rst.buf));
  const stray = parsePacket(tcpSegment(4, '169.254.83.1', 40000, '198.19.128.10', 80, TCP_ACK))!;
  const r2 = parsePacket(buildRst(stray))!;
  t.equal(r2.tcpFlags, TCP_RST);
  t.equal(r2.buf.readUInt32BE(r2.ipHeaderLen + 4), 5000, 'seq taken from the segment ACK');
  const icmp = buildHostUnreachable(syn);
  t.equal(icmp[9], 1, 'an ICMP packet');
  t.equal(icmp[20], 3, 'destination unreachable');
});

/** xorshift32: a fixed-seed generator, so a failing case can be replayed. */
function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

t.test('malformed packets are dropped, never thrown on (fuzz, fixed seed)', async (t) => {
  const next = rng(0x5eed);
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
  const seeds = [
    tcpSegment(4, '169.254.83.1', 40000, '198.19.128.10', 80, TCP_SYN),
    tcpSegment(6, 'fd72:6462:6700::1', 40000, '2001:db8:96::10', 80, TCP_ACK, Buffer.from('hello')),
    buildUdp(4, ipToBytes('169.254.83.1'), 5353, ipToBytes('198.19.128.10'), 53, Buffer.from('query')),
  ];
  let parsed = 0;
  let rejected = 0;
  const CASES = 20_000;
  for (let i = 0; i < CASES; i++) {
    let buf: Buffer;
    if (i % 4 === 0) {
      buf = Buffer.alloc(next() % 120);
      for (let j = 0; j < buf.length; j++) buf[j] = next() & 0xff;
    } else {
      buf = Buffer.from(seeds[i % seeds.length]);
      const flips = 1 + (next() % 4);
      for (let f = 0; f < flips; f++) buf[next() % buf.length] = next() & 0xff;
      if (next() % 5 === 0) buf = buf.subarray(0, next() % buf.length);
    }
    const p = parsePacket(buf);
    if (!p) {
      rejected++;
      continue;
    }
    parsed++;
    if (p.proto === PROTO_TCP) nat.onPacket(p);
    else if (p.proto === PROTO_UDP) relay.onPacket(p);
  }
  t.ok(rejected > CASES / 10, `malformed ones rejected (${rejected})`);
  t.ok(parsed > 0, `well-formed mutations still handled (${parsed})`);
  t.ok(written.every((w) => parsePacket(w) !== undefined), `all ${written.length} packets the daemon wrote back are well-formed`);
  relay.close();
  nat.close();
});
