/**
 * Sends fuzz cases from inside a network namespace (the test process lives
 * outside it): `node blaster.js JOB.json`, where the job names a target and
 * hex payloads. TCP: one connection per payload, written, then read until the
 * peer closes it or `waitMs` passes. UDP: one datagram per payload, an answer
 * awaited for `waitMs`. Prints one JSON line of counts.
 */
import { readFileSync } from 'node:fs';
import * as dgram from 'node:dgram';
import * as net from 'node:net';

interface Job {
  mode: 'tcp' | 'udp';
  host: string;
  port: number;
  payloads: string[];
  concurrency?: number;
  waitMs?: number;
  /** a line of the answer that counts as "the peer answered with a refusal" (regex source) */
  refusal?: string;
}

interface Counts {
  sent: number;
  closedByPeer: number;
  reset: number;
  timedOut: number;
  answered: number;
  refused: number;
  connectFailed: number;
}

function tcpCase(job: Job, payload: Buffer, c: Counts): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: job.host, port: job.port });
    let got = '';
    let connected = false;
    const timer = setTimeout(() => {
      c.timedOut++;
      s.destroy();
    }, job.waitMs ?? 500);
    s.on('connect', () => {
      connected = true;
      c.sent++;
      s.write(payload);
    });
    s.on('data', (d: Buffer) => {
      if (!got) c.answered++;
      got += d.toString('latin1').slice(0, 200);
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected) c.connectFailed++;
      else if (err.code === 'ECONNRESET') c.reset++;
    });
    s.on('end', () => {
      c.closedByPeer++;
      s.end();
    });
    s.on('close', () => {
      clearTimeout(timer);
      if (job.refusal && new RegExp(job.refusal, 'm').test(got)) c.refused++;
      resolve();
    });
  });
}

function udpCases(job: Job, payloads: Buffer[], c: Counts): Promise<void> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(net.isIPv6(job.host) ? 'udp6' : 'udp4');
    sock.on('message', () => c.answered++);
    sock.on('error', () => undefined);
    let i = 0;
    const next = (): void => {
      if (i >= payloads.length) {
        setTimeout(() => {
          sock.close();
          resolve();
        }, job.waitMs ?? 500);
        return;
      }
      sock.send(payloads[i++], job.port, job.host, () => {
        c.sent++;
        setImmediate(next);
      });
    };
    next();
  });
}

async function main(): Promise<void> {
  const job = JSON.parse(readFileSync(process.argv[2], 'utf8')) as Job;
  const payloads = job.payloads.map((h) => Buffer.from(h, 'hex'));
  const c: Counts = { sent: 0, closedByPeer: 0, reset: 0, timedOut: 0, answered: 0, refused: 0, connectFailed: 0 };
  if (job.mode === 'udp') {
    await udpCases(job, payloads, c);
  } else {
    let i = 0;
    const worker = async (): Promise<void> => {
      while (i < payloads.length) await tcpCase(job, payloads[i++], c);
    };
    await Promise.all(Array.from({ length: job.concurrency ?? 16 }, worker));
  }
  process.stdout.write(JSON.stringify(c) + '\n');
}

void main();
