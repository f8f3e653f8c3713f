import t from 'tap';
import { startLoopbackManager, type LoopbackManager } from '../helpers/loopback-manager';
import * as dgram from 'node:dgram';
import * as http2 from 'node:http2';
import { ManagerServer } from '../../manager/server';
import { DatagramFramer } from '../../src/tunnel/h2/protocol';

// UDP flows whose socket cannot connect fail that flow only; the manager lives on.
// 127.255.255.255 is the loopback subnet's broadcast address: connect() on a UDP
// socket without SO_BROADCAST fails there with EACCES, and no packet leaves.
const NO_CONNECT = '127.255.255.255';

let lm: LoopbackManager;
let mgr: ManagerServer;
let session = '';
let echo: dgram.Socket;
let echoPort = 0;

t.before(async () => {
  echo = dgram.createSocket('udp4');
  echo.on('message', (m, r) => echo.send(m, r.port, r.address));
  await new Promise<void>((r) => echo.bind(0, '127.0.0.1', () => r()));
  echoPort = echo.address().port;
  lm = await startLoopbackManager();
  ({ mgr, session } = lm);
});
t.teardown(async () => {
  await lm.stop();
  echo.close();
});

/** One UDP flow on the data plane with node's own HTTP/2 client: the dial's headers, and the first datagram back. */
function h2Udp(host: string, port: number): Promise<{ status: number; dial: string; message: string; reply?: string }> {
  const h2 = http2.connect(`http://127.0.0.1:${mgr.data.port}`);
  h2.on('error', () => undefined);
  return new Promise((resolve) => {
    const req = h2.request({
      ':method': 'POST', ':path': '/rdbg.v1/flow', 'rdbg-session': session, 'rdbg-protocol': 'udp', 'rdbg-host': host, 'rdbg-port': String(port),
    });
    req.on('error', () => undefined);
    // Sent at once, as a client does that does not wait for the answer.
    req.write(DatagramFramer.frame(Buffer.from('ping')));
    let head = { status: 0, dial: '', message: '' };
    const done = (reply?: string): void => {
      h2.close();
      req.close();
      resolve({ ...head, reply });
    };
    req.on('response', (h) => {
      head = { status: Number(h[':status']), dial: String(h['rdbg-dial']), message: decodeURIComponent(String(h['rdbg-message'] ?? '')) };
      if (head.dial !== 'OK') done();
    });
    req.on('data', (c: Buffer) => done(c.subarray(2).toString()));
    req.on('close', () => done());
    setTimeout(() => done(), 5000).unref();
  });
}

t.test('HTTP/2 data plane: a UDP flow whose connect fails is answered with the error, and the manager lives on', async (t) => {
  const failed = await h2Udp(NO_CONNECT, 9999);
  t.equal(failed.status, 502);
  t.equal(failed.dial, 'FAILED');
  t.match(failed.message, /127\.255\.255\.255:9999: .*EACCES/);
  t.equal(mgr.stats.flowsActive, 0, 'no flow left open');
  // Let any exception from the failed flow surface before checking the others.
  await new Promise((r) => setTimeout(r, 200));
  const ok = await h2Udp('127.0.0.1', echoPort);
  t.equal(ok.dial, 'OK');
  t.equal(ok.reply, 'ping', 'another UDP flow still carries datagrams');
});

t.test('a UDP flow that the client closes stops taking datagrams without harm', async (t) => {
  const h2 = http2.connect(`http://127.0.0.1:${mgr.data.port}`);
  h2.on('error', () => undefined);
  const req = h2.request({
    ':method': 'POST', ':path': '/rdbg.v1/flow', 'rdbg-session': session, 'rdbg-protocol': 'udp', 'rdbg-host': '127.0.0.1', 'rdbg-port': String(echoPort),
  });
  req.on('error', () => undefined);
  await new Promise((r) => req.once('response', r));
  // Datagrams and the end of the stream in one write: the flow closes while they are delivered.
  req.end(Buffer.concat([DatagramFramer.frame(Buffer.from('a')), DatagramFramer.frame(Buffer.from('b'))]));
  await new Promise((r) => req.once('close', r));
  h2.close();
  for (let i = 0; i < 50 && mgr.stats.flowsActive > 0; i++) await new Promise((r) => setTimeout(r, 100));
  t.equal(mgr.stats.flowsActive, 0, 'every flow closed, none counted twice');
  t.equal((await h2Udp('127.0.0.1', echoPort)).reply, 'ping');
});
