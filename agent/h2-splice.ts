import type { Socket } from 'node:net';
import { splice } from '../src/tunnel/splice';
import { FRAME_HEADER, goaway } from './h2-frames';

/** The graceful-shutdown notice of RFC 9113 6.8: no stream is refused, new ones go elsewhere. */
const ANY_STREAM = 0x7fffffff;

/** A GOAWAY frame with NO_ERROR that refuses no stream. */
export const goawayFrame = (): Buffer => goaway(ANY_STREAM, 0);

/**
 * Where the frames of one direction of an HTTP/2 connection begin, without
 * reading them: per frame, its 9-byte header is looked at and its payload
 * skipped. `skip` returns the offset in the chunk of the first frame
 * boundary at or after `from`, or -1.
 */
export class FrameCursor {
  /** Payload bytes of the current frame still to come. */
  private left = 0;
  /** Bytes of a frame header split across chunks. */
  private partial: Buffer | undefined;

  get atBoundary(): boolean {
    return this.left === 0 && this.partial === undefined;
  }

  /** Walk the chunk; returns the offset of the first boundary at or after `from` (-1: none), the walk goes on to the end. */
  skip(chunk: Buffer, from = Infinity): number {
    let first = -1;
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.left > 0) {
        const k = Math.min(this.left, n - i);
        this.left -= k;
        i += k;
        continue;
      }
      if (first === -1 && this.partial === undefined && i >= from) first = i;
      if (this.partial !== undefined || n - i < FRAME_HEADER) {
        const have = this.partial ?? Buffer.alloc(0);
        const take = Math.min(FRAME_HEADER - have.length, n - i);
        const head = Buffer.concat([have, chunk.subarray(i, i + take)]);
        i += take;
        if (head.length < FRAME_HEADER) {
          this.partial = head;
          continue;
        }
        this.partial = undefined;
        this.left = head.readUIntBE(0, 3);
        continue;
      }
      this.left = chunk.readUIntBE(i, 3);
      i += FRAME_HEADER;
    }
    if (first === -1 && this.atBoundary && n >= from) first = n;
    return first;
  }
}

/**
 * An h2c connection on a port that no intercept can match: the caller's and
 * the app's bytes are spliced as they are, so the two speak HTTP/2 to each
 * other with nothing in between. Only the frame boundaries of the app's
 * direction are followed, so that when an intercept arrives the caller can
 * be told, between two of the app's frames, to open its next streams on a new
 * connection (a GOAWAY that refuses no stream), which the agent then routes
 * per stream. Streams already open finish on the app.
 */
export class SplicedH2 {
  private readonly cursor = new FrameCursor();
  private state: 'watching' | 'pending' | 'sent' = 'watching';

  constructor(
    private readonly caller: Socket,
    app: Socket,
    onClose: () => void,
  ) {
    splice(caller, app, { mapBA: (chunk) => this.fromApp(chunk), onDone: onClose });
  }

  /** Send the caller away to a new connection at the next frame boundary of the app's direction. */
  drain(): void {
    if (this.state !== 'watching') return;
    if (this.cursor.atBoundary && this.caller.writable) {
      this.state = 'sent';
      this.caller.write(goawayFrame());
    } else this.state = 'pending';
  }

  private fromApp(chunk: Buffer): Buffer {
    if (this.state === 'sent') return chunk;
    if (this.state === 'watching') {
      this.cursor.skip(chunk);
      return chunk;
    }
    const at = this.cursor.skip(chunk, 0);
    if (at === -1) return chunk;
    this.state = 'sent';
    return Buffer.concat([chunk.subarray(0, at), goawayFrame(), chunk.subarray(at)]);
  }
}
