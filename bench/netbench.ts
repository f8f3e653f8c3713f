/**
 * Benchmark client, run inside the sandbox's `laptop` namespace, directly or
 * through the SOCKS5 proxy. Prints one JSON object.
 *   latency  --dst H:P [--socks H:P] --n N     ping-pong 64 bytes N times on one connection
 *   connrate --dst H:P [--socks H:P] --n N --c C   N short connections, C at a time
 */
import * as net from 'node:net';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  options: { socks: { type: 'string' }, dst: { type: 'string' }, n: { type: 'string', default: '1000' }, c: { type: 'string', default: '32' } },
  allowPositionals: true,
});
const [dstHost, dstPort] = (values.dst ?? '').split(/:(?=\d+$)/);

async function connect(): Promise<net.Socket> {
  if (!values.socks) {
    const s = net.connect({ host: dstHost, port: Number(dstPort), noDelay: true });
    await new Promise((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    return s;
  }
  const [h, p] = values.socks.split(':');
  return socksConnect(h, Number(p), dstHost, Number(dstPort));
}

/** Wait for exactly `n` bytes (a SOCKS5 server sends nothing more before its reply is complete). */
function readBytes(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      if (got.length < n) return;
      s.removeListener('data', onData);
      s.removeListener('error', reject);
      s.pause();
      if (got.length > n) s.unshift(got.subarray(n));
      resolve(got.subarray(0, n));
    };
    s.on('data', onData);
    s.once('error', reject);
    s.resume();
  });
}

/**
 * SOCKS5 CONNECT with no authentication (RFC 1928), one step at a time as
 * curl does it: greeting, method, request, reply. The connection-rate runs
 * use this rather than the socks package, whose own CPU (about 100 us a
 * connection here, on the same two cores as rdbg) counted against rdbg.
 */
async function socksConnect(proxyHost: string, proxyPort: number, host: string, port: number): Promise<net.Socket> {
  const s = net.connect({ host: proxyHost, port: proxyPort, noDelay: true });
  try {
    await new Promise((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    s.write(Buffer.from([5, 1, 0]));
    const method = await readBytes(s, 2);
    if (method[0] !== 5 || method[1] !== 0) throw new Error(`SOCKS5 proxy refused "no authentication" (${method.toString('hex')})`);
    const addr = net.isIPv4(host) ? [1, ...host.split('.').map(Number)] : [3, Buffer.byteLength(host), ...Buffer.from(host)];
    s.write(Buffer.from([5, 1, 0, ...addr, port >> 8, port & 0xff]));
    const head = await readBytes(s, 5); // VER REP RSV ATYP and the first byte of BND.ADDR
    if (head[1] !== 0) throw new Error(`SOCKS5 CONNECT failed with reply ${head[1]}`);
    const rest = head[3] === 1 ? 4 + 2 - 1 : head[3] === 4 ? 16 + 2 - 1 : head[4] + 2;
    await readBytes(s, rest);
    s.resume();
    return s;
  } catch (err) {
    s.destroy();
    throw err;
  }
}

function roundTrip(s: net.Socket, msg: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (d: Buffer): void => {
      got += d.length;
      if (got >= msg.length) {
        s.removeListener('data', onData);
        s.removeListener('error', reject);
        resolve();
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write(msg);
  });
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

async function latency(n: number): Promise<object> {
  const s = await connect();
  const msg = Buffer.alloc(64, 7);
  for (let i = 0; i < 200; i++) await roundTrip(s, msg); // warm up
  const us: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await roundTrip(s, msg);
    us.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  s.destroy();
  us.sort((a, b) => a - b);
  return { median_us: pct(us, 50), p90_us: pct(us, 90), p99_us: pct(us, 99) };
}

async function connrate(n: number, c: number): Promise<object> {
  let next = 0;
  let failed = 0;
  const one = Buffer.from('x');
  const start = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (next < n) {
        next++;
        try {
          const s = await connect();
          await roundTrip(s, one);
          s.destroy();
        } catch {
          failed++;
        }
      }
    }),
  );
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  return { per_second: (n - failed) / secs, failed };
}

/** Median time of a cluster-name lookup through the system's resolver configuration (c-ares, no cache). */
async function dnsLatency(name: string, n: number): Promise<object> {
  const { promises } = await import('node:dns');
  const r = new promises.Resolver({ timeout: 2000, tries: 1 });
  const us: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await r.resolve4(name);
    us.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  us.sort((a, b) => a - b);
  return { median_us: pct(us, 50), p99_us: pct(us, 99) };
}

const mode = positionals[0];
const run =
  mode === 'latency' ? latency(Number(values.n)) : mode === 'dns' ? dnsLatency(values.dst!, Number(values.n)) : connrate(Number(values.n), Number(values.c));
run.then(
  (r) => {
    process.stdout.write(JSON.stringify(r) + '\n');
    process.exit(0);
  },
  (err: Error) => {
    process.stdout.write(JSON.stringify({ error: err.message }) + '\n');
    process.exit(1);
  },
);
