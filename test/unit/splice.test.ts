import t, { type Test } from 'tap';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { connectFlowSocket } from '../../src/tunnel/fast-socket';
import { reset, splice, type ByteCounters } from '../../src/tunnel/splice';

// The one splice's close protocol, for each kind of end it joins (TCP sockets,
// HTTP/2 streams), on real loopback connections.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A connected pair of loopback sockets (both allowHalfOpen); `fast`: the far one is a fast reader. */
async function pair(t: Test, fast = false): Promise<[net.Socket, net.Socket]> {
  const srv = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const opts = { port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true };
  const near = fast ? connectFlowSocket(opts) : net.connect(opts);
  await new Promise((r) => near.once('connect', r));
  const far = await accepted;
  srv.close();
  t.teardown(() => (near.destroy(), far.destroy()));
  return [near, far];
}

/** What one end reads until it is ended or fails. */
function reader(s: net.Socket | http2.Http2Stream): Promise<{ text: string; ended: boolean; error?: string }> {
  const got: Buffer[] = [];
  return new Promise((resolve) => {
    s.on('data', (d: Buffer) => got.push(d));
    s.once('end', () => resolve({ text: Buffer.concat(got).toString(), ended: true }));
    s.once('error', (err: NodeJS.ErrnoException) => resolve({ text: Buffer.concat(got).toString(), ended: false, error: err.code ?? err.message }));
  });
}

/** An HTTP/2 stream pair on loopback: the server's end (to splice) and the client's (the peer). */
async function streams(t: Test): Promise<{ server: http2.ServerHttp2Stream; client: http2.ClientHttp2Stream }> {
  const srv = http2.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const session = http2.connect(`http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`);
  t.teardown(() => (session.destroy(), srv.close()));
  const server = new Promise<http2.ServerHttp2Stream>((r) => srv.once('stream', (s) => (s.respond({ ':status': 200 }), r(s))));
  const client = session.request({ ':method': 'POST', ':path': '/' });
  client.on('error', () => undefined);
  return { server: await server, client };
}

t.test('socket <-> socket: each FIN is a half-close, bytes are counted both ways', async (t) => {
  for (const fast of [false, true]) {
    const [app, inner] = await pair(t);
    const [outer, far] = await pair(t, fast);
    const counters: ByteCounters = { bytesOut: 0, bytesIn: 0 };
    let doneWith: string | undefined = 'not yet';
    const done = new Promise<void>((r) => splice(inner, outer, { counters, onDone: (err) => ((doneWith = err), r()) }));
    const atFar = reader(far);
    app.end('request');
    t.same(await atFar, { text: 'request', ended: true }, `${fast ? 'fast reader' : 'plain'}: the far end got the bytes, then the FIN`);
    const atApp = reader(app);
    far.end('answer after the half-close');
    t.same(await atApp, { text: 'answer after the half-close', ended: true }, 'the app got the answer sent after its FIN');
    await done;
    t.equal(doneWith, undefined, 'a clean end');
    t.same(counters, { bytesOut: 7, bytesIn: 27 });
  }
});

t.test('socket <-> socket: a reset on one end resets the other', async (t) => {
  const [app, inner] = await pair(t);
  const [outer, far] = await pair(t, true);
  let doneWith: string | undefined;
  const done = new Promise<void>((r) => splice(inner, outer, { onDone: (err) => ((doneWith = err), r()) }));
  const atApp = reader(app);
  far.write('partial');
  await sleep(50);
  far.resetAndDestroy();
  const r = await atApp;
  t.equal(r.error, 'ECONNRESET', 'the app sees a reset, not a FIN');
  t.equal(r.text, 'partial');
  await done;
  t.ok(doneWith, `the flow ended with a reason (${doneWith})`);
});

t.test('socket <-> HTTP/2 stream: FIN is END_STREAM and END_STREAM is FIN', async (t) => {
  const [app, inner] = await pair(t);
  const { server, client } = await streams(t);
  let doneWith: string | undefined = 'not yet';
  const done = new Promise<void>((r) => splice(inner, server, { onDone: (err) => ((doneWith = err), r()) }));
  const atPeer = reader(client);
  app.end('hello');
  t.same(await atPeer, { text: 'hello', ended: true }, 'the peer read the bytes and END_STREAM');
  const atApp = reader(app);
  client.end('world');
  t.same(await atApp, { text: 'world', ended: true }, 'the app read the answer and a FIN');
  await done;
  t.equal(doneWith, undefined, 'a clean end');
});

t.test("socket <-> HTTP/2 stream: the peer's RST_STREAM reaches the app as a reset, never as a FIN", async (t) => {
  for (const code of [http2.constants.NGHTTP2_CANCEL, http2.constants.NGHTTP2_INTERNAL_ERROR]) {
    const [app, inner] = await pair(t);
    const { server, client } = await streams(t);
    let doneWith: string | undefined;
    const done = new Promise<void>((r) => splice(inner, server, { onDone: (err) => ((doneWith = err), r()) }));
    const atApp = reader(app);
    client.write('partial');
    await sleep(50);
    client.close(code);
    const r = await atApp;
    t.equal(r.error, 'ECONNRESET', `code ${code}: the app sees a reset (it read ${JSON.stringify(r)})`);
    await done;
    t.match(doneWith, /reset|stream/, 'the flow ended with a reason');
  }
});

t.test("socket <-> HTTP/2 stream: the app's RST is RST_STREAM (CANCEL) at the peer", async (t) => {
  const [app, inner] = await pair(t);
  const { server, client } = await streams(t);
  const done = new Promise<void>((r) => splice(inner, server, { onDone: () => r() }));
  const closed = new Promise<number>((r) => client.once('close', () => r(client.rstCode!)));
  app.write('x');
  await sleep(50);
  app.resetAndDestroy();
  t.equal(await closed, http2.constants.NGHTTP2_CANCEL);
  await done;
});

/** The code a stream closed with. */
const closeCode = (s: http2.Http2Stream): Promise<number> => new Promise((r) => (s.closed && s.destroyed ? r(s.rstCode!) : s.once('close', () => r(s.rstCode!))));

t.test('HTTP/2 stream <-> HTTP/2 stream (a diverted flow in the manager): half-closes pass across', async (t) => {
  const one = await streams(t);
  const two = await streams(t);
  let doneWith: string | undefined = 'not yet';
  const done = new Promise<void>((r) => splice(one.server, two.server, { onDone: (err) => ((doneWith = err), r()) }));
  const atTwo = reader(two.client);
  one.client.end('to two');
  t.same(await atTwo, { text: 'to two', ended: true });
  const atOne = reader(one.client);
  two.client.end('to one');
  t.same(await atOne, { text: 'to one', ended: true });
  t.equal(await closeCode(one.client), http2.constants.NGHTTP2_NO_ERROR);
  await done;
  t.equal(doneWith, undefined, 'a clean end');
});

t.test('HTTP/2 stream <-> HTTP/2 stream: a reset on one is a reset on the other, not END_STREAM', async (t) => {
  const one = await streams(t);
  const two = await streams(t);
  splice(one.server, two.server);
  one.client.resume();
  two.client.write('to one');
  await sleep(50);
  two.client.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  t.equal(await closeCode(one.client), http2.constants.NGHTTP2_CANCEL, 'the other side got RST_STREAM (CANCEL)');
});

t.test('reset() while our FIN is in flight closes the socket without throwing', async (t) => {
  const [a, b] = await pair(t);
  b.pause();
  a.write(Buffer.alloc(8 * 1024 * 1024)); // more than the socket buffers take at once: the FIN waits behind it
  a.end();
  t.ok(a.writableEnded && !a.writableFinished, 'the FIN is queued');
  reset(a);
  t.ok(a.destroyed);
  reset(a); // twice is harmless
  t.ok(a.destroyed);
});
