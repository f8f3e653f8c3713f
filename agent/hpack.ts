import { HUFFMAN_LENGTHS, STATIC_TABLE } from './hpack-tables';

/**
 * HPACK (RFC 7541) for an HTTP/2 proxy that routes per stream: a decoder that
 * follows one peer's compression context, and an encoder that never touches
 * any context (static-table names, literals without indexing), so frames
 * the agent adds or rewrites leave the receiver's dynamic table as the
 * original sender left it. The npm HPACK packages are stream-based and
 * unmaintained; this is the part of the RFC a router needs, checked against
 * the RFC's own examples (test/unit/hpack.test.ts) and h2spec's hpack cases.
 */

export class HpackError extends Error {
  override name = 'HpackError';
}

export type HeaderList = [string, string][];

const EOS = 256;
// Canonical Huffman decoding: per code length, the first code and where its symbols start.
const HUFF_MAX = 30;
const firstCode: number[] = new Array<number>(HUFF_MAX + 2).fill(0);
const countOf: number[] = new Array<number>(HUFF_MAX + 2).fill(0);
const offsetOf: number[] = new Array<number>(HUFF_MAX + 2).fill(0);
const symbols: number[] = [];
{
  const lengths = [...HUFFMAN_LENGTHS, 30];
  const order = lengths.map((len, sym) => ({ len, sym })).sort((a, b) => a.len - b.len || a.sym - b.sym);
  for (const { len, sym } of order) {
    countOf[len]++;
    symbols.push(sym);
  }
  let code = 0;
  let offset = 0;
  for (let len = 1; len <= HUFF_MAX; len++) {
    firstCode[len] = code;
    offsetOf[len] = offset;
    code = (code + countOf[len]) * 2;
    offset += countOf[len];
  }
}

function huffmanDecode(buf: Buffer, start: number, end: number): string {
  let out = '';
  let code = 0;
  let len = 0;
  for (let i = start; i < end; i++) {
    const byte = buf[i];
    for (let b = 7; b >= 0; b--) {
      code = code * 2 + ((byte >> b) & 1);
      len++;
      const k = code - firstCode[len];
      if (k < countOf[len]) {
        const sym = symbols[offsetOf[len] + k];
        if (sym === EOS) throw new HpackError('Huffman string contains EOS');
        out += String.fromCharCode(sym);
        code = 0;
        len = 0;
      } else if (len >= HUFF_MAX) throw new HpackError('bad Huffman code');
    }
  }
  // Padding: fewer than 8 bits, all ones (a prefix of EOS).
  if (len > 7 || code !== 2 ** len - 1) throw new HpackError('bad Huffman padding');
  return out;
}

/** A decoding position in one header block. */
class Reader {
  constructor(
    readonly buf: Buffer,
    public at = 0,
  ) {}

  get done(): boolean {
    return this.at >= this.buf.length;
  }

  int(prefixBits: number): number {
    if (this.done) throw new HpackError('truncated integer');
    const max = 2 ** prefixBits - 1;
    let v = this.buf[this.at++] & max;
    if (v < max) return v;
    let shift = 0;
    for (;;) {
      if (this.done) throw new HpackError('truncated integer');
      const b = this.buf[this.at++];
      v += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (shift > 28) throw new HpackError('integer too large');
      if ((b & 0x80) === 0) return v;
    }
  }

  string(): string {
    if (this.done) throw new HpackError('truncated string');
    const huffman = (this.buf[this.at] & 0x80) !== 0;
    const n = this.int(7);
    if (this.at + n > this.buf.length) throw new HpackError('truncated string');
    const s = huffman ? huffmanDecode(this.buf, this.at, this.at + n) : this.buf.toString('latin1', this.at, this.at + n);
    this.at += n;
    return s;
  }
}

/** The receiving side of one peer's header compression context. */
export class HpackDecoder {
  private readonly table: [string, string][] = [];
  private size = 0;
  private limit: number;

  /** maxSize: the SETTINGS_HEADER_TABLE_SIZE the encoder was told (4096 by default). */
  constructor(private maxSize = 4096) {
    this.limit = maxSize;
  }

  /** The receiver advertised a new SETTINGS_HEADER_TABLE_SIZE. */
  setMaxSize(n: number): void {
    this.maxSize = n;
  }

  /**
   * Decode a whole header block. `maxListBytes` caps what is kept (the
   * context is still updated past it): the result is then undefined.
   */
  decode(block: Buffer, maxListBytes = 256 * 1024): HeaderList | undefined {
    const r = new Reader(block);
    const out: HeaderList = [];
    let bytes = 0;
    let fields = false;
    while (!r.done) {
      const b = block[r.at];
      let field: [string, string];
      if (b & 0x80) {
        const idx = r.int(7);
        field = this.entry(idx);
      } else if ((b & 0xe0) === 0x20) {
        if (fields) throw new HpackError('table size update after a header field');
        const n = r.int(5);
        if (n > this.maxSize) throw new HpackError(`table size update to ${n} beyond ${this.maxSize}`);
        this.limit = n;
        this.evict(0);
        continue;
      } else {
        const incremental = (b & 0xc0) === 0x40;
        const idx = r.int(incremental ? 6 : 4);
        const name = idx === 0 ? r.string() : this.entry(idx)[0];
        field = [name, r.string()];
        if (incremental) this.add(field);
      }
      fields = true;
      bytes += field[0].length + field[1].length + 32;
      if (bytes <= maxListBytes) out.push(field);
    }
    return bytes <= maxListBytes ? out : undefined;
  }

  private entry(idx: number): [string, string] {
    if (idx === 0) throw new HpackError('index 0');
    if (idx <= STATIC_TABLE.length) return STATIC_TABLE[idx - 1] as [string, string];
    const e = this.table[idx - STATIC_TABLE.length - 1];
    if (!e) throw new HpackError(`index ${idx} beyond the tables`);
    return e;
  }

  private add(field: [string, string]): void {
    const n = field[0].length + field[1].length + 32;
    this.evict(n);
    if (n > this.limit) return; // larger than the table: it empties it and is not kept
    this.table.unshift(field);
    this.size += n;
  }

  private evict(room: number): void {
    while (this.table.length && this.size + room > this.limit) {
      const [name, value] = this.table.pop()!;
      this.size -= name.length + value.length + 32;
    }
  }
}

const STATIC_NAME = new Map<string, number>();
STATIC_TABLE.forEach(([name], i) => {
  if (!STATIC_NAME.has(name)) STATIC_NAME.set(name, i + 1);
});

function writeInt(out: number[], prefixBits: number, first: number, v: number): void {
  const max = 2 ** prefixBits - 1;
  if (v < max) {
    out.push(first | v);
    return;
  }
  out.push(first | max);
  v -= max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/**
 * A header block that leaves the receiver's dynamic table as it is: every
 * field a literal without indexing, its name from the static table when it
 * is there. Names and values are latin1 strings (what the decoder gives).
 */
export function encodeHeaders(fields: HeaderList): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const head: number[] = [];
    const idx = STATIC_NAME.get(name);
    writeInt(head, 4, 0x00, idx ?? 0);
    parts.push(Buffer.from(head));
    if (idx === undefined) parts.push(literal(name));
    parts.push(literal(value));
  }
  return Buffer.concat(parts);
}

function literal(s: string): Buffer {
  const len: number[] = [];
  const body = Buffer.from(s, 'latin1');
  writeInt(len, 7, 0x00, body.length);
  return Buffer.concat([Buffer.from(len), body]);
}
