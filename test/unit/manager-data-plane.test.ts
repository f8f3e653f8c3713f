import t from 'tap';
import { startLoopbackManager, type LoopbackManager } from '../helpers/loopback-manager';
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { ManagerServer } from '../../manager/server';
import { type ManagerClient } from '../../src/rpc/services';
import { PROTOCOL } from '../../src/core/version';

// The manager's data port and control plane against malformed and hostile requests, on loopback.

let lm: LoopbackManager;
let mgr: ManagerServer;
let client: ManagerClient;
let session = '';
let echo: net.Server;
let echoPort = 0;

t.before(async () => {
  echo = net.createServer((s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  }).listen(0, '127.0.0.1');
  await new Promise((r) => echo.once('listening', r));
  echoPort = (echo.address() as net.AddressInfo).port;
  lm = await startLoopbackManager();
  ({ mgr, client, session } = lm);
});
t.teardown(async () => {
  await lm.stop();
  echo.close();
});

/** The manager's answer to one flow request on the HTTP/2 data plane. */
async function answer(headers: Record<string, string>): Promise<{ dial: string; message: string }> {
  const h2 = http2.connect(`http://127.0.0.1:${mgr.data.port}`);
  h2.on('error', () => undefined);
  try {
    const req = h2.request({ ':method': 'POST', ':path': '/rdbg.v1/flow', 'rdbg-session': session, 'rdbg-protocol': 'tcp', ...headers });
    req.on('error', () => undefined);
    const h = await new Promise<http2.IncomingHttpHeaders>((r) => req.once('response', r));
    req.close();
    return { dial: String(h['rdbg-dial']), message: decodeURIComponent(String(h['rdbg-message'] ?? '')) };
  } finally {
    h2.close();
  }
}

async function echoWorks(): Promise<boolean> {
  const h2 = http2.connect(`http://127.0.0.1:${mgr.data.port}`);
  h2.on('error', () => undefined);
  const req = h2.request({ ':method': 'POST', ':path': '/rdbg.v1/flow', 'rdbg-session': session, 'rdbg-protocol': 'tcp', 'rdbg-host': '127.0.0.1', 'rdbg-port': String(echoPort) });
  req.on('error', () => undefined);
  req.end('still alive');
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  h2.close();
  return Buffer.concat(chunks).toString() === 'still alive';
}

t.test('a flow without a session is denied', async (t) => {
  t.match(await answer({ 'rdbg-session': 'nope', 'rdbg-host': '127.0.0.1', 'rdbg-port': String(echoPort) }), { dial: 'DENIED', message: /no such session/ });
});

t.test('invalid destinations and protocols are refused', async (t) => {
  for (const h of <Record<string, string>[]>[
    { 'rdbg-host': '', 'rdbg-port': '80' },
    { 'rdbg-host': '127.0.0.1', 'rdbg-port': '0' },
    { 'rdbg-host': '127.0.0.1', 'rdbg-port': '70000' },
    { 'rdbg-host': '127.0.0.1', 'rdbg-port': '80', 'rdbg-protocol': 'sctp' },
  ]) {
    t.match(await answer(h), { dial: 'FAILED' }, JSON.stringify(h));
  }
  t.ok(await echoWorks(), 'other flows unaffected');
});

t.test('bytes that are neither a flow request nor HTTP/2 harm that connection only', async (t) => {
  const sock = net.connect(mgr.data.port, '127.0.0.1');
  sock.on('error', () => undefined);
  sock.write(Buffer.from([0xff, 0xfe, 0x00, 0x10, 0x0a, 0xff]));
  await new Promise((r) => setTimeout(r, 200));
  sock.destroy();
  const raw = net.connect(mgr.data.port, '127.0.0.1');
  raw.setEncoding('latin1');
  raw.write('RDBG-FLOW/1 x tcp\n');
  const reply = await new Promise<string>((r) => raw.once('data', r));
  raw.destroy();
  t.match(reply, /^FAILED - malformed/, 'a malformed flow request is answered');
  t.ok(await echoWorks(), 'the manager keeps serving');
});

t.test('a client of another protocol generation is refused with a clear message', async (t) => {
  const err = await new Promise<grpc.ServiceError>((resolve) =>
    client.arrive({ client_version: '9.0.0', protocol: PROTOCOL + 1, user: 'future' }, (e) => resolve(e!)),
  );
  t.equal(err.code, grpc.status.FAILED_PRECONDITION);
  t.match(err.details, new RegExp(`rdbg client 9\\.0\\.0 speaks protocol ${PROTOCOL + 1}, but the traffic manager .* speaks protocol ${PROTOCOL}: upgrade the traffic manager`));
});
