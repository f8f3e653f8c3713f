/**
 * Client programs for sandbox tests that no stock tool covers well, run inside
 * the `laptop` namespace through the SOCKS5 proxy with the `socks` library.
 * Usage: node netclient.js MODE --socks HOST:PORT --dst HOST:PORT [--n N]
 * Prints one JSON object.
 */
import * as dgram from 'node:dgram';
import type * as net from 'node:net';
import { connect as netConnect } from 'node:net';
import { parseArgs } from 'node:util';
import { SocksClient } from 'socks';

const { values, positionals } = parseArgs({
  options: { socks: { type: 'string' }, dst: { type: 'string' }, n: { type: 'string', default: '1' }, hold: { type: 'string', default: '0' } },
  allowPositionals: true,
});
const [proxyHost, proxyPort] = (values.socks ?? '127.0.0.1:1080').split(':');
// Without --socks, modes that can run directly do so.
const [dstHost, dstPort] = (values.dst ?? '').split(/:(?=\d+$)/);
const proxy = { host: proxyHost, port: Number(proxyPort), type: 5 as const };

function connect(): Promise<net.Socket> {
  if (!values.socks) {
    // Direct: through whatever routes the namespace has (the TUN device, when rdbg is connected).
    return new Promise((resolve, reject) => {
      const s = netConnect({ host: dstHost, port: Number(dstPort) });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  }
  return SocksClient.createConnection({ proxy, command: 'connect', destination: { host: dstHost, port: Number(dstPort) }, timeout: 30_000 }).then(
    (r) => r.socket,
  );
}

function readAll(sock: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    sock.on('data', (d: Buffer) => (s += d.toString()));
    sock.on('end', () => resolve(s));
    sock.on('error', reject);
  });
}

async function echoOnce(i: number): Promise<boolean> {
  const sock = await connect();
  const line = `ping ${i}\n`;
  return new Promise((resolve) => {
    let got = '';
    sock.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.startsWith(line)) {
        sock.destroy();
        resolve(true);
      }
    });
    sock.on('error', () => resolve(false));
    sock.on('close', () => resolve(got.startsWith(line)));
    sock.write(line);
  });
}

async function main(): Promise<unknown> {
  const n = Number(values.n);
  const mode = positionals[0];
  const start = Date.now();
  switch (mode) {
    case 'connect':
      try {
        const s = await connect();
        s.destroy();
        return { ok: true, ms: Date.now() - start };
      } catch (err) {
        return { ok: false, error: (err as Error).message, ms: Date.now() - start };
      }
    case 'concurrent': {
      const results = await Promise.all(Array.from({ length: n }, (_, i) => echoOnce(i).catch(() => false)));
      const ok = results.filter(Boolean).length;
      return { ok, failed: n - ok, ms: Date.now() - start };
    }
    case 'halfclose': {
      const s = await connect();
      const all = readAll(s);
      s.end('hello, half-closed world\n');
      return { received: await all };
    }
    case 'udp': {
      const assoc = await new Promise<{ socket: net.Socket; remoteHost?: { host: string; port: number } }>((resolve, reject) => {
        const c = new SocksClient({ proxy, command: 'associate', destination: { host: '0.0.0.0', port: 0 }, timeout: 10_000 });
        c.on('established', resolve);
        c.on('error', reject);
        c.connect();
      });
      const relay = assoc.remoteHost!;
      const u = dgram.createSocket('udp4');
      const reply = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no UDP reply within 5 s')), 5000);
        u.on('message', (m) => {
          clearTimeout(timer);
          resolve(SocksClient.parseUDPFrame(m).data.toString());
        });
        const frame = SocksClient.createUDPFrame({ remoteHost: { host: dstHost, port: Number(dstPort) }, data: Buffer.from('ping over udp') });
        u.send(frame, relay.port, relay.host === '0.0.0.0' ? proxyHost : relay.host);
      });
      u.close();
      assoc.socket.destroy();
      return { reply };
    }
    case 'hold': {
      // Open n idle connections, report, then hold them for --hold ms.
      const socks: net.Socket[] = [];
      let failed = 0;
      const errors = new Set<string>();
      for (let i = 0; i < n; i += 200) {
        const batch = await Promise.allSettled(Array.from({ length: Math.min(200, n - i) }, () => connect()));
        for (const b of batch) {
          if (b.status === 'fulfilled') socks.push(b.value);
          else {
            failed++;
            errors.add((b.reason as Error).message);
          }
        }
      }
      process.stdout.write(JSON.stringify({ held: socks.length, failed, errors: [...errors].slice(0, 5), ms: Date.now() - start }) + '\n');
      await new Promise((r) => setTimeout(r, Number(values.hold)));
      for (const s of socks) s.destroy();
      return { done: true };
    }
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

main().then(
  (r) => {
    process.stdout.write(JSON.stringify(r) + '\n');
    process.exit(0);
  },
  (err: Error) => {
    process.stdout.write(JSON.stringify({ error: err.message }) + '\n');
    process.exit(1);
  },
);
