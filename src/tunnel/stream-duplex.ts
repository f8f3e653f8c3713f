import { Duplex } from 'node:stream';
import { errorMessage } from '../core/errors';
import type { ByteCounters } from './flow-pipe';
import { ProtocolViolation, type TunnelMessage__Output, type TunnelStream } from './messages';

export interface StreamDuplexOptions {
  /**
   * Keep the writable side open after the peer's close_write (default true,
   * as a TCP socket created with allowHalfOpen). HTTP client pools want false:
   * a peer that closes an idle keep-alive flow then closes the whole Duplex.
   */
  allowHalfOpen?: boolean;
  counters?: ByteCounters;
}

const STREAM_WINDOW = 1024 * 1024;

/** The peer reset the flow (a tunnel `reset`, or the tunnel broke): like ECONNRESET on a socket. */
export class TunnelResetError extends Error {
  readonly code = 'ECONNRESET';
}

/**
 * A dialled tunnel stream as a node Duplex, so that `http.request` and
 * `http2.connect` can run over it (`createConnection`). The semantics are
 * those of pipeFlow: data with backpressure, end() <-> close_write, a reset
 * or a broken stream destroys the Duplex, and destroying it before both sides
 * closed sends a reset. It also answers the few net.Socket methods that
 * http's Agent calls (setTimeout, setKeepAlive, setNoDelay, ref, unref).
 */
export class StreamDuplex extends Duplex {
  private sentClose = false;
  private gotClose = false;
  /** The tunnel stream is released: ended cleanly, reset, or broken. */
  private over = false;
  private paused = false;
  private pendingWrite?: (err?: Error | null) => void;
  private idleMs = 0;
  private idleTimer?: NodeJS.Timeout;
  private readonly counters?: ByteCounters;

  constructor(
    private readonly stream: TunnelStream,
    opts: StreamDuplexOptions = {},
  ) {
    // Tunnel messages are up to 64 KB and cost per message: buffer a few of them each way.
    super({ allowHalfOpen: opts.allowHalfOpen ?? true, readableHighWaterMark: STREAM_WINDOW, writableHighWaterMark: STREAM_WINDOW });
    this.counters = opts.counters;
    stream.on('data', (msg) => this.onMessage(msg));
    stream.on('drain', () => {
      const cb = this.pendingWrite;
      this.pendingWrite = undefined;
      cb?.();
    });
    stream.on('end', () => {
      // A peer that ends without close_write has stopped sending all the same.
      if (!this.gotClose) this.peerClosed();
    });
    stream.on('error', (err) => {
      if (this.over) return;
      this.over = true;
      this.destroy(new TunnelResetError(`tunnel: ${err.details ?? errorMessage(err)}`));
    });
    stream.resume();
  }

  get timeout(): number {
    return this.idleMs;
  }

  private onMessage(msg: TunnelMessage__Output): void {
    if (this.over) return;
    switch (msg.msg) {
      case 'data': {
        const data = msg.data!;
        if (this.counters) this.counters.bytesIn += data.length;
        this.touch();
        if (!this.push(data)) {
          this.paused = true;
          this.stream.pause();
        }
        return;
      }
      case 'close_write':
        this.peerClosed();
        return;
      case 'reset':
        this.over = true;
        this.endStream();
        this.destroy(new TunnelResetError(msg.reset?.message || 'reset by peer'));
        return;
      default:
        this.destroy(new ProtocolViolation(`unexpected tunnel message "${msg.msg ?? 'empty'}" in an open flow`));
    }
  }

  private peerClosed(): void {
    if (this.gotClose) return;
    this.gotClose = true;
    this.push(null);
    this.maybeRelease();
  }

  private maybeRelease(): void {
    if (this.sentClose && this.gotClose && !this.over) {
      this.over = true;
      this.endStream();
    }
  }

  private endStream(): void {
    try {
      this.stream.end();
    } catch {
      // the call is already gone
    }
  }

  override _read(): void {
    if (this.paused) {
      this.paused = false;
      this.stream.resume();
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.send(chunk, cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    // Each tunnel message costs ~10 us: coalesce what the writer queued.
    this.send(chunks.length === 1 ? chunks[0].chunk : Buffer.concat(chunks.map((c) => c.chunk)), cb);
  }

  private send(data: Buffer, cb: (err?: Error | null) => void): void {
    if (this.over) {
      cb(new TunnelResetError('the flow is closed'));
      return;
    }
    if (this.counters) this.counters.bytesOut += data.length;
    this.touch();
    if (this.stream.write({ data })) cb();
    else this.pendingWrite = cb;
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.over) {
      this.sentClose = true;
      try {
        this.stream.write({ close_write: {} });
      } catch (err) {
        cb(err as Error);
        return;
      }
      this.maybeRelease();
    }
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.clearIdle();
    if (!this.over) {
      this.over = true;
      try {
        this.stream.write({ reset: { message: err ? errorMessage(err) : 'closed before the flow ended' } });
      } catch {
        // the call is already gone
      }
      this.endStream();
    }
    const pending = this.pendingWrite;
    this.pendingWrite = undefined;
    pending?.(err ?? new TunnelResetError('the flow is closed'));
    cb(err);
  }

  // net.Socket look-alikes for http's Agent and ClientRequest.

  setTimeout(ms: number, cb?: () => void): this {
    this.idleMs = ms;
    if (cb) {
      if (ms === 0) this.removeListener('timeout', cb);
      else this.once('timeout', cb);
    }
    this.touch();
    return this;
  }

  private touch(): void {
    this.clearIdle();
    if (this.idleMs > 0 && !this.destroyed) {
      this.idleTimer = setTimeout(() => this.emit('timeout'), this.idleMs);
      this.idleTimer.unref();
    }
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  setNoDelay(): this {
    return this;
  }

  setKeepAlive(): this {
    return this;
  }

  ref(): this {
    return this;
  }

  unref(): this {
    return this;
  }
}
