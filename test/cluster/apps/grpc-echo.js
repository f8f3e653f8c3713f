'use strict';
// gRPC echo service (echo.Echo/Say, see echo.proto) in plain Node: HTTP/2
// from node:http2 and a hand-written encoder for the two string fields, so
// the image needs no npm packages. Any gRPC client (grpc-js, grpcurl with
// -proto echo.proto) can call it. Env: PORT (50051).
const http2 = require('node:http2');
const os = require('node:os');

const port = Number(process.env.PORT || 50051);
const pod = process.env.POD_NAME || os.hostname();

function readVarint(buf, pos) {
  let v = 0; let shift = 0;
  for (;;) {
    if (pos >= buf.length) throw new Error('truncated varint');
    const b = buf[pos++];
    v += (b & 0x7f) * 2 ** shift;
    if (!(b & 0x80)) return [v, pos];
    shift += 7;
    if (shift > 35) throw new Error('varint too long');
  }
}

// Decodes the string fields of a protobuf message; skips other fields.
function decodeStrings(buf) {
  const out = {};
  let pos = 0;
  while (pos < buf.length) {
    let key; [key, pos] = readVarint(buf, pos);
    const field = Math.floor(key / 8); const wire = key & 7;
    if (wire === 2) {
      let len; [len, pos] = readVarint(buf, pos);
      if (pos + len > buf.length) throw new Error('truncated field');
      out[field] = buf.subarray(pos, pos + len).toString('utf8');
      pos += len;
    } else if (wire === 0) { [, pos] = readVarint(buf, pos); } else if (wire === 1) { pos += 8; } else if (wire === 5) { pos += 4; } else { throw new Error(`bad wire type ${wire}`); }
  }
  return out;
}

function varint(n) {
  const b = [];
  while (n > 0x7f) { b.push((n & 0x7f) | 0x80); n = Math.floor(n / 128); }
  b.push(n);
  return Buffer.from(b);
}

function encodeStrings(fields) {
  const parts = [];
  for (const [f, s] of Object.entries(fields)) {
    const data = Buffer.from(s, 'utf8');
    parts.push(varint(Number(f) * 8 + 2), varint(data.length), data);
  }
  return Buffer.concat(parts);
}

function frame(msg) {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(msg.length, 1);
  return Buffer.concat([h, msg]);
}

const server = http2.createServer();
server.on('stream', (stream, headers) => {
  stream.on('error', () => {});
  const fail = (code, message) => {
    if (stream.headersSent) stream.close(); else stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(code), 'grpc-message': encodeURIComponent(message) }, { endStream: true });
  };
  if (headers[':path'] !== '/echo.Echo/Say') { fail(12, `unknown method ${headers[':path']}`); return; }
  const chunks = [];
  stream.on('data', (c) => chunks.push(c));
  stream.on('end', () => {
    let req;
    try {
      const buf = Buffer.concat(chunks);
      if (buf.length < 5 || buf[0] !== 0) throw new Error('bad or compressed frame');
      const len = buf.readUInt32BE(1);
      if (buf.length < 5 + len) throw new Error('truncated message');
      req = decodeStrings(buf.subarray(5, 5 + len));
    } catch (e) { fail(3, e.message); return; }
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(frame(encodeStrings({ 1: req[1] || '', 2: pod })));
  });
});
server.listen(port, () => console.log(`grpc-echo listening on :${port}`));
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => { server.close(); process.exit(0); });
