/**
 * HTTP/2 client conversations as bytes, to mutate: the preface, SETTINGS,
 * a HEADERS frame (HPACK literals, no Huffman, no table) and DATA.
 */
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** A header block of "literal without indexing, new name" entries. */
export function hpack(headers: [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [n, v] of headers) {
    const name = Buffer.from(n, 'latin1');
    const value = Buffer.from(v, 'latin1');
    if (name.length > 126 || value.length > 126) throw new RangeError('hpack(): names and values up to 126 bytes');
    parts.push(Buffer.from([0x00, name.length]), name, Buffer.from([value.length]), value);
  }
  return Buffer.concat(parts);
}

export const SETTINGS = 4;
export const HEADERS = 1;
export const DATA = 0;
export const END_STREAM = 1;
export const END_HEADERS = 4;

/** A whole client conversation: preface, SETTINGS, one request on stream 1 with `body` as DATA. */
export function conversation(headers: [string, string][], body: Buffer, end = true): Buffer {
  return Buffer.concat([
    PREFACE,
    frame(SETTINGS, 0, 0, Buffer.alloc(0)),
    frame(HEADERS, END_HEADERS | (body.length ? 0 : END_STREAM), 1, hpack(headers)),
    ...(body.length ? [frame(DATA, end ? END_STREAM : 0, 1, body)] : []),
  ]);
}

/** A gRPC message: compressed flag, 32-bit length, bytes. */
export function grpcMessage(msg: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(msg.length, 1);
  return Buffer.concat([h, msg]);
}
