import { createCipheriv, createHash } from 'node:crypto';
import { Readable } from 'node:stream';

const CHUNK = 256 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

/** A deterministic pseudo-random byte stream (AES-CTR keystream), so both ends can check a transfer. */
export function patternStream(total: number, seed: string): Readable {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  let left = total;
  return new Readable({
    highWaterMark: CHUNK,
    read() {
      if (left <= 0) return void this.push(null);
      const n = Math.min(CHUNK, left);
      left -= n;
      this.push(cipher.update(n === CHUNK ? ZEROS : ZEROS.subarray(0, n)));
    },
  });
}

export async function patternSha256(total: number, seed: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of patternStream(total, seed)) h.update(chunk as Buffer);
  return h.digest('hex');
}
