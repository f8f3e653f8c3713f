import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { ManagerServer } from '../../manager/server';
import { DialPolicy } from '../../manager/dial-policy';
import { CHANNEL_OPTIONS, managerPackage, type ManagerClient } from '../../src/rpc/services';
import { PROTOCOL } from '../../src/core/version';
import type { TunnelMessage__Output, TunnelStream } from '../../src/tunnel/messages';

// The manager's tunnel against malformed and hostile streams, on loopback.

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
  mgr = new ManagerServer({ listen: '127.0.0.1:0', serviceSubnets: [], podSubnets: [], clusterDomain: 'cluster.local', namespace: 'rdbg', leaseSeconds: 15, dialPolicy: DialPolicy.permissive() });
  const port = await mgr.start();
  const Manager = managerPackage().Manager;
  client = new Manager(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as ManagerClient;
  session = await new Promise((resolve, reject) =>
    client.arrive({ client_version: '0.1.0', protocol: PROTOCOL, user: 'test' }, (err, res) => (err ? reject(err) : resolve(res!.session_id))),
  );
});
t.teardown(async () => {
  client.close();
  await mgr.stop();
  echo.close();
});

function firstReply(messages: object[]): Promise<TunnelMessage__Output | { error: string }> {
  const call = client.tunnel() as unknown as TunnelStream;
  return new Promise((resolve) => {
    call.on('error', (err) => resolve({ error: err.details ?? err.message }));
    call.once('data', (m) => {
      call.cancel?.();
      resolve(m);
    });
    for (const m of messages) call.write(m);
  });
}

async function echoWorks(): Promise<boolean> {
  const call = client.tunnel() as unknown as TunnelStream;
  return new Promise((resolve) => {
    let dialled = false;
    call.on('error', () => resolve(false));
    call.on('data', (m) => {
      if (!dialled) {
        dialled = m.dial?.code === 'OK';
        if (!dialled) return resolve(false);
        call.write({ data: Buffer.from('still alive') });
        return;
      }
      resolve(m.data?.toString() === 'still alive');
      call.cancel?.();
    });
    call.write({ open: { session_id: session, protocol: 'TCP', host: '127.0.0.1', port: echoPort } });
  });
}

t.test('a flow without a session is denied', async (t) => {
  const r = await firstReply([{ open: { session_id: 'nope', protocol: 'TCP', host: '127.0.0.1', port: echoPort } }]);
  t.match(r, { dial: { code: 'DENIED', message: /no such session/ } });
});

t.test('data before open is refused with a message', async (t) => {
  const r = await firstReply([{ data: Buffer.from('hello') }]);
  t.match(r, { dial: { code: 'FAILED', message: /first message of a flow must be "open"/ } });
  t.ok(await echoWorks(), 'other flows unaffected');
});

t.test('invalid destinations are refused', async (t) => {
  for (const open of [
    { session_id: session, protocol: 'TCP', host: '', port: 80 },
    { session_id: session, protocol: 'TCP', host: '127.0.0.1', port: 0 },
    { session_id: session, protocol: 'TCP', host: '127.0.0.1', port: 70000 },
    { session_id: session, protocol: 'PROTOCOL_UNSPECIFIED', host: '127.0.0.1', port: 80 },
  ]) {
    const r = await firstReply([{ open }]);
    t.match(r, { dial: { code: 'FAILED' } }, JSON.stringify(open));
  }
  t.ok(await echoWorks());
});

t.test('a second open in an open flow resets that flow only', async (t) => {
  const call = client.tunnel() as unknown as TunnelStream;
  const got: TunnelMessage__Output[] = [];
  await new Promise<void>((resolve) => {
    call.on('data', (m) => {
      got.push(m);
      if (m.msg === 'dial') call.write({ open: { session_id: session, protocol: 'TCP', host: '127.0.0.1', port: 1 } });
      if (m.msg === 'reset') resolve();
    });
    call.on('error', () => resolve());
    call.on('end', () => resolve());
    call.write({ open: { session_id: session, protocol: 'TCP', host: '127.0.0.1', port: echoPort } });
  });
  t.match(got.find((m) => m.msg === 'reset'), { reset: { message: /unexpected tunnel message "open"/ } });
  t.ok(await echoWorks());
});

t.test('bytes that are not protobuf fail that stream only', async (t) => {
  const port = mgr.port;
  const session2 = http2.connect(`http://127.0.0.1:${port}`);
  const req = session2.request({
    ':method': 'POST', ':path': '/rdbg.v1.Manager/Tunnel', 'content-type': 'application/grpc', te: 'trailers',
  });
  session2.on('error', () => undefined);
  req.on('error', () => undefined);
  // A gRPC frame header promising 10 bytes of "protobuf" that is garbage.
  req.write(Buffer.concat([Buffer.from([0, 0, 0, 0, 10]), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])]));
  const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve) => {
    req.on('trailers', resolve);
    req.on('response', (h) => {
      if (h['grpc-status']) resolve(h);
    });
    req.resume();
  });
  t.not(trailers['grpc-status'], '0', `the stream fails (grpc-status ${trailers['grpc-status']}: ${trailers['grpc-message']})`);
  req.close();
  session2.destroy();
  t.ok(await echoWorks(), 'the manager keeps serving');
});

t.test('a client of another protocol generation is refused with a clear message', async (t) => {
  const err = await new Promise<grpc.ServiceError>((resolve) =>
    client.arrive({ client_version: '9.0.0', protocol: PROTOCOL + 1, user: 'future' }, (e) => resolve(e!)),
  );
  t.equal(err.code, grpc.status.FAILED_PRECONDITION);
  t.match(err.details, new RegExp(`rdbg client 9\\.0\\.0 speaks protocol ${PROTOCOL + 1}, but the traffic manager .* speaks protocol ${PROTOCOL}: upgrade the traffic manager`));
});
