/**
 * Shared pieces of the fuzz tier: how many cases to run, the seed, and a
 * mutation arbitrary that takes well-formed messages and flips, truncates,
 * extends, splices and overwrites their bytes.
 *
 * RDBG_FUZZ_RUNS is the number of cases of each in-process property (default
 * 1000, `make fuzz` sets 20000); the live targets send runs()-scaled counts.
 * RDBG_FUZZ_SEED replays a run (every test prints the seed it used).
 */
import fc from 'fast-check';

export const DEFAULT_RUNS = 1000;
export const RUNS = positive(process.env.RDBG_FUZZ_RUNS) ?? DEFAULT_RUNS;
export const SEED = positive(process.env.RDBG_FUZZ_SEED) ?? 0x5eed_f022;

function positive(v: string | undefined): number | undefined {
  return v !== undefined && /^\d+$/.test(v) && Number(v) > 0 ? Number(v) : undefined;
}

/** `base` cases at the default RUNS, scaled with it (at least 1). */
export function runs(base: number): number {
  return Math.max(1, Math.round((base * RUNS) / DEFAULT_RUNS));
}

/** fast-check parameters of every property: the shared seed and count, and the failing case in the message. */
export function params<T>(numRuns = RUNS): fc.Parameters<T> {
  return { numRuns, seed: SEED, endOnFailure: false, verbose: 1 };
}

/** Values that break length fields and counters. */
const EDGE16 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xfffe, 0xffff];

type Op = { kind: number; pos: number; val: number; bytes: Uint8Array };

const op: fc.Arbitrary<Op> = fc.record({
  kind: fc.integer({ min: 0, max: 8 }),
  pos: fc.nat(),
  val: fc.nat(),
  bytes: fc.uint8Array({ maxLength: 48 }),
});

function apply(input: Buffer, o: Op): Buffer {
  const b = Buffer.from(input);
  const at = b.length ? o.pos % b.length : 0;
  switch (o.kind) {
    case 0: // flip one bit
      if (b.length) b[at] ^= 1 << o.val % 8;
      return b;
    case 1: // overwrite a byte with an edge value
      if (b.length) b[at] = [0, 0xff, 0x7f, 0x80, 0x0a, 0x0d, 0x20][o.val % 7];
      return b;
    case 2: // overwrite a 16-bit field (a length, a count, a port) with an edge value
      if (b.length >= 2) b.writeUInt16BE(EDGE16[o.val % EDGE16.length], Math.min(at, b.length - 2));
      return b;
    case 3: // truncate
      return b.subarray(0, at);
    case 4: // extend with random bytes
      return Buffer.concat([b, o.bytes]);
    case 5: // insert random bytes
      return Buffer.concat([b.subarray(0, at), o.bytes, b.subarray(at)]);
    case 6: // delete a slice
      return Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + (o.val % 16))]);
    case 7: // duplicate a slice
      return Buffer.concat([b.subarray(0, at), b.subarray(at, at + 1 + (o.val % 32)), b.subarray(at)]);
    default: // random bytes over a run
      Buffer.from(o.bytes).copy(b, at);
      return b;
  }
}

/** Well-formed `seeds` with 1-4 mutations each, and now and then pure noise. */
export function mutated(seeds: Buffer[], maxNoise = 256): fc.Arbitrary<Buffer> {
  const fromSeed = fc
    .tuple(fc.constantFrom(...seeds), fc.array(op, { minLength: 1, maxLength: 4 }))
    .map(([seed, ops]) => ops.reduce(apply, seed));
  const noise = fc.uint8Array({ maxLength: maxNoise }).map((u) => Buffer.from(u));
  return fc.oneof({ arbitrary: fromSeed, weight: 6 }, { arbitrary: noise, weight: 1 });
}

/** `n` values of `arb`, reproducible from SEED (for live targets, where each case is a connection). */
export function sample<T>(arb: fc.Arbitrary<T>, n: number, salt = 0): T[] {
  return fc.sample(arb, { numRuns: n, seed: SEED + salt });
}

/** A byte stream cut at arbitrary places (TCP and WebSocket deliver it in any pieces). */
export function chunked(buf: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => (buf.length ? c % buf.length : 0)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let last = 0;
  for (const c of at) {
    if (c > last) out.push(buf.subarray(last, c));
    last = Math.max(last, c);
  }
  out.push(buf.subarray(last));
  return out;
}

/** Counts per target for the report line every test file prints. */
export function report(what: string, counts: Record<string, number>): string {
  return `${what}: ${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ')} (seed ${SEED}, RDBG_FUZZ_RUNS ${RUNS})`;
}
