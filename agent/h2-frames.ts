/** HTTP/2 frames (RFC 9113 section 4 and 6): types, flags, and building the ones the agent writes. */

export const FRAME_HEADER = 9;
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const T = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const F = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

export const E = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  ENHANCE_YOUR_CALM: 0xb,
} as const;

export const SETTING = { HEADER_TABLE_SIZE: 1, INITIAL_WINDOW_SIZE: 4, MAX_FRAME_SIZE: 5 } as const;

export const MAX_WINDOW = 2 ** 31 - 1;
export const DEFAULT_WINDOW = 65_535;
export const DEFAULT_MAX_FRAME = 16_384;

/** A frame's header, read from `buf` at `at`. */
export interface FrameHead {
  length: number;
  type: number;
  flags: number;
  stream: number;
}

export function readHead(buf: Buffer, at: number): FrameHead {
  return { length: buf.readUIntBE(at, 3), type: buf[at + 3], flags: buf[at + 4], stream: buf.readUInt32BE(at + 5) & 0x7fffffff };
}

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const f = Buffer.allocUnsafe(FRAME_HEADER + payload.length);
  f.writeUIntBE(payload.length, 0, 3);
  f[3] = type;
  f[4] = flags;
  f.writeUInt32BE(stream & 0x7fffffff, 5);
  payload.copy(f, FRAME_HEADER);
  return f;
}

export function windowUpdate(stream: number, increment: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(increment & 0x7fffffff, 0);
  return frame(T.WINDOW_UPDATE, 0, stream, p);
}

export function rstStream(stream: number, code: number): Buffer {
  const p = Buffer.allocUnsafe(4);
  p.writeUInt32BE(code, 0);
  return frame(T.RST_STREAM, 0, stream, p);
}

export function goaway(lastStream: number, code: number, debug = ''): Buffer {
  const d = Buffer.from(debug, 'utf8');
  const p = Buffer.allocUnsafe(8 + d.length);
  p.writeUInt32BE(lastStream & 0x7fffffff, 0);
  p.writeUInt32BE(code, 4);
  d.copy(p, 8);
  return frame(T.GOAWAY, 0, 0, p);
}

/** A header block as HEADERS and CONTINUATION frames of at most `maxFrame` bytes. */
export function headerFrames(stream: number, block: Buffer, endStream: boolean, maxFrame: number): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  do {
    const part = block.subarray(at, at + maxFrame);
    at += part.length;
    const last = at >= block.length;
    const type = out.length === 0 ? T.HEADERS : T.CONTINUATION;
    const flags = (last ? F.END_HEADERS : 0) | (type === T.HEADERS && endStream ? F.END_STREAM : 0);
    out.push(frame(type, flags, stream, part));
  } while (at < block.length);
  return out;
}

/** The header block fragment of a HEADERS frame's payload (without padding and priority), or undefined when the padding is longer than the frame. */
export function headersFragment(payload: Buffer, flags: number): Buffer | undefined {
  let start = 0;
  let end = payload.length;
  if (flags & F.PADDED) {
    if (payload.length < 1) return undefined;
    end -= payload[0];
    start = 1;
  }
  if (flags & F.PRIORITY) start += 5;
  return start <= end ? payload.subarray(start, end) : undefined;
}

/** The data of a DATA frame's payload (without padding), or undefined when the padding is longer than the frame. */
export function dataOf(payload: Buffer, flags: number): Buffer | undefined {
  if (!(flags & F.PADDED)) return payload;
  if (payload.length < 1 || payload[0] >= payload.length) return undefined;
  return payload.subarray(1, payload.length - payload[0]);
}
