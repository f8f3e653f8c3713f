import * as dgram from 'node:dgram';
import * as net from 'node:net';
import { DnsCodes, dnsError } from './dns-errors';
import { joinHostPort } from '../../../src/core/address';

export interface Upstream {
  address: string;
  port: number;
  family: 4 | 6;
}

/** `1.2.3.4`, `1.2.3.4:5353`, `fd00::1`, `[fd00::1]:5353` (port 53 when none). */
export function parseUpstream(text: string): Upstream {
  const s = text.trim();
  let address = s;
  let port = 53;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracketed) {
    address = bracketed[1];
    if (bracketed[2]) port = Number(bracketed[2]);
  } else if (net.isIP(s) === 0 && /^[^:]+:\d+$/.test(s)) {
    const i = s.lastIndexOf(':');
    address = s.slice(0, i);
    port = Number(s.slice(i + 1));
  }
  const family = net.isIP(address);
  if (family === 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw dnsError(DnsCodes.BAD_UPSTREAM, `"${text}" is not a DNS server address (IP, IP:PORT or [IPv6]:PORT)`);
  }
  return { address, port, family: family as 4 | 6 };
}

export function upstreamText(u: Upstream): string {
  return joinHostPort(u.address, u.port);
}

/**
 * Sends the query bytes as they are and returns the upstream's answer bytes as
 * they are. One socket per query: the answer is matched by the socket, the
 * source and the ID, so clients that reuse IDs never get each other's answers.
 */
export function forwardUdp(query: Buffer, up: Upstream, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(up.family === 6 ? 'udp6' : 'udp4');
    const id = query.readUInt16BE(0);
    let settled = false;
    const done = (err: Error | undefined, answer?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeAllListeners('message');
      sock.on('error', () => undefined);
      try {
        sock.close();
      } catch {
        // already closed
      }
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(
      () => done(dnsError(DnsCodes.UPSTREAM_TIMEOUT, `no answer from ${upstreamText(up)} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    sock.on('error', (err) => done(dnsError(DnsCodes.UPSTREAM_FAILED, `${upstreamText(up)}: ${err.message}`, undefined, err)));
    sock.on('message', (msg, rinfo) => {
      if (rinfo.port !== up.port || (up.family === 4 && rinfo.address !== up.address) || msg.length < 12 || msg.readUInt16BE(0) !== id) return;
      done(undefined, msg);
    });
    sock.send(query, up.port, up.address);
  });
}

/** The same over TCP: one connection per query, 2-byte length prefix both ways. */
export function forwardTcp(query: Buffer, up: Upstream, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: up.address, port: up.port });
    let buf = Buffer.alloc(0);
    let settled = false;
    const done = (err: Error | undefined, answer?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeAllListeners('data');
      sock.on('error', () => undefined);
      sock.destroy();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(
      () => done(dnsError(DnsCodes.UPSTREAM_TIMEOUT, `no answer from ${upstreamText(up)} (TCP) within ${timeoutMs} ms`)),
      timeoutMs,
    );
    sock.on('error', (err) => done(dnsError(DnsCodes.UPSTREAM_FAILED, `${upstreamText(up)} (TCP): ${err.message}`, undefined, err)));
    sock.on('close', () => done(dnsError(DnsCodes.UPSTREAM_FAILED, `${upstreamText(up)} (TCP) closed without an answer`)));
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2) return;
      const len = buf.readUInt16BE(0);
      if (buf.length >= 2 + len) done(undefined, buf.subarray(2, 2 + len));
    });
    const prefix = Buffer.alloc(2);
    prefix.writeUInt16BE(query.length);
    sock.write(Buffer.concat([prefix, query]));
  });
}
