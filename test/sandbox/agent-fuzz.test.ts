import t from 'tap';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { TrafficAgent } from '../../agent/traffic-agent';
import { get, intercept, startAgent, startLaptop, startManager, startServer } from './agent-harness';

// Garbage into the agent's port: random bytes after an HTTP/1 request line, and
// random frames after the HTTP/2 preface. Each bad connection may fail; the
// agent must keep serving everyone else (tap fails on any uncaught error).

let agent: TrafficAgent;

t.before(async () => {
  const manager = await startManager(t);
  const app = await startServer(t, 'app');
  const lap = await startServer(t, 'laptop');
  agent = await startAgent(t, manager.port, app.port);
  const laptop = await startLaptop(t, manager.port);
  await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: lap.port });
});

let seed = 1234;
function rnd(n: number): number {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
}
function bytes(n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, () => rnd(256)));
}

/** One connection: send, wait until closed or 300 ms, then go. */
function poke(payload: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(agent.listenPort, '127.0.0.1');
    s.on('error', () => undefined);
    s.on('data', () => undefined);
    const timer = setTimeout(() => {
      s.destroy();
      resolve();
    }, 300);
    s.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
    s.write(payload);
  });
}

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const HEAD_LINES = ['GET / HTTP/1.1\r\n', 'POST /x HTTP/1.1\r\nHost: a\r\n', 'GET / HTTP/1.1\r\nx-user: alice\r\nContent-Length: 10\r\n\r\n', 'PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n'];

t.test('random bytes after HTTP/1 request heads', async (t) => {
  for (let batch = 0; batch < 8; batch++) {
    const jobs = [];
    for (let i = 0; i < 20; i++) jobs.push(poke(Buffer.concat([Buffer.from(HEAD_LINES[rnd(HEAD_LINES.length)]), bytes(1 + rnd(200))])));
    await Promise.all(jobs);
  }
  t.equal((await get(agent.listenPort, '/ok')).headers['x-served-by'], 'app');
  t.equal((await get(agent.listenPort, '/ok', { 'x-user': 'alice' })).headers['x-served-by'], 'laptop');
});

t.test('random HTTP/2 frames after the preface', async (t) => {
  for (let batch = 0; batch < 8; batch++) {
    const jobs = [];
    for (let i = 0; i < 20; i++) {
      const frames = [frame(4, 0, 0, Buffer.alloc(0))]; // a valid SETTINGS first, mostly
      for (let k = 0; k < 1 + rnd(4); k++) frames.push(frame(rnd(10), rnd(256), rnd(4) === 0 ? 0 : 1 + 2 * rnd(5), bytes(rnd(40))));
      jobs.push(poke(Buffer.concat([PREFACE, ...(rnd(5) === 0 ? [bytes(30)] : frames)])));
    }
    await Promise.all(jobs);
  }
  const s = http2.connect(`http://127.0.0.1:${agent.listenPort}`);
  s.on('error', () => undefined);
  t.teardown(() => s.destroy());
  for (const [user, side] of [
    ['alice', 'laptop'],
    ['bob', 'app'],
  ]) {
    const who = await new Promise<string>((resolve, reject) => {
      const req = s.request({ ':path': '/after', 'x-user': user });
      req.on('response', (h) => resolve(String(h['x-served-by'])));
      req.on('error', reject);
      req.resume();
    });
    t.equal(who, side);
  }
});
