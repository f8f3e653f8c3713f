// SPDY/3.1 framing, header compression and session bookkeeping (src/kube/spdy-*.ts),
// against a scripted peer that reads our frames with the same FrameReader.
import t from 'tap';
import {
  DEFAULT_WINDOW, FLAG_FIN, FrameReader, FrameType, HeaderCodec, RstStatus, SETTINGS_INITIAL_WINDOW_SIZE, SPDY3_DICTIONARY, SpdyProtocolError,
  dataFrameHeader, decodeHeaderBlock, encodeHeaderBlock, goAwayFrame, pingFrame, replyFrame, rstStreamFrame, settingsFrame, synStreamFrame,
  windowUpdateFrame, type ControlFrame,
} from '../../src/kube/spdy-frames';
import { SpdySession, StreamResetError, type SpdyTransport, type StreamHandler } from '../../src/kube/spdy-session';

interface Parsed { control: ControlFrame[]; data: Array<{ id: number; payload: Buffer; fin: boolean }> }

function reader(): { r: FrameReader; got: Parsed } {
  const got: Parsed = { control: [], data: [] };
  const r = new FrameReader({
    control: (f) => got.control.push(f),
    data: (id, payload, fin) => got.data.push({ id, payload: Buffer.from(payload), fin }),
  });
  return { r, got };
}

/** Joins the data pieces of each stream. */
function payloadOf(got: Parsed, id: number): Buffer {
  return Buffer.concat(got.data.filter((d) => d.id === id).map((d) => d.payload));
}

t.test('frames: every control frame reads back as written, whole or a byte at a time', async (t) => {
  const block = encodeHeaderBlock({ streamtype: 'data', port: '9000' });
  const wire = Buffer.concat([
    synStreamFrame(1, block, { priority: 3 }),
    replyFrame(FrameType.SYN_REPLY, 1, block, true),
    rstStreamFrame(3, RstStatus.CANCEL),
    settingsFrame([{ id: SETTINGS_INITIAL_WINDOW_SIZE, value: 1 << 20 }]),
    pingFrame(7),
    goAwayFrame(5, 2),
    windowUpdateFrame(0, 40000),
    dataFrameHeader(1, 3, true), Buffer.from('abc'),
  ]);
  for (const step of [wire.length, 1, 5, 13]) {
    const { r, got } = reader();
    for (let i = 0; i < wire.length; i += step) r.push(wire.subarray(i, i + step));
    t.same(got.control.map((f) => f.type), [1, 2, 3, 4, 6, 7, 9], `frame types in order (pieces of ${step})`);
    const [syn, reply, rst, settings, ping, goaway, wu] = got.control as Array<ControlFrame & Record<string, unknown>>;
    t.match(syn, { streamId: 1, associatedId: 0, priority: 3, flags: 0 });
    t.same(decodeHeaderBlock(syn.block as Buffer), { streamtype: 'data', port: '9000' });
    t.match(reply, { streamId: 1, flags: FLAG_FIN });
    t.match(rst, { streamId: 3, status: RstStatus.CANCEL });
    t.same(settings.settings, [{ flags: 0, id: SETTINGS_INITIAL_WINDOW_SIZE, value: 1 << 20 }]);
    t.match(ping, { id: 7 });
    t.match(goaway, { lastGoodStreamId: 5, status: 2 });
    t.match(wu, { streamId: 0, delta: 40000 });
    t.equal(payloadOf(got, 1).toString(), 'abc');
    t.equal(got.data.at(-1)!.fin, true, 'FIN on the last piece of the data frame');
  }
});

t.test('frames: exact bytes of a data frame and a WINDOW_UPDATE', async (t) => {
  t.equal(dataFrameHeader(5, 0x010203, true).toString('hex'), '0000000501010203');
  t.equal(windowUpdateFrame(3, 0x8000).toString('hex'), '80030009000000080000000300008000');
  t.equal(rstStreamFrame(1, RstStatus.CANCEL).toString('hex'), '80030003000000080000000100000005');
});

t.test('frames: a data payload split over many pieces arrives whole, and an empty FIN frame counts', async (t) => {
  const payload = Buffer.alloc(200_000, 'x');
  const wire = Buffer.concat([dataFrameHeader(1, payload.length), payload, dataFrameHeader(1, 0, true)]);
  const { r, got } = reader();
  for (let i = 0; i < wire.length; i += 7777) r.push(wire.subarray(i, i + 7777));
  t.ok(payloadOf(got, 1).equals(payload));
  t.same(got.data.filter((d) => d.fin).length, 1);
  t.equal(got.data.at(-1)!.payload.length, 0);
});

t.test('frames: garbage is a protocol error', async (t) => {
  const { r } = reader();
  t.throws(() => r.push(Buffer.from('8002000100000000', 'hex')), SpdyProtocolError, 'SPDY/2 frame');
  t.throws(() => reader().r.push(Buffer.from('0000000000000001ff', 'hex')), SpdyProtocolError, 'data on stream 0');
});

t.test('header compression: one zlib context per direction, with the SPDY/3 dictionary', async (t) => {
  t.equal(SPDY3_DICTIONARY.length, 1423, 'the SPDY/3 dictionary is 1423 bytes');
  const out = new HeaderCodec('deflate');
  const back = new HeaderCodec('inflate');
  const blocks = [
    { streamtype: 'error', port: '9000', requestid: '0' },
    { streamtype: 'data', port: '9000', requestid: '0' },
    { streamtype: 'error', port: '9000', requestid: '1' },
  ];
  const compressed = await Promise.all(blocks.map((b) => out.process(encodeHeaderBlock(b))));
  t.equal(compressed[0][0], 0x78, 'a zlib stream');
  t.ok(compressed[0][1] & 0x20, 'FDICT: it names the dictionary');
  t.equal(compressed[0].readUInt32BE(2), adler32(SPDY3_DICTIONARY), 'by its Adler-32');
  t.ok(compressed[2].length < compressed[0].length, `later blocks reuse the context (${compressed.map((c) => c.length).join(', ')} bytes)`);
  t.ok(compressed.every((c) => c.subarray(-4).equals(Buffer.from('0000ffff', 'hex'))), 'each block ends with a sync flush');
  for (const [i, c] of compressed.entries()) t.same(decodeHeaderBlock(await back.process(c)), blocks[i], `block ${i} round-trips`);
  // A block cannot be decoded out of context: the stream is one.
  await t.rejects(new HeaderCodec('inflate').process(compressed[1]), 'the second block alone is not a zlib stream');
  out.close();
  back.close();
});

function adler32(b: Buffer): number {
  let a = 1;
  let s = 0;
  for (const x of b) {
    a = (a + x) % 65521;
    s = (s + a) % 65521;
  }
  return ((s << 16) | a) >>> 0;
}

/** A transport whose sent bytes a peer reads, and whose pause state is visible. */
class FakeTransport implements SpdyTransport {
  readonly peer = reader();
  bufferedAmount = 0;
  paused = false;
  closed = false;
  sends = 0;
  /** what bufferedAmount becomes once a send completes */
  afterSend?: number;
  send(data: Buffer, cb?: (err?: Error) => void): void {
    this.sends++;
    this.peer.r.push(data);
    setImmediate(() => {
      if (this.afterSend !== undefined) this.bufferedAmount = this.afterSend;
      cb?.();
    });
  }
  pause(): void { this.paused = true; }
  resume(): void { this.paused = false; }
  close(): void { this.closed = true; }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Header compression runs on the zlib thread pool: wait for the SYN_STREAMs to be out. */
async function synsSent(tr: FakeTransport, n: number): Promise<void> {
  const end = Date.now() + 5000;
  while (tr.peer.got.control.filter((f) => f.type === FrameType.SYN_STREAM).length < n) {
    if (Date.now() > end) throw new Error(`${n} SYN_STREAMs not sent`);
    await new Promise((r) => setTimeout(r, 2));
  }
}


/** Plays the server: decodes our SYN_STREAMs and replies. */
async function serverSide(tr: FakeTransport, session: SpdySession): Promise<{ synHeaders: Array<Record<string, string>>; reply: (id: number, fin?: boolean) => Promise<void> }> {
  const inflate = new HeaderCodec('inflate');
  const deflate = new HeaderCodec('deflate');
  const synHeaders: Array<Record<string, string>> = [];
  for (const f of tr.peer.got.control) {
    if (f.type === FrameType.SYN_STREAM) synHeaders.push(decodeHeaderBlock(await inflate.process(f.block)));
  }
  return {
    synHeaders,
    reply: async (id, fin = false) => { session.receive(replyFrame(FrameType.SYN_REPLY, id, await deflate.process(encodeHeaderBlock({})), fin)); },
  };
}

t.test('session: streams open with the port-forward headers and settle on the reply or a reset', async (t) => {
  const tr = new FakeTransport();
  const s = new SpdySession(tr);
  const got: Buffer[] = [];
  let ended = false;
  const opening = s.open({ streamtype: 'data', port: '9000', requestid: '0' }, { data: (p) => got.push(Buffer.from(p)), end: () => { ended = true; }, reset: () => undefined });
  const refused = s.open({ streamtype: 'error', port: '9000', requestid: '1' });
  await synsSent(tr, 2);
  const server = await serverSide(tr, s);
  t.same(server.synHeaders, [{ streamtype: 'data', port: '9000', requestid: '0' }, { streamtype: 'error', port: '9000', requestid: '1' }]);
  t.same(tr.peer.got.control.flatMap((f) => (f.type === FrameType.SYN_STREAM ? [f.streamId] : [])), [1, 3], 'client stream ids are odd and rising');
  await server.reply(1);
  s.receive(Buffer.concat([dataFrameHeader(1, 5), Buffer.from('hello'), dataFrameHeader(1, 0, true)]));
  const stream = await opening;
  t.equal(stream.id, 1);
  t.equal(Buffer.concat(got).toString(), 'hello');
  t.ok(ended, 'the FIN reached the handler');
  s.receive(rstStreamFrame(3, RstStatus.REFUSED_STREAM));
  await t.rejects(refused, StreamResetError);
  t.equal(s.activeStreams, 1, 'the refused stream is gone; stream 1 is half-closed');
  stream.end();
  await tick();
  t.equal(s.activeStreams, 0, 'FIN both ways: stream forgotten');
  const fin = tr.peer.got.data.at(-1)!;
  t.match(fin, { id: 1, fin: true }, 'our FIN is an empty data frame');
});

t.test('session: PINGs are answered (even ids) and timed (odd ids); GOAWAY refuses unreplied streams', async (t) => {
  const tr = new FakeTransport();
  const s = new SpdySession(tr);
  s.receive(pingFrame(2));
  await tick();
  t.match(tr.peer.got.control.at(-1), { type: FrameType.PING, id: 2 }, 'server ping echoed');
  const rtt = s.ping();
  await tick();
  const mine = tr.peer.got.control.at(-1) as { id: number };
  t.equal(mine.id % 2, 1, 'our ping id is odd');
  s.receive(pingFrame(mine.id));
  t.ok((await rtt) >= 0);
  const pending = s.open({ streamtype: 'data' });
  s.receive(goAwayFrame(0));
  await t.rejects(pending, /going away/);
  await t.rejects(s.open({ streamtype: 'data' }), /GOAWAY/);
});

async function openedStream(tr: FakeTransport, s: SpdySession, handler?: StreamHandler) {
  const opening = s.open({ streamtype: 'data' }, handler);
  await synsSent(tr, 1);
  const server = await serverSide(tr, s);
  await server.reply(1);
  return opening;
}

t.test('flow control: the session announces its receive windows before any stream', async (t) => {
  const tr = new FakeTransport();
  const s = new SpdySession(tr, { streamWindow: 1 << 20, sessionWindow: 16 << 20 });
  await tick();
  t.same(tr.peer.got.control.slice(0, 2), [
    { type: FrameType.SETTINGS, flags: 0, settings: [{ flags: 0, id: SETTINGS_INITIAL_WINDOW_SIZE, value: 1 << 20 }] },
    { type: FrameType.WINDOW_UPDATE, flags: 0, streamId: 0, delta: (16 << 20) - DEFAULT_WINDOW },
  ]);
  t.equal(s.recvWindow, 16 << 20);
  const stream = await openedStream(tr, s);
  t.equal(stream.recvWindow, 1 << 20);
  stream.consumed(512 * 1024 - 1);
  await tick();
  t.equal(tr.peer.got.control.filter((f) => f.type === FrameType.WINDOW_UPDATE).length, 1, 'no grant below half the stream window');
  stream.consumed(1);
  await tick();
  t.match(tr.peer.got.control.at(-1), { type: FrameType.WINDOW_UPDATE, streamId: 1, delta: 512 * 1024 });
});

t.test('flow control: consumed bytes are granted back a half window at a time, per stream and for the session', async (t) => {
  const tr = new FakeTransport();
  const s = new SpdySession(tr, { streamWindow: DEFAULT_WINDOW, sessionWindow: DEFAULT_WINDOW });
  const stream = await openedStream(tr, s);
  const updates = (): Array<{ streamId: number; delta: number }> => tr.peer.got.control.filter((f) => f.type === FrameType.WINDOW_UPDATE) as never;
  s.receive(Buffer.concat([dataFrameHeader(1, 20_000), Buffer.alloc(20_000)]));
  stream.consumed(20_000);
  await tick();
  t.same(updates(), [], 'nothing granted below half a window');
  t.equal(stream.recvWindow, DEFAULT_WINDOW - 20_000);
  t.equal(stream.pendingGrant, 20_000);
  s.receive(Buffer.concat([dataFrameHeader(1, 20_000), Buffer.alloc(20_000)]));
  await tick();
  t.same(updates(), [{ type: FrameType.WINDOW_UPDATE, flags: 0, streamId: 0, delta: 40_000 }], 'the session window is granted on receipt');
  t.equal(s.recvWindow, DEFAULT_WINDOW);
  t.equal(stream.recvWindow, DEFAULT_WINDOW - 40_000, 'the stream window waits for the reader');
  stream.consumed(20_000);
  await tick();
  t.match(updates().at(-1), { streamId: 1, delta: 40_000 }, 'the stream window once the reader took 32 KiB or more');
  t.equal(stream.recvWindow, DEFAULT_WINDOW);
  t.equal(stream.pendingGrant, 0);
});

t.test('flow control: a peer without flow control (spdystream) is not waited for', async (t) => {
  const tr = new FakeTransport();
  const s = new SpdySession(tr, { maxDataFrame: 16 * 1024 });
  const stream = await openedStream(tr, s);
  let done = false;
  stream.write([Buffer.alloc(1024 * 1024, 1)], false, () => { done = true; });
  await tick();
  t.ok(done, 'a 1 MiB write completes without any WINDOW_UPDATE');
  t.equal(payloadOf(tr.peer.got, 1).length, 1024 * 1024);
  t.ok(tr.peer.got.data.every((d) => d.payload.length <= 16 * 1024), 'in frames of at most maxDataFrame');
  t.equal(s.peerFlowControl, false);
});

t.test('flow control: once the peer speaks it, its windows bound what we send', async (t) => {
  const tr = new FakeTransport();
  const s = new SpdySession(tr);
  const stream = await openedStream(tr, s);
  s.receive(settingsFrame([{ id: SETTINGS_INITIAL_WINDOW_SIZE, value: 10_000 }]));
  t.equal(s.peerFlowControl, true);
  t.equal(stream.sendWindow, 10_000, 'SETTINGS moves the open stream\'s window too');
  let done = false;
  stream.write([Buffer.alloc(25_000, 2)], true, () => { done = true; });
  await tick();
  t.equal(payloadOf(tr.peer.got, 1).length, 10_000, 'only the window went out');
  t.notOk(done, 'the writer waits');
  t.notOk(tr.peer.got.data.some((d) => d.fin), 'no FIN before the last byte');
  s.receive(windowUpdateFrame(1, 10_000));
  await tick();
  t.equal(payloadOf(tr.peer.got, 1).length, 20_000);
  s.receive(windowUpdateFrame(1, 50_000));
  await tick();
  t.equal(payloadOf(tr.peer.got, 1).length, 25_000);
  t.ok(done, 'the write completed');
  t.equal(tr.peer.got.data.at(-1)!.fin, true, 'FIN on the last frame');
  t.equal(stream.sendWindow, 10_000 + 10_000 + 50_000 - 25_000);
  t.equal(s.sendWindow, DEFAULT_WINDOW - 25_000, 'the session window is spent too');
});

t.test('backpressure: a writer held above the high-water mark goes on when the transport drains, with nothing else to send', async (t) => {
  const tr = new FakeTransport();
  const s = new SpdySession(tr, { sendHighWater: 1024 * 1024 });
  const stream = await openedStream(tr, s);
  tr.bufferedAmount = 2 * 1024 * 1024;
  let done = false;
  // Exactly one full frame: it is flushed inside the write, before the writer is held.
  stream.write([Buffer.alloc(64 * 1024)], false, () => { done = true; });
  t.notOk(done, 'held while the transport is over the mark');
  await tick();
  t.notOk(done, 'still held: the transport has not drained');
  tr.bufferedAmount = 0;
  tr.afterSend = 0;
  stream.write([Buffer.alloc(10)], false, () => undefined);
  await tick();
  await tick();
  t.ok(done, 'released by the next completed send once below the mark');
  tr.bufferedAmount = 2 * 1024 * 1024;
  tr.afterSend = 100;
  done = false;
  stream.write([Buffer.alloc(64 * 1024)], false, () => { done = true; });
  await tick();
  await tick();
  t.ok(done, 'released by the completion of its own send (no other frame queued)');
});

t.test('backpressure: a full reader pauses the transport until it reads', async (t) => {
  const tr = new FakeTransport();
  const s = new SpdySession(tr);
  const stream = await openedStream(tr, s);
  s.pauseReading(stream);
  t.ok(tr.paused);
  s.resumeReading(stream);
  t.notOk(tr.paused);
  s.pauseReading(stream);
  stream.reset();
  t.notOk(tr.paused, 'a reset stream no longer holds the session');
  await tick();
  t.match(tr.peer.got.control.at(-1), { type: FrameType.RST_STREAM, streamId: 1, status: RstStatus.CANCEL });
});

t.test('session end: every open stream hears it', async (t) => {
  const tr = new FakeTransport();
  const s = new SpdySession(tr);
  let heard: Error | undefined;
  await openedStream(tr, s, { data: () => undefined, end: () => undefined, reset: (err) => { heard = err; } });
  s.end(new Error('tunnel closed'));
  t.match(heard?.message, 'tunnel closed');
  await t.rejects(s.open({}), /tunnel closed/);
});
