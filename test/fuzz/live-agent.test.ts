import t from 'tap';
import * as net from 'node:net';
import type { TrafficAgent } from '../../agent/traffic-agent';
import { get, intercept, startAgent, startLaptop, startManager, startServer } from '../sandbox/agent-harness';
import { conversation } from './h2-bytes';
import { mutated, report, runs, sample } from './fuzz';

// The agent's port with an intercept active: mutated HTTP/1 heads, chunked
// bodies and HTTP/2 conversations on many connections while a well-formed
// client (with and without the intercept's header) keeps being served.
// tap fails the file on any uncaught error, so "the agent survives" is checked
// for every case.

let agent: TrafficAgent;

t.before(async () => {
  const manager = await startManager(t);
  const app = await startServer(t, 'app');
  const lap = await startServer(t, 'laptop');
  agent = await startAgent(t, manager.port, app.port);
  const laptop = await startLaptop(t, manager.port);
  await intercept(laptop, agent, { headers: [{ name: 'x-user', value: 'alice', regex: false }], local_port: lap.port });
});

/** One connection: send, read until closed or 300 ms; true when the agent closed it or answered. */
function poke(payload: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(agent.listenPort, '127.0.0.1');
    let answered = false;
    s.on('error', () => undefined);
    s.on('data', () => (answered = true));
    const timer = setTimeout(() => s.destroy(), 300);
    s.on('end', () => (answered = true));
    s.on('close', () => {
      clearTimeout(timer);
      resolve(answered);
    });
    s.write(payload);
  });
}

async function blast(payloads: Buffer[]): Promise<number> {
  let answered = 0;
  for (let i = 0; i < payloads.length; i += 20) answered += (await Promise.all(payloads.slice(i, i + 20).map(poke))).filter(Boolean).length;
  return answered;
}

async function goodClient(during: Promise<unknown>): Promise<{ ok: number; failed: number }> {
  let over = false;
  const n = { ok: 0, failed: 0 };
  const loop = (async () => {
    while (!over) {
      const [a, b] = await Promise.all([get(agent.listenPort, '/good'), get(agent.listenPort, '/good', { 'x-user': 'alice' })]);
      if (a.headers['x-served-by'] === 'app' && b.headers['x-served-by'] === 'laptop') n.ok++;
      else n.failed++;
    }
  })();
  await during.finally(() => (over = true));
  await loop;
  return n;
}

const counts: Record<string, number> = {};

t.test('mutated HTTP/1 heads and chunked bodies', async (t) => {
  const seeds = [
    'GET /a HTTP/1.1\r\nHost: app\r\nx-user: alice\r\n\r\n',
    'POST /b HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello',
    'PUT /c HTTP/1.1\r\nHost: app\r\nx-user: alice\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n',
    'POST /d HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\nab\r\n',
    'GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    'GET /e HTTP/1.1\r\nHost: app\r\n\r\nGET /f HTTP/1.1\r\nHost: app\r\nx-user: alice\r\n\r\n',
  ].map((s) => Buffer.from(s, 'latin1'));
  const payloads = sample(mutated(seeds, 200), runs(400), 21);
  const run = blast(payloads);
  const good = await goodClient(run);
  const answered = await run;
  t.equal(good.failed, 0, `the good client was served every time (${good.ok} rounds)`);
  t.ok(answered > payloads.length / 2, `the agent answered or closed ${answered} of ${payloads.length}`);
  counts['HTTP/1'] = payloads.length;
});

t.test('mutated HTTP/2 conversations', async (t) => {
  const req = (user: string, body: Buffer): Buffer =>
    conversation([[':method', 'POST'], [':scheme', 'http'], [':authority', 'app'], [':path', '/h2'], ['x-user', user]], body);
  const seeds = [req('alice', Buffer.from('hello')), req('bob', Buffer.alloc(0)), req('alice', Buffer.alloc(300, 0x61))];
  const payloads = sample(mutated(seeds, 200), runs(300), 22);
  const run = blast(payloads);
  const good = await goodClient(run);
  await run;
  t.equal(good.failed, 0, `the good client was served every time (${good.ok} rounds)`);
  counts['HTTP/2'] = payloads.length;
  t.pass(report('agent port', counts));
});
