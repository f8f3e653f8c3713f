/**
 * Real servers for the sandbox's `cluster` namespace: HTTP (port 80: /bytes,
 * /zeros, /sha256, /sink, /headers), TCP echo
 * and UDP echo (port 7) on every address given. Prints READY when listening.
 * Usage: node servers.js ADDR [ADDR...]
 */
import { createHash } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import * as net from 'node:net';
import { patternStream } from './pattern';
import { raiseFileLimit } from '../../src/core/rlimit';

const ZEROS = Buffer.alloc(1024 * 1024);

function httpServer(addr: string): http.Server {
  return http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/bytes') {
      const n = Number(url.searchParams.get('n') ?? '0');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
      patternStream(n, url.searchParams.get('seed') ?? 'seed').pipe(res);
      return;
    }
    if (url.pathname === '/zeros') {
      // Cheap bulk data for benchmarks: the server's own cost stays out of the figure.
      const n = Number(url.searchParams.get('n') ?? '0');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
      let left = n;
      const push = (): void => {
        while (left > 0) {
          const chunk = left >= ZEROS.length ? ZEROS : ZEROS.subarray(0, left);
          left -= chunk.length;
          if (!res.write(chunk)) return void res.once('drain', push);
        }
        res.end();
      };
      push();
      return;
    }
    if (url.pathname === '/sha256') {
      const h = createHash('sha256');
      let n = 0;
      req.on('data', (d: Buffer) => {
        n += d.length;
        h.update(d);
      });
      req.on('end', () => res.end(`${h.digest('hex')} ${n}\n`));
      return;
    }
    if (url.pathname === '/sink') {
      // Upload benchmarks: count the body and throw it away (no hashing to slow the reference).
      let n = 0;
      req.on('data', (d: Buffer) => (n += d.length));
      req.on('end', () => res.end(`${n}\n`));
      return;
    }
    if (url.pathname === '/headers') {
      res.end(JSON.stringify(req.headers) + '\n');
      return;
    }
    res.end(`hello from ${addr}\n`);
  });
}

function tcpEcho(): net.Server {
  return net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    let n = 0;
    s.on('data', (d) => {
      n += d.length;
      s.write(d);
    });
    // Half-close: the client has finished sending; answer once more, then close.
    s.on('end', () => s.end(`closed after ${n} bytes\n`));
    s.on('error', () => undefined);
  });
}

async function main(): Promise<void> {
  raiseFileLimit();
  const addrs = process.argv.slice(2);
  const listening: Promise<void>[] = [];
  for (const addr of addrs) {
    const h = httpServer(addr);
    h.keepAliveTimeout = 60_000;
    listening.push(new Promise((r) => h.listen({ host: addr, port: 80, backlog: 8192 }, () => r())));
    const e = tcpEcho();
    listening.push(new Promise((r) => e.listen({ host: addr, port: 7, backlog: 8192 }, () => r())));
    const u = dgram.createSocket(net.isIPv6(addr) ? 'udp6' : 'udp4');
    u.on('message', (m, rinfo) => u.send(Buffer.concat([Buffer.from('echo:'), m]), rinfo.port, rinfo.address));
    listening.push(new Promise((r) => u.bind(7, addr, () => r())));
  }
  await Promise.all(listening);
  process.stdout.write('READY\n');
}

void main();
