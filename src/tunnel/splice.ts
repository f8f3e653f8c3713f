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

const ignore = (): void => undefined;

/**
 * Mark an end whose dial succeeded and that waits for its join (the kernel
 * has yet to hand over the local connection, a user has yet to be answered):
 * an error meanwhile, such as the connection to the manager reset, closes
 * that one end, never the process. splice() then finds it closed.
 */
export function parked<T extends FlowEnd>(end: T): T {
  end.on('error', ignore);
  return end;
}

export interface SpliceOptions {
  counters?: ByteCounters;
  /** Turns each chunk carried from b to a into what is written to a (a copy, when it differs). */
  mapBA?: (chunk: Buffer) => Buffer;
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
  new Splice(a, b, opts);
}

/** The splice an end belongs to, for the listeners below (shared by every flow, so a flow adds no closures). */
const SPLICE = Symbol('rdbg.splice');
type Member = FlowEnd & { [SPLICE]?: Splice };

function onEnd(this: Member): void {
  this[SPLICE]?.ended(this);
}
function onError(this: Member, err: NodeJS.ErrnoException): void {
  this[SPLICE]?.errored(this, err);
}
function onClose(this: Member): void {
  this[SPLICE]?.closedEnd(this);
}
/** A chunk read by an end without a fast reader. */
function onData(this: Member, chunk: Buffer): void {
  this[SPLICE]?.carryChunk(this, chunk);
}
/** The end written to took its queue: read its peer again. */
function onDrain(this: Member): void {
  this[SPLICE]?.peer(this).resume();
}

/**
 * One splice's state. A daemon holds thousands of idle flows, so a flow costs
 * this object and nothing else: the listeners are functions shared by all
 * flows, which find it on their end (`this`), and the deferred 'end' is a
 * static function with arguments. Only an end with a fast reader (a few
 * dozen at most, see fast-socket.ts) gets closures of its own.
 */
class Splice {
  private aEnded = false; // a sent its FIN
  private bEnded = false;
  private aClosed = false;
  private bClosed = false;
  private sentAB = 0;
  private done = false;
  private pendingA?: NodeJS.Immediate;
  private pendingB?: NodeJS.Immediate;

  constructor(
    private readonly a: FlowEnd,
    private readonly b: FlowEnd,
    private readonly opts: SpliceOptions,
  ) {
    // An end that closed while it waited for its join emits nothing more: the flow fails now.
    if (a.destroyed || b.destroyed) {
      this.fail(`${a.destroyed ? 'the local' : 'the remote'} end closed before the flow was joined`);
      return;
    }
    for (const x of [a, b] as Member[]) {
      x[SPLICE] = this;
      x.on('end', onEnd);
      x.on('error', onError);
      x.on('close', onClose);
    }
    this.carry(a, b, true);
    this.carry(b, a, false);
    a.resume();
    b.resume();
  }

  peer(x: FlowEnd): FlowEnd {
    return x === this.a ? this.b : this.a;
  }

  private finish(err?: string): void {
    if (this.done) return;
    this.done = true;
    this.opts.onDone?.(err);
  }

  private fail(why: string): void {
    reset(this.a);
    reset(this.b);
    this.finish(why);
  }

  private counted(ab: boolean, n: number): void {
    const { counters } = this.opts;
    if (ab) {
      this.sentAB += n;
      if (counters) counters.bytesOut += n;
    } else {
      this.opts.countBA?.(n);
      if (counters) counters.bytesIn += n;
    }
  }

  private endBFirst(): void {
    if (!this.bEnded && !this.b.destroyed) this.opts.onClosedFirstB?.();
    this.b.end();
  }

  private aEnd(): void {
    this.aEnded = true;
    if (this.bEnded) return void this.b.end();
    if (!this.opts.halfCloseB) return this.endBFirst();
    this.opts.halfCloseB(this.sentAB).then(
      (ok) => ok || this.endBFirst(),
      () => this.endBFirst(),
    );
  }

  private bEnd(): void {
    this.bEnded = true;
    this.a.end();
    if (this.aEnded && this.opts.halfCloseB) this.b.end(); // its FIN was held back
  }

  private pending(x: FlowEnd): NodeJS.Immediate | undefined {
    return x === this.a ? this.pendingA : this.pendingB;
  }

  private setPending(x: FlowEnd, p: NodeJS.Immediate | undefined): void {
    if (x === this.a) this.pendingA = p;
    else this.pendingB = p;
  }

  /** x's end, passed on. */
  private static runEnd(s: Splice, x: FlowEnd): void {
    s.setPending(x, undefined);
    if (x === s.a) s.aEnd();
    else s.bEnd();
  }

  private static deferEnd(s: Splice, x: FlowEnd): void {
    s.setPending(x, setImmediate(Splice.runEnd, s, x));
  }

  ended(x: FlowEnd): void {
    if (isStream(x)) this.setPending(x, setImmediate(Splice.deferEnd, this, x));
    else Splice.runEnd(this, x);
  }

  errored(x: FlowEnd, err: NodeJS.ErrnoException): void {
    clearImmediate(this.pending(x));
    this.setPending(x, undefined);
    this.fail(`${isStream(x) ? 'stream' : 'socket'}: ${err.code ?? err.message}`);
  }

  closedEnd(x: FlowEnd): void {
    const p = this.pending(x);
    if (p) {
      clearImmediate(p);
      if (isStream(x) && x.rstCode === http2.constants.NGHTTP2_NO_ERROR) Splice.runEnd(this, x);
      else this.setPending(x, undefined);
    }
    if (x === this.a) this.aClosed = true;
    else this.bClosed = true;
    if (this.done) return;
    if (isStream(x) && x.rstCode !== http2.constants.NGHTTP2_NO_ERROR) return this.fail(`stream reset (code ${x.rstCode})`);
    if (this.aEnded && this.bEnded) {
      if (this.aClosed && this.bClosed) this.finish();
    } else if (!(x === this.a && this.aEnded && !this.bClosed && this.opts.halfClosedB?.())) this.fail('connection closed');
  }

  /** A chunk `from` read (without a fast reader), written to its peer. */
  carryChunk(from: FlowEnd, chunk: Buffer): void {
    const ab = from === this.a;
    const d = !ab && this.opts.mapBA ? this.opts.mapBA(chunk) : chunk;
    const more = (ab ? this.b : this.a).write(d);
    this.counted(ab, d.length);
    if (!more) from.pause();
  }

  /** Carry from -> to with backpressure, counting each chunk once it is handed to `to` (ab: a -> b). */
  private carry(from: FlowEnd, to: FlowEnd, ab: boolean): void {
    if (isStream(from)) widenStreamBuffer(from);
    const fr = fastReader(from);
    if (!fr) {
      from.on('data', onData);
      to.on('drain', onDrain);
      return;
    }
    // (mapBA is called on the options, as every callback: they may be an object's methods.)
    const opts = ab ? undefined : this.opts;
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
    fr.sink = (read: Buffer): boolean => {
      const chunk = opts?.mapBA ? opts.mapBA(read) : read;
      sent++;
      to.write(chunk, onWritten);
      this.counted(ab, chunk.length);
      if (to.writableLength === 0) return true;
      waitingFor = sent;
      return false;
    };
    fr.wake = undefined;
    for (const stashed of fr.stash.splice(0)) {
      const c = opts?.mapBA ? opts.mapBA(stashed) : stashed;
      sent++;
      to.write(c, onWritten); // copies: they may wait in the queue
      this.counted(ab, c.length);
    }
  }
}
