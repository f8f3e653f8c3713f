import t from 'tap';
import * as net from 'node:net';
import { startLoopbackManager, type LoopbackManager } from '../helpers/loopback-manager';
import { DataPlaneClient } from '../../src/tunnel/client';

// A flow whose dial succeeded waits for its local connection (netfilter hands
// it over after the SYN's verdict; a SOCKS client reads its reply first). When
// the connection to the manager breaks meanwhile (the apiserver's port-forward
// reset by a restart), that flow fails alone: the daemon lives on, and the
// local connection is reset at its join. Against a real manager on loopback,
// behind a TCP relay that resets its connections as a dying port-forward does.

let lm: LoopbackManager;
let echoPort = 0;
let relayPort = 0;
const relayed = new Set<net.Socket>();
const servers: net.Server[] = [];

async function listen(srv: net.Server): Promise<number> {
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return (srv.address() as net.AddressInfo).port;
}

t.before(async () => {
  lm = await startLoopbackManager();
  echoPort = await listen(net.createServer((s) => s.on('error', () => undefined).pipe(s)));
  relayPort = await listen(net.createServer((down) => {
    const up = net.connect(lm.mgr.data.port, '127.0.0.1');
    for (const s of [down, up]) s.on('error', () => undefined);
    relayed.add(down);
    down.pipe(up).pipe(down);
    down.on('close', () => {
      relayed.delete(down);
      up.destroy();
    });
  }));
});
t.teardown(async () => {
  for (const s of servers) s.close();
  await lm.stop();
});

/** The local side of a connection, as the kernel hands one to the daemon, and the program's side of it. */
async function localPair(): Promise<{ daemonSide: net.Socket; app: net.Socket; appReset: Promise<string> }> {
  const srv = net.createServer({ allowHalfOpen: true });
  const port = await listen(srv);
  const app = net.connect(port, '127.0.0.1');
  const daemonSide = await new Promise<net.Socket>((r) => srv.once('connection', r));
  srv.close();
  const appReset = new Promise<string>((r) => {
    app.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
    app.on('close', () => r('closed'));
  });
  return { daemonSide, app, appReset };
}

for (const direct of [false, true]) {
  t.test(`${direct ? 'a raw flow' : 'an HTTP/2 stream'} whose manager connection resets before its join fails that flow only`, async (t) => {
    const dp = new DataPlaneClient({ fileLimit: 4096 });
    t.teardown(() => dp.close());
    dp.use({ address: `127.0.0.1:${relayPort}`, session: lm.session, direct });
    const flow = await dp.tcp('127.0.0.1', echoPort);
    t.ok(relayed.size > 0, 'the flow crossed the relay');
    for (const s of relayed) s.resetAndDestroy();
    await new Promise((r) => setTimeout(r, 200)); // the reset arrives while nobody holds the flow
    const { daemonSide, appReset } = await localPair();
    const done = await new Promise<string | undefined>((r) => flow.join(daemonSide, r));
    // a stream is closed by then; a paused raw socket learns of its reset when the join reads it
    t.match(done, /closed before the flow was joined|ECONNRESET/, 'the join says why');
    t.equal(await appReset, 'ECONNRESET', 'the program sees a reset, not an empty answer');

    // the next flow takes a new connection and works
    const again = await dp.tcp('127.0.0.1', echoPort);
    const pair = await localPair();
    again.join(pair.daemonSide, () => undefined);
    pair.app.write('still here');
    const echoed = await new Promise<string>((r) => pair.app.once('data', (d) => r(d.toString())));
    t.equal(echoed, 'still here');
    pair.app.destroy();
  });
}
