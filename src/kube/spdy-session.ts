/**
 * A client SPDY/3.1 session over any byte transport (here: the apiserver's
 * WebSocket tunnel): opens streams, multiplexes their frames, answers PINGs,
 * and keeps the flow-control books.
 *
 * Flow control: we announce larger receive windows than SPDY/3.1's 64 KiB
 * (SETTINGS for streams, a WINDOW_UPDATE for the session) and grant them back
 * as our readers consume, a WINDOW_UPDATE per half window: with 64 KiB that
 * was two tiny frames (and transport messages) per 32 KiB of data. The peer's
 * windows are honoured once it shows it does flow control (a WINDOW_UPDATE
 * or a SETTINGS initial window). moby/spdystream, the peer in Kubernetes,
 * never sends either and never looks at ours, so against it our sends are
 * paced by the transport alone, as kubectl's are. Reading is paced by pausing
 * the transport while any stream's reader is full, which stalls every stream
 * of the session (kubectl's spdystream blocks the same way).
 */
import { EventEmitter } from 'node:events';
import {
  DEFAULT_WINDOW, FLAG_FIN, FrameReader, FrameType, HeaderCodec, MAX_FRAME_LENGTH, RstStatus, SETTINGS_INITIAL_WINDOW_SIZE,
  SpdyProtocolError, dataFrameHeader, decodeHeaderBlock, encodeHeaderBlock, goAwayFrame, pingFrame, rstStreamFrame, settingsFrame, synStreamFrame,
  windowUpdateFrame, type ControlFrame, type Headers,
} from './spdy-frames';

/** What the session needs from the connection under it. */
export interface SpdyTransport {
  send(data: Buffer, cb?: (err?: Error) => void): void;
  /** bytes handed to send() not yet written to the socket */
  readonly bufferedAmount: number;
  pause(): void;
  resume(): void;
  close(): void;
}

export interface SpdySessionOptions {
  /** largest data frame payload we send (default 64 KiB) */
  maxDataFrame?: number;
  /** above this many bytes queued in the transport, writers wait (default 1 MiB) */
  sendHighWater?: number;
  /** how long open() waits for the SYN_REPLY (default 15 s) */
  replyTimeoutMs?: number;
  /** receive window we announce per stream (default 1 MiB) and for the session (default 16 MiB) */
  streamWindow?: number;
  sessionWindow?: number;
}

/** What a stream's owner hears. */
export interface StreamHandler {
  data(payload: Buffer): void;
  /** the peer's FIN: no more data on this stream */
  end(): void;
  /** RST_STREAM from the peer, or the session ended under the stream */
  reset(err: Error): void;
}

export class StreamResetError extends Error {
  constructor(readonly streamId: number, readonly status: number, message = `stream ${streamId} reset by the peer (status ${statusName(status)})`) {
    super(message);
    this.name = 'StreamResetError';
  }
}

function statusName(status: number): string {
  return Object.entries(RstStatus).find(([, v]) => v === status)?.[0] ?? String(status);
}

const noop: StreamHandler = { data: () => undefined, end: () => undefined, reset: () => undefined };

export class SpdyStream {
  replied = false;
  localFin = false;
  remoteFin = false;
  closed = false;
  /** what the peer lets us send (only enforced when it does flow control) */
  sendWindow: number;
  /** what we have let the peer send and it has not sent yet */
  recvWindow: number;
  /** bytes our reader consumed that we have not granted back yet */
  private unacked = 0;
  handler: StreamHandler = noop;
  /** set by SpdySession.open() until the SYN_REPLY */
  onReply?: () => void;
  /** a write waiting for window */
  blocked?: { chunks: Buffer[]; fin: boolean; cb: (err?: Error | null) => void };

  constructor(private readonly session: SpdySession, readonly id: number, readonly headers: Headers) {
    this.sendWindow = session.peerInitialWindow;
    this.recvWindow = session.streamWindow;
  }

  /** Sends data (and FIN when `fin`); `cb` runs once the transport can take more. */
  write(chunks: Buffer[], fin: boolean, cb: (err?: Error | null) => void): void {
    this.session.writeData(this, chunks, fin, cb);
  }

  /** Half-close: FIN on an empty data frame. */
  end(cb: (err?: Error | null) => void = () => undefined): void {
    if (this.localFin || this.closed) { cb(); return; }
    this.write([], true, cb);
  }

  reset(status: number = RstStatus.CANCEL): void {
    this.session.resetStream(this, status);
  }

  /** Our reader took `n` bytes: grant them back to the peer, a half window at a time. */
  consumed(n: number): void {
    if (this.closed || this.remoteFin) return;
    this.unacked += n;
    if (this.unacked >= this.session.streamWindow / 2) {
      this.recvWindow += this.unacked;
      this.session.queue(windowUpdateFrame(this.id, this.unacked));
      this.unacked = 0;
    }
  }

  /** bytes consumed and not yet granted back (for tests and stats) */
  get pendingGrant(): number {
    return this.unacked;
  }
}

export class SpdySession extends EventEmitter {
  private readonly streams = new Map<number, SpdyStream>();
  private readonly reader: FrameReader;
  private readonly deflate = new HeaderCodec('deflate');
  private readonly inflate = new HeaderCodec('inflate');
  private nextStreamId = 1;
  private nextPingId = 1;
  private readonly pings = new Map<number, () => void>();
  private out: Buffer[] = [];
  private outLength = 0;
  private flushQueued = false;
  private waiters: Array<() => void> = [];
  private readonly blockedReaders = new Set<SpdyStream>();
  private readonly maxData: number;
  private readonly highWater: number;
  private readonly replyTimeoutMs: number;
  /** set once the peer shows it does flow control (see the file comment) */
  peerFlowControl = false;
  peerInitialWindow = DEFAULT_WINDOW;
  /** the peer's session window, and ours */
  sendWindow = DEFAULT_WINDOW;
  recvWindow: number;
  readonly streamWindow: number;
  readonly sessionWindow: number;
  private sessionUnacked = 0;
  goneAway = false;
  closed = false;
  closeError?: Error;

  constructor(private readonly transport: SpdyTransport, opts: SpdySessionOptions = {}) {
    super();
    this.maxData = Math.min(opts.maxDataFrame ?? 64 * 1024, MAX_FRAME_LENGTH);
    this.highWater = opts.sendHighWater ?? 1024 * 1024;
    this.replyTimeoutMs = opts.replyTimeoutMs ?? 15_000;
    this.streamWindow = opts.streamWindow ?? 1024 * 1024;
    this.sessionWindow = opts.sessionWindow ?? 16 * 1024 * 1024;
    this.recvWindow = this.sessionWindow;
    // Announced before the first stream, so it covers all of them.
    if (this.streamWindow !== DEFAULT_WINDOW) this.queue(settingsFrame([{ id: SETTINGS_INITIAL_WINDOW_SIZE, value: this.streamWindow }]));
    if (this.sessionWindow > DEFAULT_WINDOW) this.queue(windowUpdateFrame(0, this.sessionWindow - DEFAULT_WINDOW));
    this.reader = new FrameReader({
      control: (f) => this.onControl(f),
      data: (id, payload, fin) => this.onData(id, payload, fin),
    });
  }

  get activeStreams(): number {
    return this.streams.size;
  }

  /** Bytes from the transport. A protocol error ends the session. */
  receive(chunk: Buffer): void {
    if (this.closed) return;
    try {
      this.reader.push(chunk);
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /**
   * Opens a stream whose frames go to `handler`; resolves once the peer
   * replied (SYN_REPLY), rejects on RST_STREAM, timeout or session end
   * before that.
   */
  open(headers: Headers, handler: StreamHandler = noop): Promise<SpdyStream> {
    if (this.closed || this.goneAway) {
      return Promise.reject(this.closeError ?? new Error('the SPDY session is closing (GOAWAY)'));
    }
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const stream = new SpdyStream(this, id, headers);
    this.streams.set(id, stream);
    return new Promise<SpdyStream>((resolve, reject) => {
      const timer = setTimeout(() => {
        stream.handler.reset(new Error(`no reply to SPDY stream ${id} within ${this.replyTimeoutMs} ms`));
        this.resetStream(stream, RstStatus.CANCEL);
      }, this.replyTimeoutMs);
      // Until the reply, a reset rejects; data cannot precede the reply (the peer waits for it).
      stream.handler = { ...handler, reset: (err) => { clearTimeout(timer); reject(err); } };
      stream.onReply = () => {
        clearTimeout(timer);
        stream.handler = handler;
        resolve(stream);
      };
      // Header blocks share one zlib context: compress and send in call order.
      this.deflate.process(encodeHeaderBlock(headers)).then(
        (block) => { if (!this.closed && !stream.closed) this.queue(synStreamFrame(id, block)); },
        (err: Error) => this.fail(err),
      );
    });
  }

  /** Round trip of a PING, in ms. */
  ping(timeoutMs = 10_000): Promise<number> {
    if (this.closed) return Promise.reject(this.closeError ?? new Error('SPDY session closed'));
    const id = this.nextPingId;
    this.nextPingId = (this.nextPingId + 2) & 0x7fffffff || 1;
    const t0 = process.hrtime.bigint();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.pings.delete(id); reject(new Error(`no PING reply within ${timeoutMs} ms`)); }, timeoutMs);
      this.pings.set(id, () => { clearTimeout(timer); resolve(Number(process.hrtime.bigint() - t0) / 1e6); });
      this.queue(pingFrame(id));
    });
  }

  /** GOAWAY, then closes the transport: every stream still open is reset. */
  close(): void {
    if (this.closed) return;
    this.queue(goAwayFrame(0));
    this.flush();
    this.end(new Error('SPDY session closed'));
    this.transport.close();
  }

  /** The transport is gone (or broke): every stream hears it. */
  end(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = err;
    this.deflate.close();
    this.inflate.close();
    for (const s of [...this.streams.values()]) {
      s.closed = true;
      s.handler.reset(err);
    }
    this.streams.clear();
    for (const w of this.waiters.splice(0)) w();
    this.emit('close', err);
  }

  private fail(err: Error): void {
    if (this.closed) return;
    if (err instanceof SpdyProtocolError) this.queue(goAwayFrame(0, 1));
    this.flush();
    this.end(err);
    this.transport.close();
  }

  // ---- sending ----

  /** Queues a frame; everything queued in one turn of the event loop goes out as one transport message. */
  queue(frame: Buffer): void {
    if (this.closed) return;
    this.out.push(frame);
    this.outLength += frame.length;
    if (this.outLength >= this.maxData) this.flush();
    else if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushQueued = false;
    if (this.outLength === 0 || this.closed) return;
    const msg = this.out.length === 1 ? this.out[0] : Buffer.concat(this.out, this.outLength);
    this.out = [];
    this.outLength = 0;
    this.transport.send(msg, this.onSent);
  }

  /**
   * Writers held above the high-water mark go on once the transport is below
   * it again. A held writer implies bytes in flight, so a send completes later.
   */
  private readonly onSent = (): void => {
    if (this.waiters.length === 0 || this.transport.bufferedAmount + this.outLength > this.highWater) return;
    for (const w of this.waiters.splice(0)) w();
  };

  writeData(stream: SpdyStream, chunks: Buffer[], fin: boolean, cb: (err?: Error | null) => void): void {
    if (this.closed || stream.closed || stream.localFin) {
      cb(Object.assign(new Error(`SPDY stream ${stream.id} is closed`), { code: 'EPIPE' }));
      return;
    }
    if (stream.blocked) throw new Error('SPDY stream write while a write waits for window');
    let i = 0;
    let off = 0;
    for (;;) {
      // Skip spent and empty chunks.
      while (i < chunks.length && off >= chunks[i].length) { i++; off = 0; }
      if (i >= chunks.length) break;
      let room = this.maxData;
      if (this.peerFlowControl) room = Math.min(room, stream.sendWindow, this.sendWindow);
      if (room <= 0) {
        stream.blocked = { chunks: [chunks[i].subarray(off), ...chunks.slice(i + 1)], fin, cb };
        return;
      }
      // One frame: as many chunk pieces as fit.
      const parts: Buffer[] = [];
      let size = 0;
      while (i < chunks.length && size < room) {
        const c = chunks[i];
        const n = Math.min(c.length - off, room - size);
        parts.push(off === 0 && n === c.length ? c : c.subarray(off, off + n));
        size += n;
        off += n;
        if (off >= c.length) { i++; off = 0; }
      }
      while (i < chunks.length && chunks[i].length === 0) i++;
      const last = i >= chunks.length;
      this.queue(dataFrameHeader(stream.id, size, fin && last));
      for (const p of parts) this.queue(p);
      stream.sendWindow -= size;
      this.sendWindow -= size;
    }
    if (fin) {
      // The FIN went on the last data frame, or needs an empty one.
      if (!chunks.some((c) => c.length > 0)) this.queue(dataFrameHeader(stream.id, 0, true));
      stream.localFin = true;
      this.maybeForget(stream);
    }
    if (this.transport.bufferedAmount + this.outLength > this.highWater) this.waiters.push(() => cb());
    else cb();
  }

  resetStream(stream: SpdyStream, status: number): void {
    if (stream.closed) return;
    stream.closed = true;
    this.streams.delete(stream.id);
    this.blockedReaders.delete(stream);
    if (stream.blocked) {
      const b = stream.blocked;
      stream.blocked = undefined;
      b.cb(Object.assign(new Error(`SPDY stream ${stream.id} was reset`), { code: 'EPIPE' }));
    }
    this.queue(rstStreamFrame(stream.id, status));
    this.resumeIfUnblocked();
  }

  /** Forgets a stream once both sides sent FIN. */
  private maybeForget(stream: SpdyStream): void {
    if (stream.localFin && stream.remoteFin) {
      stream.closed = true;
      this.streams.delete(stream.id);
      this.blockedReaders.delete(stream);
      this.resumeIfUnblocked();
    }
  }

  // ---- reading backpressure ----

  /** The stream's reader is full: stop reading the transport until it drains. */
  pauseReading(stream: SpdyStream): void {
    if (this.blockedReaders.size === 0) this.transport.pause();
    this.blockedReaders.add(stream);
  }

  resumeReading(stream: SpdyStream): void {
    if (this.blockedReaders.delete(stream)) this.resumeIfUnblocked();
  }

  private resumeIfUnblocked(): void {
    if (this.blockedReaders.size === 0 && !this.closed) this.transport.resume();
  }

  // ---- receiving ----

  private onData(id: number, payload: Buffer, fin: boolean): void {
    const n = payload.length;
    this.recvWindow -= n;
    // The session window is ours to grant back as soon as bytes are handed to a stream.
    this.sessionUnacked += n;
    if (this.sessionUnacked >= this.sessionWindow / 2) {
      this.recvWindow += this.sessionUnacked;
      this.queue(windowUpdateFrame(0, this.sessionUnacked));
      this.sessionUnacked = 0;
    }
    const stream = this.streams.get(id);
    if (!stream || stream.remoteFin) {
      // Data for a stream we reset or never had: the peer has not heard yet.
      if (!stream && id < this.nextStreamId && id % 2 === 1) return;
      if (stream) this.resetStream(stream, RstStatus.STREAM_ALREADY_CLOSED);
      else this.queue(rstStreamFrame(id, RstStatus.INVALID_STREAM));
      return;
    }
    stream.recvWindow -= n;
    if (n > 0) stream.handler.data(payload);
    if (fin) {
      stream.remoteFin = true;
      stream.handler.end();
      this.maybeForget(stream);
    }
  }

  private onControl(f: ControlFrame): void {
    switch (f.type) {
      case FrameType.SYN_REPLY:
      case FrameType.HEADERS: {
        this.decodeHeaders(f.block);
        const stream = this.streams.get(f.streamId);
        if (!stream) return;
        if (f.type === FrameType.SYN_REPLY) {
          if (stream.replied) { this.resetStream(stream, RstStatus.STREAM_IN_USE); return; }
          stream.replied = true;
          stream.onReply?.();
          stream.onReply = undefined;
        }
        if (f.flags & FLAG_FIN) {
          stream.remoteFin = true;
          stream.handler.end();
          this.maybeForget(stream);
        }
        return;
      }
      case FrameType.SYN_STREAM:
        // A port-forward server never pushes streams; its header block still advances the zlib context.
        this.decodeHeaders(f.block);
        this.queue(rstStreamFrame(f.streamId, RstStatus.REFUSED_STREAM));
        return;
      case FrameType.RST_STREAM: {
        const stream = this.streams.get(f.streamId);
        if (!stream) return;
        stream.closed = true;
        this.streams.delete(stream.id);
        this.blockedReaders.delete(stream);
        this.resumeIfUnblocked();
        if (stream.blocked) {
          const b = stream.blocked;
          stream.blocked = undefined;
          b.cb(Object.assign(new Error(`SPDY stream ${stream.id} was reset`), { code: 'EPIPE' }));
        }
        stream.handler.reset(new StreamResetError(stream.id, f.status));
        return;
      }
      case FrameType.SETTINGS:
        for (const s of f.settings) {
          if (s.id !== SETTINGS_INITIAL_WINDOW_SIZE) continue;
          const delta = s.value - this.peerInitialWindow;
          this.peerInitialWindow = s.value;
          this.peerFlowControl = true;
          for (const st of this.streams.values()) st.sendWindow += delta;
        }
        this.unblockWriters();
        return;
      case FrameType.WINDOW_UPDATE: {
        this.peerFlowControl = true;
        if (f.streamId === 0) this.sendWindow += f.delta;
        else {
          const stream = this.streams.get(f.streamId);
          if (stream) stream.sendWindow += f.delta;
        }
        this.unblockWriters();
        return;
      }
      case FrameType.PING: {
        if (f.id % 2 === 0) { this.queue(pingFrame(f.id)); return; } // the server's: echo it
        const done = this.pings.get(f.id);
        this.pings.delete(f.id);
        done?.();
        return;
      }
      case FrameType.GOAWAY:
        // Streams above the last good id never reached the server.
        this.goneAway = true;
        for (const s of [...this.streams.values()]) {
          if (s.id > f.lastGoodStreamId && !s.replied) {
            s.closed = true;
            this.streams.delete(s.id);
            s.handler.reset(new StreamResetError(s.id, RstStatus.REFUSED_STREAM, `stream ${s.id} refused: the server is going away`));
          }
        }
        this.emit('goaway');
        return;
    }
  }

  private unblockWriters(): void {
    for (const s of this.streams.values()) {
      if (!s.blocked || Math.min(s.sendWindow, this.sendWindow) <= 0) continue;
      const b = s.blocked;
      s.blocked = undefined;
      this.writeData(s, b.chunks, b.fin, b.cb);
    }
  }

  /** Incoming header blocks are decoded in order to keep the shared zlib context in step. */
  private decodeHeaders(block: Buffer): void {
    this.inflate.process(block).then(
      (raw) => { if (raw.length > 0) this.emit('headers', decodeHeaderBlock(raw)); },
      (err: Error) => this.fail(err instanceof SpdyProtocolError ? err : new SpdyProtocolError(err.message)),
    );
  }
}
