import t from 'tap';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { F, FRAME_HEADER, frame, headersFragment, PREFACE, readHead, T } from '../../agent/h2-frames';
import { encodeHeaders, HpackDecoder } from '../../agent/hpack';

// The agent's HPACK against the RFC's examples and against nghttp2 (node's
// HTTP/2 client and server), which encodes with Huffman and a dynamic table.

t.test("RFC 7541 C.3 and C.4: one context across requests, without and with Huffman", async (t) => {
  const plain = new HpackDecoder();
  t.same(plain.decode(Buffer.from('828684410f7777772e6578616d706c652e636f6d', 'hex')), [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
  ]);
  t.same(plain.decode(Buffer.from('828684be58086e6f2d6361636865', 'hex')), [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
    ['cache-control', 'no-cache'],
  ], 'the dynamic table entry of the first request is referenced');
  const huff = new HpackDecoder();
  t.same(huff.decode(Buffer.from('828684418cf1e3c2e5f23a6ba0ab90f4ff', 'hex')), [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
  ]);
  t.same(huff.decode(Buffer.from('828684be5886a8eb10649cbf', 'hex')), [
    [':method', 'GET'],
    [':scheme', 'http'],
    [':path', '/'],
    [':authority', 'www.example.com'],
    ['cache-control', 'no-cache'],
  ]);
});

t.test('malformed header blocks are errors, not crashes', async (t) => {
  const bad = [
    '80', // index 0
    'ff00', // index beyond both tables
    '3fe1ff', // a table size update beyond the 4096 allowed
    '410f7777', // a string shorter than its length
    '41ff', // an integer cut off
    '4181ff', // Huffman padding of 8 bits
    '418400000000', // Huffman code 0s that end in the middle of a symbol
    '41ffffffff0f' + 'ff', // an integer too large
  ];
  for (const hex of bad) t.throws(() => new HpackDecoder().decode(Buffer.from(hex, 'hex')), { name: 'HpackError' }, hex);
});

/** Capture the header blocks a real nghttp2 client sends, with the table size we advertise. */
async function capture(tableSize: number, requests: Record<string, string>[]): Promise<Buffer[]> {
  const blocks: Buffer[] = [];
  const server = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    let preface = false;
    const settings = Buffer.alloc(6);
    settings.writeUInt16BE(1, 0);
    settings.writeUInt32BE(tableSize, 2);
    sock.write(frame(T.SETTINGS, 0, 0, settings));
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!preface) {
        if (buf.length < PREFACE.length) return;
        buf = buf.subarray(PREFACE.length);
        preface = true;
      }
      let block: Buffer[] = [];
      while (buf.length >= FRAME_HEADER) {
        const f = readHead(buf, 0);
        if (buf.length < FRAME_HEADER + f.length) break;
        const payload = buf.subarray(FRAME_HEADER, FRAME_HEADER + f.length);
        if (f.type === T.SETTINGS && !(f.flags & F.ACK)) sock.write(frame(T.SETTINGS, F.ACK, 0));
        if (f.type === T.HEADERS) block = [headersFragment(payload, f.flags)!];
        if (f.type === T.CONTINUATION) block.push(payload);
        if ((f.type === T.HEADERS || f.type === T.CONTINUATION) && f.flags & F.END_HEADERS) {
          blocks.push(Buffer.concat(block));
          // Answer 204 so that the client goes on.
          sock.write(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, f.stream, Buffer.from([0x80 | 9]))); // :status 204 (static 9)
        }
        buf = buf.subarray(FRAME_HEADER + f.length);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const s = http2.connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
  for (const h of requests) {
    await new Promise<void>((resolve, reject) => {
      const r = s.request(h);
      r.on('response', () => undefined);
      r.on('close', () => resolve());
      r.on('error', reject);
      r.resume();
    });
  }
  s.destroy();
  server.close();
  return blocks;
}

t.test("nghttp2's blocks (Huffman, indexing, eviction) decode to what was sent", async (t) => {
  const requests: Record<string, string>[] = [];
  for (let i = 0; i < 60; i++) {
    requests.push({
      ':path': `/items/${i % 7}?q=${'x'.repeat(i)}`,
      'x-user': i % 3 ? 'alice' : 'bob',
      'x-trace': `trace-${i}-${'0123456789abcdef'.repeat(i % 5)}`,
      'user-agent': 'rdbg-test/1.0',
      cookie: `session=${i % 4}`,
    });
  }
  for (const tableSize of [4096, 200, 0]) {
    const blocks = await capture(tableSize, requests);
    t.equal(blocks.length, requests.length, `table size ${tableSize}: every request captured`);
    const dec = new HpackDecoder(tableSize);
    blocks.forEach((b, i) => {
      const got = Object.fromEntries(dec.decode(b)!.filter(([k]) => !k.startsWith(':') || k === ':path'));
      t.same(got, requests[i], `table size ${tableSize}, request ${i}`);
    });
  }
});

t.test('what encodeHeaders writes, nghttp2 reads, and it changes no table', async (t) => {
  const server = http2.createServer();
  const got: http2.IncomingHttpHeaders[] = [];
  server.on('stream', (stream, headers) => {
    got.push(headers);
    stream.respond({ ':status': 200 });
    stream.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const sock = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  t.teardown(() => sock.destroy());
  sock.on('data', () => undefined);
  const block = (path: string, extra: [string, string][]): Buffer =>
    encodeHeaders([[':method', 'GET'], [':scheme', 'http'], [':authority', 'x'], [':path', path], ...extra]);
  sock.write(
    Buffer.concat([
      PREFACE,
      frame(T.SETTINGS, 0, 0),
      frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1, block('/one', [['x-custom', 'v'.repeat(300)], ['accept', 'text/plain']])),
      frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 3, block('/two', [['x-custom', 'w']])),
    ]),
  );
  while (got.length < 2) await new Promise((r) => setTimeout(r, 20));
  t.equal(got[0][':path'], '/one');
  t.equal(got[0]['x-custom'], 'v'.repeat(300));
  t.equal(got[0]['accept'], 'text/plain');
  t.equal(got[1][':path'], '/two');
  t.equal(got[1]['x-custom'], 'w');
  t.equal(got[1]['accept'], undefined, 'nothing of the first block was kept for the second');
});
