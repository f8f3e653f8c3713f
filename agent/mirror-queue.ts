import type { Readable, Writable } from 'node:stream';
import { logger } from '../src/core/log';

const log = logger('agent.mirror');

/** Bytes one mirror copy may hold while the laptop is slower than the app (or still connecting). */
export const MIRROR_COPY_LIMIT = 16 * 1024 * 1024;
/** Bytes all mirror copies together may hold: well inside the agent container's memory. */
export const MIRROR_TOTAL_LIMIT = 64 * 1024 * 1024;
/** Request copies in flight at once; a request beyond them is not copied (and counted). */
export const MIRRORS_IN_FLIGHT = 64;
const LOG_EVERY_MS = 10_000;

export type DropReason = 'copy queue full' | 'agent queue full' | 'too many copies in flight';

export interface MirrorLimits {
  copyBytes?: number;
  totalBytes?: number;
  inFlight?: number;
}

/** Where dropped copies are counted (the manager link reports them with its heartbeat). */
export interface DropCounter {
  countMirrorDrop(interceptId: string): void;
}

type Sink = Writable & { readableLength?: number };

/**
 * The memory a mirror may use and the count of copies it dropped. A copy is
 * streamed to the laptop as the caller sends it and never slows the caller:
 * when the laptop falls behind by more than the limits, the copy is cut (the
 * laptop sees its request end early), counted, and logged.
 */
export class MirrorQueue {
  readonly copyBytes: number;
  readonly totalBytes: number;
  readonly inFlight: number;
  private readonly live = new Set<Sink>();
  private requests = 0;
  private readonly lastLog = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly counter: DropCounter,
    limits: MirrorLimits = {},
  ) {
    this.copyBytes = limits.copyBytes ?? MIRROR_COPY_LIMIT;
    this.totalBytes = limits.totalBytes ?? MIRROR_TOTAL_LIMIT;
    this.inFlight = limits.inFlight ?? MIRRORS_IN_FLIGHT;
  }

  /** Bytes held now by every copy in flight. */
  get held(): number {
    let n = 0;
    for (const s of this.live) if (!s.destroyed) n += queued(s);
    return n;
  }

  /**
   * May another request copy start? It gives the function that ends it (call
   * once), or undefined, and the request is counted as dropped.
   */
  admit(interceptId: string): (() => void) | undefined {
    if (this.requests >= this.inFlight) {
      this.drop(interceptId, 'too many copies in flight', 0);
      return undefined;
    }
    this.requests++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.requests--;
    };
  }

  /**
   * Copy what `source` emits to `sink` until it ends. `sink` is destroyed when
   * it would hold more than the limits allow, and `source` is never paused.
   */
  copy(interceptId: string, source: Readable, sink: Sink, head?: Buffer): void {
    this.live.add(sink);
    sink.once('close', () => this.live.delete(sink));
    sink.on('error', () => undefined);
    const write = (chunk: Buffer): void => {
      if (sink.destroyed || sink.writableEnded) return;
      const mine = queued(sink);
      const reason: DropReason | undefined =
        mine + chunk.length > this.copyBytes ? 'copy queue full' : this.held + chunk.length > this.totalBytes ? 'agent queue full' : undefined;
      if (reason) {
        this.drop(interceptId, reason, mine);
        sink.destroy();
        return;
      }
      sink.write(chunk);
    };
    if (head?.length) write(head);
    source.on('data', write);
    source.once('end', () => {
      if (!sink.destroyed) sink.end();
    });
    source.once('close', () => {
      source.removeListener('data', write);
      if (!sink.writableEnded) sink.destroy();
    });
  }

  private drop(interceptId: string, reason: DropReason, queuedBytes: number): void {
    this.counter.countMirrorDrop(interceptId);
    // One line per intercept and reason every 10 s: a burst of large requests must not flood the log.
    const key = `${interceptId} ${reason}`;
    const now = Date.now();
    const last = this.lastLog.get(key);
    if (last && now - last.at < LOG_EVERY_MS) {
      last.suppressed++;
      return;
    }
    this.lastLog.set(key, { at: now, suppressed: 0 });
    log.warn('mirror copy dropped: the laptop did not keep up', {
      intercept: interceptId,
      reason,
      queued: queuedBytes,
      copyLimit: this.copyBytes,
      totalLimit: this.totalBytes,
      sinceLastLine: last?.suppressed ?? 0,
    });
  }
}

/** Bytes a sink holds: its write queue and, for a PassThrough, what waits to be read. */
function queued(s: Sink): number {
  return s.writableLength + (s.readableLength ?? 0);
}
