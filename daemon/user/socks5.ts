import { isIP } from 'node:net';
import { ipFromBytes, ipToBytes } from '../../src/core/address';

/** SOCKS5 (RFC 1928) wire format: parsing what clients send, building what we answer. */

export const SOCKS_VERSION = 5;
export const CMD = { CONNECT: 1, BIND: 2, UDP_ASSOCIATE: 3 } as const;
export const ATYP = { IPV4: 1, DOMAIN: 3, IPV6: 4 } as const;
export const REPLY = {
  SUCCEEDED: 0,
  GENERAL_FAILURE: 1,
  NOT_ALLOWED: 2,
  NETWORK_UNREACHABLE: 3,
  HOST_UNREACHABLE: 4,
  CONNECTION_REFUSED: 5,
  TTL_EXPIRED: 6,
  COMMAND_NOT_SUPPORTED: 7,
  ADDRESS_TYPE_NOT_SUPPORTED: 8,
} as const;

export class SocksProtocolError extends Error {
  constructor(
    message: string,
    readonly reply: number = REPLY.GENERAL_FAILURE,
  ) {
    super(message);
  }
}

export interface Greeting {
  methods: number[];
  length: number;
}

/** Returns undefined while more bytes are needed; throws on bytes that are not SOCKS5. */
export function parseGreeting(buf: Buffer): Greeting | undefined {
  if (buf.length < 1) return undefined;
  if (buf[0] !== SOCKS_VERSION) throw new SocksProtocolError(`not a SOCKS5 client (first byte 0x${buf[0].toString(16)})`);
  if (buf.length < 2) return undefined;
  const n = buf[1];
  if (n === 0) throw new SocksProtocolError('SOCKS5 greeting offers no authentication method');
  if (buf.length < 2 + n) return undefined;
  return { methods: [...buf.subarray(2, 2 + n)], length: 2 + n };
}

export interface Address {
  host: string;
  port: number;
  atyp: number;
}

/** Parse ATYP ADDR PORT at `off`; returns the address and the offset after it. */
export function parseAddress(buf: Buffer, off: number): { addr: Address; end: number } | undefined {
  if (buf.length < off + 1) return undefined;
  const atyp = buf[off];
  let host: string;
  let end: number;
  switch (atyp) {
    case ATYP.IPV4:
      end = off + 1 + 4;
      if (buf.length < end + 2) return undefined;
      host = ipFromBytes(buf.subarray(off + 1, end));
      break;
    case ATYP.IPV6: {
      end = off + 1 + 16;
      if (buf.length < end + 2) return undefined;
      host = ipFromBytes(buf.subarray(off + 1, end));
      break;
    }
    case ATYP.DOMAIN: {
      if (buf.length < off + 2) return undefined;
      const len = buf[off + 1];
      if (len === 0) throw new SocksProtocolError('empty domain name', REPLY.ADDRESS_TYPE_NOT_SUPPORTED);
      end = off + 2 + len;
      if (buf.length < end + 2) return undefined;
      host = buf.subarray(off + 2, end).toString('latin1');
      if (!/^[a-zA-Z0-9._-]+$/.test(host)) throw new SocksProtocolError(`invalid domain name "${host.slice(0, 64)}"`, REPLY.HOST_UNREACHABLE);
      break;
    }
    default:
      throw new SocksProtocolError(`unknown address type ${atyp}`, REPLY.ADDRESS_TYPE_NOT_SUPPORTED);
  }
  return { addr: { host, port: buf.readUInt16BE(end), atyp }, end: end + 2 };
}

export interface Request {
  cmd: number;
  addr: Address;
  length: number;
}

export function parseRequest(buf: Buffer): Request | undefined {
  if (buf.length < 4) return undefined;
  if (buf[0] !== SOCKS_VERSION) throw new SocksProtocolError(`bad SOCKS5 request version ${buf[0]}`);
  const cmd = buf[1];
  const parsed = parseAddress(buf, 3);
  if (!parsed) return undefined;
  return { cmd, addr: parsed.addr, length: parsed.end };
}

export function encodeAddress(host: string, port: number): Buffer {
  const family = isIP(host);
  let head: Buffer;
  if (family) {
    head = Buffer.concat([Buffer.from([family === 4 ? ATYP.IPV4 : ATYP.IPV6]), ipToBytes(host)]);
  } else {
    const name = Buffer.from(host, 'latin1');
    head = Buffer.concat([Buffer.from([ATYP.DOMAIN, name.length]), name]);
  }
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  return Buffer.concat([head, p]);
}

export function reply(code: number, host = '0.0.0.0', port = 0): Buffer {
  return Buffer.concat([Buffer.from([SOCKS_VERSION, code, 0]), encodeAddress(host, port)]);
}

/** UDP request header: RSV(2) FRAG(1) ATYP ADDR PORT DATA. */
export function parseUdpDatagram(buf: Buffer): { addr: Address; data: Buffer } {
  if (buf.length < 4) throw new SocksProtocolError('short UDP datagram');
  if (buf[2] !== 0) throw new SocksProtocolError('fragmented SOCKS5 UDP datagrams are not supported');
  const parsed = parseAddress(buf, 3);
  if (!parsed) throw new SocksProtocolError('truncated UDP datagram header');
  return { addr: parsed.addr, data: buf.subarray(parsed.end) };
}

export function encodeUdpDatagram(host: string, port: number, data: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0, 0, 0]), encodeAddress(host, port), data]);
}
