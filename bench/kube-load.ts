/**
 * The load of bench/kube.ts: the bench server that runs in a pod (its source,
 * started with `node -e` in one of the test cluster's node images: iperf3 is
 * in no image) and the clients that drive it from the laptop namespace.
 *
 *   port 9000: echo (64-byte ping-pong)
 *   port 9001: sink for downloads: the client sends "N\n", the pod sends N
 *              zero bytes and closes (bulk in one direction, pod -> laptop)
 */
import * as net from 'node:net';

export const ECHO_PORT = 9000;
export const DOWNLOAD_PORT = 9001;

export const SERVER_SOURCE = `
const net = require('node:net');
const zeros = Buffer.alloc(1 << 20);
net.createServer((s) => { s.on('error', () => s.destroy()); s.setNoDelay(true); s.pipe(s); }).listen(${ECHO_PORT});
net.createServer((s) => {
  s.on('error', () => s.destroy());
  let head = '';
  const onData = (d) => {
    head += d.toString('latin1');
    const nl = head.indexOf('\\n');
    if (nl < 0) return;
    s.off('data', onData);
    let left = Number(head.slice(0, nl));
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, zeros.length);
        left -= n;
        if (!s.write(n === zeros.length ? zeros : zeros.subarray(0, n))) { s.once('drain', pump); return; }
      }
      s.end();
    };
    pump();
  };
  s.on('data', onData);
}).listen(${DOWNLOAD_PORT});
console.log('bench server on ${ECHO_PORT} (echo) and ${DOWNLOAD_PORT} (download)');
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
`;

/** A request every few milliseconds, with the intercept's header, to URL: run by the caller pod. */
export const CALLER_SOURCE = `
const http = require('node:http');
setInterval(() => {
  const r = http.get(process.env.URL, { headers: { 'x-dev': 'bench' }, agent: false, timeout: 2000 }, (res) => res.resume());
  r.on('timeout', () => r.destroy());
  r.on('error', () => {});
}, Number(process.env.EVERY_MS || 10));
`;

function connect(host: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, noDelay: true });
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`connect ${host}:${port}: no answer after ${timeoutMs} ms`)); }, timeoutMs);
    s.once('connect', () => { clearTimeout(timer); s.off('error', reject); resolve(s); });
    s.once('error', (err) => { clearTimeout(timer); reject(err); });
  });
}

/** Downloads `bytes` from the sink; fails unless exactly that many arrive. MB/s (10^6). */
export async function download(host: string, port: number, bytes: number, timeoutMs = 300_000): Promise<number> {
  const t0 = process.hrtime.bigint();
  const s = await connect(host, port);
  return new Promise((resolve, reject) => {
    let got = 0;
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`download ${host}:${port}: ${got}/${bytes} bytes after ${timeoutMs} ms`)); }, timeoutMs);
    s.on('data', (d: Buffer) => { got += d.length; });
    s.on('error', (err) => { clearTimeout(timer); reject(err); });
    s.on('close', () => {
      clearTimeout(timer);
      if (got !== bytes) { reject(new Error(`download ${host}:${port}: ${got} bytes, expected ${bytes}`)); return; }
      resolve(bytes / 1e6 / (Number(process.hrtime.bigint() - t0) / 1e9));
    });
    s.write(`${bytes}\n`);
  });
}

/** Sends `size` bytes and waits until all of them came back. */
function roundTrip(s: net.Socket, msg: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (d: Buffer): void => {
      got += d.length;
      if (got < msg.length) return;
      s.off('data', onData);
      s.off('error', reject);
      if (got > msg.length) reject(new Error(`echo: ${got} bytes back for ${msg.length}`));
      else resolve();
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write(msg);
  });
}

/** n sequential 64-byte round trips on one connection (after a warm-up); each in microseconds. */
export async function pingPong(host: string, port: number, n: number, warmup = 100): Promise<number[]> {
  const s = await connect(host, port);
  const msg = Buffer.alloc(64, 0x78);
  const out: number[] = [];
  try {
    for (let i = 0; i < n + warmup; i++) {
      const t0 = process.hrtime.bigint();
      await roundTrip(s, msg);
      if (i >= warmup) out.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  } finally {
    s.destroy();
  }
  return out;
}

/** One 64-byte round trip on a new connection: the "first successful request". */
export async function oneRequest(host: string, port: number, timeoutMs = 2000): Promise<void> {
  const s = await connect(host, port, timeoutMs);
  try {
    const timer = setTimeout(() => s.destroy(new Error(`echo ${host}:${port}: no answer after ${timeoutMs} ms`)), timeoutMs);
    await roundTrip(s, Buffer.alloc(64, 0x78));
    clearTimeout(timer);
  } finally {
    s.destroy();
  }
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
