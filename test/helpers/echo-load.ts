/**
 * Load against a TCP echo server (test/cluster/apps/tcp-echo.js), shared by
 * the port-forward tests and bench/kube-forward.ts: byte-exact bulk transfer
 * (checksums both ways) and 1-byte round trips.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';

export interface BulkResult {
  bytes: number;
  ms: number;
  /** MB/s (10^6) each way: the echo carries the same bytes up and down at once */
  mbps: number;
  sentSha: string;
  gotSha: string;
}

function connect(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host, noDelay: true });
    s.once('connect', () => { s.off('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

/** Sends `bytes` random bytes and reads the echo back concurrently; resolves when all came back. */
export async function bulkEcho(port: number, bytes: number, timeoutMs = 300_000): Promise<BulkResult> {
  const s = await connect(port);
  const chunk = randomBytes(256 * 1024);
  const sent = createHash('sha256');
  const got = createHash('sha256');
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    let received = 0;
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`bulk echo: ${received}/${bytes} bytes back after ${timeoutMs} ms`)); }, timeoutMs);
    s.on('error', (err) => { clearTimeout(timer); reject(err); });
    s.on('close', () => { clearTimeout(timer); if (received < bytes) reject(new Error(`bulk echo: closed after ${received}/${bytes} bytes`)); });
    s.on('data', (d: Buffer) => {
      got.update(d);
      received += d.length;
      if (received < bytes) return;
      clearTimeout(timer);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      s.destroy();
      resolve({ bytes, ms, mbps: bytes / 1e6 / (ms / 1000), sentSha: sent.digest('hex'), gotSha: got.digest('hex') });
    });
    let off = 0;
    const pump = (): void => {
      while (off < bytes) {
        const piece = bytes - off >= chunk.length ? chunk : chunk.subarray(0, bytes - off);
        sent.update(piece);
        off += piece.length;
        if (!s.write(piece)) { s.once('drain', pump); return; }
      }
    };
    pump();
  });
}

/** Sequential 1-byte round trips on one connection; returns each in microseconds. */
export async function pingPong(port: number, rounds: number, warmup = 50): Promise<number[]> {
  const s = await connect(port);
  const samples: number[] = [];
  const one = Buffer.from('x');
  try {
    for (let i = 0; i < rounds + warmup; i++) {
      const t0 = process.hrtime.bigint();
      await new Promise<void>((resolve, reject) => {
        s.once('data', () => { s.off('error', reject); resolve(); });
        s.once('error', reject);
        s.write(one);
      });
      if (i >= warmup) samples.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  } finally {
    s.destroy();
  }
  return samples;
}

/** Time from connect() to the first echoed byte: what a new connection costs. */
export async function firstByte(port: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  const s = await connect(port);
  await new Promise<void>((resolve, reject) => {
    s.once('data', () => resolve());
    s.once('error', reject);
    s.write('x');
  });
  s.destroy();
  return Number(process.hrtime.bigint() - t0) / 1000;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
