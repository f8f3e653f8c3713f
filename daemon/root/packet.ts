/**
 * IPv4/IPv6 + TCP/UDP packets as they cross the TUN device: just enough
 * parsing to route them, in-place rewriting of addresses and ports with
 * incremental checksum updates (RFC 1624), and builders for the few packets
 * the daemon makes itself (RST, UDP replies, ICMP errors).
 * Every parser rejects what it cannot trust: a malformed packet is dropped.
 */

export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_ICMP6 = 58;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_ACK = 0x10;

export interface Packet {
  buf: Buffer; // the whole packet (a view into the read buffer)
  family: 4 | 6;
  proto: number;
  ipHeaderLen: number; // offset of the transport header
  src: Buffer; // address bytes (views into buf)
  dst: Buffer;
  srcPort: number;
  dstPort: number;
  tcpFlags: number;
  payloadOffset: number; // start of the TCP/UDP payload
}

/** Parse a packet; returns undefined for anything malformed or not IPv4/IPv6. */
export function parsePacket(buf: Buffer): Packet | undefined {
  if (buf.length < 20) return undefined;
  const version = buf[0] >> 4;
  let family: 4 | 6;
  let proto: number;
  let ihl: number;
  let src: Buffer;
  let dst: Buffer;
  if (version === 4) {
    family = 4;
    ihl = (buf[0] & 0x0f) * 4;
    const total = buf.readUInt16BE(2);
    if (ihl < 20 || total < ihl || total > buf.length) return undefined;
    if ((buf.readUInt16BE(6) & 0x3fff) !== 0) return undefined; // fragments are not carried
    buf = buf.subarray(0, total);
    proto = buf[9];
    src = buf.subarray(12, 16);
    dst = buf.subarray(16, 20);
  } else if (version === 6) {
    family = 6;
    if (buf.length < 40) return undefined;
    const payloadLen = buf.readUInt16BE(4);
    if (40 + payloadLen > buf.length) return undefined;
    buf = buf.subarray(0, 40 + payloadLen);
    proto = buf[6]; // extension headers are not carried
    ihl = 40;
    src = buf.subarray(8, 24);
    dst = buf.subarray(24, 40);
  } else {
    return undefined;
  }
  let srcPort = 0;
  let dstPort = 0;
  let tcpFlags = 0;
  let payloadOffset = ihl;
  if (proto === PROTO_TCP) {
    if (buf.length < ihl + 20) return undefined;
    const doff = (buf[ihl + 12] >> 4) * 4;
    if (doff < 20 || buf.length < ihl + doff) return undefined;
    srcPort = buf.readUInt16BE(ihl);
    dstPort = buf.readUInt16BE(ihl + 2);
    tcpFlags = buf[ihl + 13];
    payloadOffset = ihl + doff;
  } else if (proto === PROTO_UDP) {
    if (buf.length < ihl + 8) return undefined;
    const ulen = buf.readUInt16BE(ihl + 4);
    if (ulen < 8 || ihl + ulen > buf.length) return undefined;
    srcPort = buf.readUInt16BE(ihl);
    dstPort = buf.readUInt16BE(ihl + 2);
    payloadOffset = ihl + 8;
    buf = buf.subarray(0, ihl + ulen);
  }
  return { buf, family, proto, ipHeaderLen: ihl, src, dst, srcPort, dstPort, tcpFlags, payloadOffset };
}

// --- checksums ---------------------------------------------------------------

function sum16(buf: Buffer, start: number, end: number, acc = 0): number {
  let i = start;
  for (; i + 1 < end; i += 2) acc += (buf[i] << 8) | buf[i + 1];
  if (i < end) acc += buf[i] << 8;
  return acc;
}

function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return acc;
}

/** RFC 1624: HC' = ~(~HC + ~m + m'), for a 16-bit field that changed from m to m'. */
function adjust(csum: number, oldWord: number, newWord: number): number {
  const acc = (~csum & 0xffff) + (~oldWord & 0xffff) + newWord;
  return ~fold(acc) & 0xffff;
}

/** Adjust a checksum for bytes that change from `oldBytes` to `newBytes` (even length, 16-bit aligned). */
function adjustBytes(csum: number, oldBytes: Buffer, newBytes: Buffer): number {
  for (let i = 0; i < oldBytes.length; i += 2) {
    csum = adjust(csum, oldBytes.readUInt16BE(i), newBytes.readUInt16BE(i));
  }
  return csum;
}

export function ipv4HeaderChecksum(buf: Buffer, ihl: number): number {
  const saved = buf.readUInt16BE(10);
  buf.writeUInt16BE(0, 10);
  const c = ~fold(sum16(buf, 0, ihl)) & 0xffff;
  buf.writeUInt16BE(saved, 10);
  return c;
}

/** Full transport checksum with the pseudo-header (used by builders). */
export function transportChecksum(p: { buf: Buffer; family: 4 | 6; proto: number; ipHeaderLen: number; src: Buffer; dst: Buffer }): number {
  const len = p.buf.length - p.ipHeaderLen;
  let acc = sum16(p.src, 0, p.src.length) + sum16(p.dst, 0, p.dst.length) + p.proto + len;
  if (p.family === 6) acc += 0; // the v6 pseudo-header has the same fields, length as 32 bits
  acc = sum16(p.buf, p.ipHeaderLen, p.buf.length, acc);
  const c = ~fold(acc) & 0xffff;
  return p.proto === PROTO_UDP && c === 0 ? 0xffff : c;
}

function checksumOffset(p: Packet): number | undefined {
  if (p.proto === PROTO_TCP) return p.ipHeaderLen + 16;
  if (p.proto === PROTO_UDP) return p.ipHeaderLen + 6;
  return undefined;
}

/**
 * Rewrite source/destination address and port in place, updating the IPv4
 * header checksum and the TCP/UDP checksum incrementally.
 */
export function rewrite(p: Packet, src: Buffer, srcPort: number, dst: Buffer, dstPort: number): void {
  const buf = p.buf;
  const co = checksumOffset(p);
  let csum = co !== undefined ? buf.readUInt16BE(co) : 0;
  const udpNoChecksum = p.proto === PROTO_UDP && csum === 0 && p.family === 4;
  if (co !== undefined && !udpNoChecksum) {
    csum = adjustBytes(csum, p.src, src);
    csum = adjustBytes(csum, p.dst, dst);
    csum = adjust(csum, p.srcPort, srcPort);
    csum = adjust(csum, p.dstPort, dstPort);
    if (p.proto === PROTO_UDP && csum === 0) csum = 0xffff;
  }
  if (p.family === 4) {
    let h = buf.readUInt16BE(10);
    h = adjustBytes(h, p.src, src);
    h = adjustBytes(h, p.dst, dst);
    src.copy(p.src);
    dst.copy(p.dst);
    buf.writeUInt16BE(h, 10);
  } else {
    src.copy(p.src);
    dst.copy(p.dst);
  }
  if (co !== undefined) {
    buf.writeUInt16BE(srcPort, p.ipHeaderLen);
    buf.writeUInt16BE(dstPort, p.ipHeaderLen + 2);
    if (!udpNoChecksum) buf.writeUInt16BE(csum, co);
    p.srcPort = srcPort;
    p.dstPort = dstPort;
  }
}

// --- builders ------------------------------------------------------------------

function ipHeader(family: 4 | 6, proto: number, src: Buffer, dst: Buffer, payloadLen: number): Buffer {
  if (family === 4) {
    const h = Buffer.alloc(20);
    h[0] = 0x45;
    h.writeUInt16BE(20 + payloadLen, 2);
    h.writeUInt16BE(0x4000, 6); // don't fragment
    h[8] = 64;
    h[9] = proto;
    src.copy(h, 12);
    dst.copy(h, 16);
    h.writeUInt16BE(ipv4HeaderChecksum(h, 20), 10);
    return h;
  }
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(payloadLen, 4);
  h[6] = proto;
  h[7] = 64;
  src.copy(h, 8);
  dst.copy(h, 24);
  return h;
}

function finish(family: 4 | 6, proto: number, src: Buffer, dst: Buffer, transport: Buffer, csumAt: number): Buffer {
  const ip = ipHeader(family, proto, src, dst, transport.length);
  const buf = Buffer.concat([ip, transport]);
  const p = { buf, family, proto, ipHeaderLen: ip.length, src: buf.subarray(family === 4 ? 12 : 8, family === 4 ? 16 : 24), dst: buf.subarray(family === 4 ? 16 : 24, family === 4 ? 20 : 40) };
  buf.writeUInt16BE(transportChecksum(p), ip.length + csumAt);
  return buf;
}

/**
 * The RST that RFC 793 prescribes for a segment nobody will accept: for a SYN
 * this is "connection refused"; for a segment of an unknown connection it
 * tells the sender that the connection is gone.
 */
export function buildRst(seg: Packet): Buffer {
  const t = Buffer.alloc(20);
  t.writeUInt16BE(seg.dstPort, 0);
  t.writeUInt16BE(seg.srcPort, 2);
  t[12] = 5 << 4;
  if (seg.tcpFlags & TCP_ACK) {
    t.writeUInt32BE(seg.buf.readUInt32BE(seg.ipHeaderLen + 8), 4);
    t[13] = TCP_RST;
  } else {
    const seq = seg.buf.readUInt32BE(seg.ipHeaderLen + 4);
    const len = seg.buf.length - seg.payloadOffset + (seg.tcpFlags & TCP_SYN ? 1 : 0) + (seg.tcpFlags & TCP_FIN ? 1 : 0);
    t.writeUInt32BE((seq + len) >>> 0, 8);
    t[13] = TCP_RST | TCP_ACK;
  }
  return finish(seg.family, PROTO_TCP, Buffer.from(seg.dst), Buffer.from(seg.src), t, 16);
}

export function buildUdp(family: 4 | 6, src: Buffer, srcPort: number, dst: Buffer, dstPort: number, payload: Buffer): Buffer {
  const t = Buffer.alloc(8 + payload.length);
  t.writeUInt16BE(srcPort, 0);
  t.writeUInt16BE(dstPort, 2);
  t.writeUInt16BE(8 + payload.length, 4);
  payload.copy(t, 8);
  return finish(family, PROTO_UDP, src, dst, t, 6);
}

/**
 * An ICMP "destination unreachable" (host unreachable) about `orig`, sent
 * from the destination it named: the caller sees EHOSTUNREACH at once.
 */
export function buildHostUnreachable(orig: Packet): Buffer {
  const quoted = orig.buf.subarray(0, Math.min(orig.buf.length, orig.family === 4 ? orig.ipHeaderLen + 8 : 1232));
  const t = Buffer.alloc(8 + quoted.length);
  if (orig.family === 4) {
    t[0] = 3; // destination unreachable
    t[1] = 1; // host unreachable
  } else {
    t[0] = 1; // destination unreachable
    t[1] = 3; // address unreachable
  }
  quoted.copy(t, 8);
  const proto = orig.family === 4 ? PROTO_ICMP : PROTO_ICMP6;
  const src = Buffer.from(orig.dst);
  const dst = Buffer.from(orig.src);
  const ip = ipHeader(orig.family, proto, src, dst, t.length);
  const buf = Buffer.concat([ip, t]);
  if (orig.family === 4) {
    buf.writeUInt16BE(~fold(sum16(buf, ip.length, buf.length)) & 0xffff, ip.length + 2);
  } else {
    const p = { buf, family: 6 as const, proto, ipHeaderLen: 40, src: buf.subarray(8, 24), dst: buf.subarray(24, 40) };
    buf.writeUInt16BE(transportChecksum(p), 42);
  }
  return buf;
}

/** An ICMP/ICMPv6 echo reply for an echo request, or undefined if it is not one. */
export function buildEchoReply(p: Packet): Buffer | undefined {
  const isV4Echo = p.family === 4 && p.proto === PROTO_ICMP && p.buf[p.ipHeaderLen] === 8;
  const isV6Echo = p.family === 6 && p.proto === PROTO_ICMP6 && p.buf[p.ipHeaderLen] === 128;
  // An echo header is 8 bytes (type, code, checksum, id, seq): a shorter one is malformed.
  if ((!isV4Echo && !isV6Echo) || p.buf.length - p.ipHeaderLen < 8) return undefined;
  const body = Buffer.from(p.buf.subarray(p.ipHeaderLen));
  body[0] = isV4Echo ? 0 : 129;
  body.writeUInt16BE(0, 2);
  const ip = ipHeader(p.family, p.proto, Buffer.from(p.dst), Buffer.from(p.src), body.length);
  const buf = Buffer.concat([ip, body]);
  if (p.family === 4) buf.writeUInt16BE(~fold(sum16(buf, ip.length, buf.length)) & 0xffff, ip.length + 2);
  else buf.writeUInt16BE(transportChecksum({ buf, family: 6, proto: p.proto, ipHeaderLen: 40, src: buf.subarray(8, 24), dst: buf.subarray(24, 40) }), 42);
  return buf;
}
