import t from 'tap';
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { pipeFlow } from '../../src/tunnel/flow-pipe';
import { StreamDuplex, TunnelResetError } from '../../src/tunnel/stream-duplex';
import type { TunnelMessage, TunnelMessage__Output, TunnelStream } from '../../src/tunnel/messages';

/**
 * Two ends of an in-memory tunnel stream (what the manager's splice joins):
 * messages written on one end arrive on the other, asynchronously, with
 * pause/resume buffering and a small window so that backpressure is real.
 */
class End extends EventEmitter {
  peer!: End;
  private paused = false;
  private queue: TunnelMessage__Output[] = [];
  private inFlight = 0;
  ended = false;
  readonly sent: TunnelMessage[] = [];

  write(msg: TunnelMessage): boolean {
    this.sent.push(msg);
    this.inFlight++;
    setImmediate(() => this.peer.deliver({ ...msg, msg: Object.keys(msg)[0] } as TunnelMessage__Output, () => this.delivered()));
    return this.inFlight < 8;
  }
  private delivered(): void {
    this.inFlight--;
    if (this.inFlight === 7) this.emit('drain');
  }
  deliver(msg: TunnelMessage__Output, done: () => void): void {
    this.queue.push(msg);
    done();
    this.flush();
  }
  private flush(): void {
    while (!this.paused && this.queue.length) this.emit('data', this.queue.shift()!);
  }
  end(): void {
    if (this.ended) return;
    this.ended = true;
    setImmediate(() => this.peer.emit('end'));
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
    setImmediate(() => this.flush());
  }
}

function tunnel(): [TunnelStream, TunnelStream, End, End] {
  const a = new End();
  const b = new End();
  a.peer = b;
  b.peer = a;
  return [a as unknown as TunnelStream, b as unknown as TunnelStream, a, b];
}

/** A TCP echo server at the far end, joined to the tunnel with pipeFlow as the manager does. */
async function farEcho(t: { teardown(fn: () => void): void }, stream: TunnelStream): Promise<void> {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.pipe(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => srv.close());
  const sock = net.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((r) => sock.once('connect', r));
  pipeFlow(sock, stream);
  stream.resume();
}

t.test('bytes both ways with backpressure, FIN as close_write both ways', async (t) => {
  const [a, b, endA] = tunnel();
  await farEcho(t, b);
  const d = new StreamDuplex(a);
  const n = 4 * 1024 * 1024;
  let got = 0;
  d.on('data', (c: Buffer) => (got += c.length));
  const ended = new Promise((r) => d.on('end', r));
  const block = Buffer.alloc(64 * 1024, 7);
  for (let i = 0; i < n / block.length; i++) if (!d.write(block)) await new Promise((r) => d.once('drain', r));
  d.end();
  await ended;
  t.equal(got, n, 'everything echoed');
  if (!d.closed) await new Promise((r) => d.once('close', r));
  t.ok(endA.ended, 'the tunnel stream was ended after both closes');
  t.notOk(endA.sent.some((m) => m.reset), 'no reset on a clean close');
});

t.test('a reset from the peer destroys the Duplex with its message', async (t) => {
  const [a, b] = tunnel();
  const d = new StreamDuplex(a);
  const err = new Promise<Error>((r) => d.on('error', r));
  b.write({ reset: { message: 'laptop went away' } });
  const e = await err;
  t.type(e, TunnelResetError);
  t.equal(e.message, 'laptop went away');
  t.equal((e as NodeJS.ErrnoException).code, 'ECONNRESET');
});

t.test('destroying the Duplex early sends a reset; unexpected messages are a protocol error', async (t) => {
  const [a, , endA] = tunnel();
  const d = new StreamDuplex(a);
  d.destroy();
  if (!d.closed) await new Promise((r) => d.once('close', r));
  t.match(endA.sent.at(-1), { reset: {} });
  t.ok(endA.ended);

  const [a2, b2, endA2] = tunnel();
  const d2 = new StreamDuplex(a2);
  const err = new Promise<Error>((r) => d2.on('error', r));
  b2.write({ open: { session_id: 'x' } });
  t.match((await err).message, /unexpected tunnel message "open"/);
  t.match(endA2.sent.at(-1), { reset: {} });
});

t.test('half-close: the peer closing its side leaves ours writable (allowHalfOpen)', async (t) => {
  const [a, b, endA, endB] = tunnel();
  const d = new StreamDuplex(a);
  const gotEnd = new Promise((r) => d.on('end', r));
  d.resume();
  b.write({ close_write: {} });
  await gotEnd;
  t.ok(d.writable, 'still writable');
  d.end('late');
  await new Promise((r) => setTimeout(r, 20));
  t.same(endB.sent, [{ close_write: {} }]);
  t.same(endA.sent, [{ data: Buffer.from('late') }, { close_write: {} }], 'our late data, then our close_write');
  t.ok(endA.ended, 'both sides closed: the stream is released');
});

t.test('socket look-alikes: setTimeout emits timeout when idle', async (t) => {
  const [a] = tunnel();
  const d = new StreamDuplex(a);
  d.setKeepAlive().setNoDelay().ref().unref();
  const hold = setTimeout(() => undefined, 5000); // the idle timer itself is unref'd, like a socket's
  const fired = new Promise((r) => d.setTimeout(50, () => r(true)));
  t.equal(await fired, true);
  clearTimeout(hold);
  t.equal(d.timeout, 50);
  d.destroy();
});

t.test('a reset while our FIN is in flight still closes the socket (no leaked handle)', async (t) => {
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    s.resume();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => srv.close());
  const sock = net.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((r) => sock.once('connect', r));
  sock.on('error', () => undefined);
  const [a, b] = tunnel();
  pipeFlow(sock, a);
  a.resume();
  const closed = new Promise<boolean>((r) => {
    sock.once('close', () => r(true));
    setTimeout(() => r(false), 2000).unref();
  });
  // close_write (pipeFlow ends the socket) and a reset in the same turn: libuv refuses an RST
  // while the shutdown is pending, and an unguarded resetAndDestroy() never closes the socket.
  b.write({ close_write: {} });
  b.write({ reset: { message: 'peer gone' } });
  t.equal(await closed, true, 'the socket closed');
});
