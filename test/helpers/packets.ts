import { ipToBytes } from '../../src/core/address';
import { PROTO_TCP, TCP_ACK, buildUdp, parsePacket, transportChecksum } from '../../daemon/root/packet';

/** A TCP segment built the slow, obvious way, to check the fast code against. */
export function tcpSegment(family: 4 | 6, src: string, sport: number, dst: string, dport: number, flags: number, payload = Buffer.alloc(0)): Buffer {
  const t = Buffer.alloc(20 + payload.length);
  t.writeUInt16BE(sport, 0);
  t.writeUInt16BE(dport, 2);
  t.writeUInt32BE(1000, 4);
  t.writeUInt32BE(flags & TCP_ACK ? 5000 : 0, 8);
  t[12] = 5 << 4;
  t[13] = flags;
  t.writeUInt16BE(65535, 14);
  payload.copy(t, 20);
  // buildUdp gives us a correct IP header for the family; swap in TCP.
  const ip = buildUdp(family, ipToBytes(src), 1, ipToBytes(dst), 1, Buffer.alloc(0)).subarray(0, family === 4 ? 20 : 40);
  const buf = Buffer.concat([ip, t]);
  if (family === 4) {
    buf[9] = PROTO_TCP;
    buf.writeUInt16BE(buf.length, 2);
    buf.writeUInt16BE(0, 10);
    let acc = 0;
    for (let i = 0; i < 20; i += 2) acc += buf.readUInt16BE(i);
    while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
    buf.writeUInt16BE(~acc & 0xffff, 10);
  } else {
    buf[6] = PROTO_TCP;
    buf.writeUInt16BE(t.length, 4);
  }
  const p = parsePacket(buf)!;
  buf.writeUInt16BE(transportChecksum(p), p.ipHeaderLen + 16);
  return buf;
}

