import t from 'tap';
import fc from 'fast-check';
import { SocksProtocolError, encodeAddress, encodeUdpDatagram, parseGreeting, parseRequest as parseSocksRequest, parseUdpDatagram } from '../../daemon/user/socks5';
import {
  FrameReader, HeaderCodec, SpdyProtocolError, dataFrameHeader, decodeHeaderBlock, encodeHeaderBlock, goAwayFrame, pingFrame, replyFrame, rstStreamFrame,
  settingsFrame, synStreamFrame, windowUpdateFrame, type ControlFrame,
} from '../../src/kube/spdy-frames';
import { formatReply, formatRequest, parseReply, parseRequest } from '../../src/tunnel/raw/flow';
import { DatagramFramer } from '../../src/tunnel/h2/protocol';
import { chunked, mutated, params, report, RUNS } from './fuzz';

// The byte-level parsers of the wire protocols: SOCKS5, SPDY port-forward
// frames, the raw-flow lines and the UDP datagram framing. Whatever the
// bytes: "need more", a result, or the parser's own typed error, nothing else.

/** Runs fn; true when it returned or threw one of `allowed`. */
function onlyTyped(fn: () => unknown, ...allowed: (new (...a: never[]) => Error)[]): boolean {
  try {
    fn();
    return true;
  } catch (err) {
    if (allowed.some((c) => err instanceof c)) return true;
    throw err;
  }
}

const host = fc.oneof(
  fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join('.')),
  fc.stringMatching(/^[a-z0-9][a-z0-9.-]{0,60}$/),
  fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(':')),
);
const port = fc.integer({ min: 0, max: 65535 });

t.test('SOCKS5: greeting, request and UDP header parsers return, wait, or throw SocksProtocolError', async (t) => {
  const seeds = [
    Buffer.from([5, 1, 0]), Buffer.from([5, 2, 0, 2]),
    Buffer.concat([Buffer.from([5, 1, 0]), encodeAddress('198.19.128.10', 80)]),
    Buffer.concat([Buffer.from([5, 1, 0]), encodeAddress('echo.default', 80)]),
    Buffer.concat([Buffer.from([5, 3, 0]), encodeAddress('0.0.0.0', 0)]),
    encodeUdpDatagram('2001:db8::10', 53, Buffer.from('query')),
  ];
  fc.assert(
    fc.property(mutated(seeds, 80), (b) =>
      onlyTyped(() => parseGreeting(b), SocksProtocolError) && onlyTyped(() => parseSocksRequest(b), SocksProtocolError) && onlyTyped(() => parseUdpDatagram(b), SocksProtocolError),
    ),
    params(RUNS * 3),
  );
  t.pass(report('SOCKS5 parsers', { cases: RUNS * 3 }));
});

t.test('SOCKS5: a request is undecided on every strict prefix and parsed whole (any host, any port)', async (t) => {
  fc.assert(
    fc.property(host, port, fc.constantFrom(1, 3), fc.uint8Array({ maxLength: 8 }), (h, p, cmd, rest) => {
      const req = Buffer.concat([Buffer.from([5, cmd, 0]), encodeAddress(h, p)]);
      for (let i = 0; i < req.length; i++) if (parseSocksRequest(req.subarray(0, i)) !== undefined) return false;
      const r = parseSocksRequest(Buffer.concat([req, rest]))!;
      return r.length === req.length && r.cmd === cmd && r.addr.port === p;
    }),
    params(),
  );
  t.pass('prefixes wait');
});

const control = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 0x7fffffff }), fc.uint8Array({ maxLength: 40 })).map(([id, b]) => synStreamFrame(id, Buffer.from(b))),
  fc.tuple(fc.integer({ min: 1, max: 0x7fffffff }), fc.uint8Array({ maxLength: 40 })).map(([id, b]) => replyFrame(2, id, Buffer.from(b))),
  fc.tuple(fc.nat(0x7fffffff), fc.nat(20)).map(([id, s]) => rstStreamFrame(id, s)),
  fc.array(fc.record({ id: fc.nat(0xffffff), value: fc.nat(0xffffffff) }), { maxLength: 4 }).map(settingsFrame),
  fc.nat(0xffffffff).map(pingFrame),
  fc.nat(0x7fffffff).map((id) => goAwayFrame(id)),
  fc.tuple(fc.nat(0x7fffffff), fc.nat(0x7fffffff)).map(([id, d]) => windowUpdateFrame(id, d)),
);
const dataFrame = fc
  .tuple(fc.integer({ min: 1, max: 0x7fffffff }), fc.uint8Array({ maxLength: 64 }), fc.boolean())
  .map(([id, p, fin]) => Buffer.concat([dataFrameHeader(id, p.length, fin), p]));
const spdyStream = fc.array(fc.oneof(control, dataFrame), { minLength: 1, maxLength: 6 }).map((fs) => Buffer.concat(fs));

/** What a reader makes of `pieces`: its control frames, each stream's data and FINs in order, or the error it threw. */
function readAll(pieces: Buffer[]): { control: ControlFrame[]; data: Record<number, string>; fins: number[]; error?: string } {
  const out: { control: ControlFrame[]; data: Record<number, string>; fins: number[]; error?: string } = { control: [], data: {}, fins: [] };
  const reader = new FrameReader({
    control: (f) => out.control.push(f),
    data: (id, payload, fin) => {
      out.data[id] = (out.data[id] ?? '') + payload.toString('hex');
      if (fin) out.fins.push(id);
    },
  });
  try {
    for (const p of pieces) reader.push(p);
  } catch (err) {
    if (!(err instanceof SpdyProtocolError)) throw err;
    out.error = err.message;
  }
  return out;
}

t.test('SPDY: FrameReader gives the same frames however the stream is cut', async (t) => {
  fc.assert(
    fc.property(spdyStream, fc.array(fc.nat(), { maxLength: 8 }), (stream, cuts) => {
      const whole = readAll([stream]);
      const cut = readAll(chunked(stream, cuts));
      return whole.error === undefined && JSON.stringify(whole) === JSON.stringify(cut);
    }),
    params(),
  );
  t.pass('cut-invariant');
});

t.test('SPDY: FrameReader and decodeHeaderBlock throw only SpdyProtocolError on mutated frames', async (t) => {
  const seeds: Buffer[] = [...fc.sample(spdyStream, { numRuns: 30, seed: 7 }), encodeHeaderBlock({ ':status': '200', streamtype: 'data', port: '80', requestid: '0' })];
  fc.assert(
    fc.property(mutated(seeds, 120), fc.array(fc.nat(), { maxLength: 4 }), (b, cuts) => {
      readAll(chunked(b, cuts));
      return onlyTyped(() => decodeHeaderBlock(b), SpdyProtocolError);
    }),
    params(RUNS * 3),
  );
  t.pass(report('SPDY frames', { cases: RUNS * 3 }));
});

t.test('SPDY: the zlib header codec rejects garbage with SpdyProtocolError and fails the calls after it', async (t) => {
  const deflate = new HeaderCodec('deflate');
  t.teardown(() => deflate.close());
  const good = await deflate.process(encodeHeaderBlock({ ':status': '200', streamtype: 'data' }));
  const inputs = fc.sample(mutated([good], 60), { numRuns: Math.min(RUNS, 300), seed: 11 });
  let rejected = 0;
  for (const input of inputs) {
    const inflate = new HeaderCodec('inflate');
    try {
      decodeHeaderBlock(await inflate.process(input));
    } catch (err) {
      if (!(err instanceof SpdyProtocolError)) throw err;
      rejected++;
    } finally {
      inflate.close();
    }
  }
  t.ok(rejected > 0, report('SPDY header blocks', { cases: inputs.length, rejected }));
});

t.test('raw-flow lines: parseRequest and parseReply never throw; what parses is what was sent', async (t) => {
  const line = mutated([Buffer.from('RDBG-FLOW/1 3f2a tcp echo.default 80 10.0.0.1:5000'), Buffer.from('OK 198.19.128.10:80 - 17'), Buffer.from('REFUSED - connection%20refused')], 200);
  fc.assert(
    fc.property(line, (b) => {
      const s = b.toString('latin1');
      const r = parseRequest(s);
      parseReply(s);
      return typeof r === 'string' || (r.port >= 1 && r.port <= 65535 && !/\s/.test(r.host + r.session + r.protocol));
    }),
    params(RUNS * 3),
  );
  const field = fc.stringMatching(/^[\x21-\x7e]{1,40}$/);
  fc.assert(
    fc.property(field, field, fc.stringMatching(/^[\x21-\x7e]{1,253}$/), fc.integer({ min: 1, max: 65535 }), field, (session, protocol, h, p, source) => {
      const r = parseRequest(formatRequest({ session, protocol, host: h, port: p, source }).trimEnd());
      return typeof r !== 'string' && r.host === h && r.port === p && r.session === session && r.source === (source === '-' ? '' : source);
    }),
    params(),
  );
  // A message that is just "-" once read back as no message (the placeholder for an empty field).
  t.equal(parseReply(formatReply('REFUSED', '', '-').trimEnd()).message, '-', 'a "-" message survives (regression)');
  fc.assert(
    fc.property(fc.constantFrom('OK', 'REFUSED', 'DENIED'), fc.string({ maxLength: 200 }), (code, message) => {
      const r = parseReply(formatReply(code as 'OK', '10.0.0.1:80', message, '7').trimEnd());
      return r.code === code && r.message === message.slice(0, 1000) && r.flow === '7';
    }),
    params(),
  );
  t.pass(report('raw-flow lines', { cases: RUNS * 5 }));
});

t.test('UDP datagram framing: any cut gives the same datagrams; garbage never throws', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (ds, cuts) => {
      const stream = Buffer.concat(ds.map((d) => DatagramFramer.frame(Buffer.from(d))));
      const got: string[] = [];
      const f = new DatagramFramer((d) => got.push(d.toString('hex')));
      for (const c of chunked(stream, cuts)) f.push(c);
      return JSON.stringify(got) === JSON.stringify(ds.map((d) => Buffer.from(d).toString('hex')));
    }),
    params(),
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (b) => {
      new DatagramFramer(() => undefined).push(Buffer.from(b));
      return true;
    }),
    params(),
  );
  t.pass(report('datagram framing', { cases: RUNS * 2 }));
});
