import * as http2 from 'node:http2';
import type * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { fastReader, widenStreamBuffer } from './fast-socket';

/**
 * One end of a flow: a TCP socket (allowHalfOpen), an HTTP/2 stream, or any
 * other byte stream that allows half-open.
 */
export type FlowEnd = net.Socket | http2.Http2Stream | Duplex;

/** Bytes a splice carried: a -> b is out, b -> a is in. */
export interface ByteCounters {
  bytesOut: number;
  bytesIn: number;
}

/** A flow whose dial succeeded, waiting for its local socket. */
export interface JoinableFlow {
  join(sock: net.Socket, onDone: (err?: string) => void): void;
  cancel(): void;
}

function isStream(x: FlowEnd): x is http2.Http2Stream {
  return typeof (x as http2.Http2Stream).sendTrailers === 'function';
}

/**
 * Abort one end: RST for a TCP socket, RST_STREAM (CANCEL) for an HTTP/2
 * stream, destroy for anything else.
 */
export function reset(x: FlowEnd): void {
  if (isStream(x)) {
    if (!x.closed && !x.destroyed) x.close(http2.constants.NGHTTP2_CANCEL);
    return;
  }
  if (x.destroyed) return;
  const s = x as net.Socket;
  // libuv refuses an RST while our FIN is in flight (uv_tcp_close_reset: EINVAL) and node then leaks the handle.
  if (typeof s.resetAndDestroy === 'function' && !(s.writableEnded && !s.writableFinished)) {
    try {
      s.resetAndDestroy();
      return;
    } catch {
      // not connected yet: a plain close
    }
  }
  x.destroy();
}

export interface SpliceOptions {
  counters?: ByteCounters;
  /** Sees every chunk carried from b to a, once it is written to a (so a may be ended then). */
  countBA?: (n: number) => void;
  /**
   * When a ends while b is still open: tell the far end another way that a
   * sent `sentAB` bytes and no more, and leave b open until it ends too. Its
   * FIN then only answers the far end's, which keeps TIME_WAIT there (see
   * RawFlowBudget). Resolves false when that failed: b is then ended after all.
   */
  halfCloseB?: (sentAB: number) => Promise<boolean>;
  /**
   * The far side of halfCloseB: true once b's half-close arrived beside it
   * (and a was ended for it). b's own FIN only answers ours then, so a
   * closing before b ended is the normal end of the flow, not a failure.
   */
  halfClosedB?: () => boolean;
  /** Called when b gets a FIN from us before it sent one (its port then waits in TIME_WAIT here). */
  onClosedFirstB?: () => void;
  /** Runs once, when both ends are closed, with the reason when the flow did not end cleanly. */
  onDone?: (err?: string) => void;
}

/**
 * Join two ends both ways with backpressure. The close protocol, for every
 * kind of end:
 *   - a FIN (END_STREAM) on one is a FIN (END_STREAM) on the other: a half-close;
 *   - an error, a reset or a close before both directions ended resets the
 *     other end (RST, RST_STREAM CANCEL);
 *   - the flow is done when both ends are closed.
 * An HTTP/2 stream's 'end' is passed on two turns of the event loop later
 * (at once if the stream closes cleanly first): on a peer's RST_STREAM, Node
 * emits 'end' first and the close with its code one turn after, and a reset
 * must not reach the other end as a FIN.
 */
export function splice(a: FlowEnd, b: FlowEnd, opts: SpliceOptions = {}): void {
  const { counters, halfCloseB } = opts;
  let aEnded = false; // a sent its FIN
  let bEnded = false;
  let aClosed = false;
  let bClosed = false;
  let sentAB = 0;
  let done = false;
  const finish = (err?: string): void => {
    if (done) return;
    done = true;
    opts.onDone?.(err);
  };
  const fail = (why: string): void => {
    reset(a);
    reset(b);
    finish(why);
  };
  carry(a, b, (n) => {
    sentAB += n;
    if (counters) counters.bytesOut += n;
  });
  carry(b, a, (n) => {
    opts.countBA?.(n);
    if (counters) counters.bytesIn += n;
  });

  const endBFirst = (): void => {
    if (!bEnded && !b.destroyed) opts.onClosedFirstB?.();
    b.end();
  };
  const aEnd = (): void => {
    aEnded = true;
    if (bEnded) return void b.end();
    if (!halfCloseB) return endBFirst();
    halfCloseB(sentAB).then((ok) => ok || endBFirst(), endBFirst);
  };
  const bEnd = (): void => {
    bEnded = true;
    a.end();
    if (aEnded && halfCloseB) b.end(); // its FIN was held back
  };
  const closed = (x: FlowEnd): void => {
    if (x === a) aClosed = true;
    else bClosed = true;
    if (done) return;
    if (isStream(x) && x.rstCode !== http2.constants.NGHTTP2_NO_ERROR) return fail(`stream reset (code ${x.rstCode})`);
    if (aEnded && bEnded) {
      if (aClosed && bClosed) finish();
    } else if (!(x === a && aEnded && !bClosed && opts.halfClosedB?.())) fail('connection closed');
  };
  for (const [x, onEnd] of [[a, aEnd], [b, bEnd]] as const) {
    let pendingEnd: NodeJS.Immediate | undefined;
    const runEnd = (): void => {
      pendingEnd = undefined;
      onEnd();
    };
    x.on('end', () => {
      if (isStream(x)) pendingEnd = setImmediate(() => (pendingEnd = setImmediate(runEnd)));
      else onEnd();
    });
    x.on('error', (err: NodeJS.ErrnoException) => {
      clearImmediate(pendingEnd);
      pendingEnd = undefined;
      fail(`${isStream(x) ? 'stream' : 'socket'}: ${err.code ?? err.message}`);
    });
    x.on('close', () => {
      if (pendingEnd) {
        clearImmediate(pendingEnd);
        if (isStream(x) && x.rstCode === http2.constants.NGHTTP2_NO_ERROR) runEnd();
        else pendingEnd = undefined;
      }
      closed(x);
    });
  }
  a.resume();
  b.resume();
}

/** Carry from -> to with backpressure, counting each chunk once it is handed to `to`. */
function carry(from: FlowEnd, to: FlowEnd, count: (n: number) => void): void {
  if (isStream(from)) widenStreamBuffer(from);
  const fr = fastReader(from);
  if (!fr) {
    from.on('data', (d: Buffer) => {
      const more = to.write(d);
      count(d.length);
      if (!more) from.pause();
    });
    to.on('drain', () => from.resume());
    return;
  }
  // A fast reader's chunk lives in its buffer: when its write does not complete at once,
  // read again only after that very write is done (writes complete in order: counting them tells which).
  let sent = 0;
  let written = 0;
  let waitingFor = 0;
  const onWritten = (): void => {
    written++;
    if (waitingFor === 0 || written < waitingFor) return;
    waitingFor = 0;
    from.resume();
  };
  fr.sink = (chunk: Buffer): boolean => {
    sent++;
    to.write(chunk, onWritten);
    count(chunk.length);
    if (to.writableLength === 0) return true;
    waitingFor = sent;
    return false;
  };
  fr.wake = undefined;
  for (const c of fr.stash.splice(0)) {
    sent++;
    to.write(c, onWritten); // copies: they may wait in the queue
    count(c.length);
  }
}
