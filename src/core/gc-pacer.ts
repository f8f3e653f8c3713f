/**
 * A full garbage collection when the heap has grown well past what the last
 * one left, for a long-lived daemon under steady load. V8 collects the old
 * generation when it nears a limit set for large heaps, or when the process
 * goes idle (its memory reducer); a daemon that is never idle and keeps a
 * small heap otherwise holds tens of MB of promoted garbage in its RSS for
 * half an hour or more (docs/soak.md). Needs --expose-gc; without it, does
 * nothing.
 */
import { getHeapStatistics } from 'node:v8';

export interface GcPacerOptions {
  /** how often the heap is looked at (ms) */
  everyMs?: number;
  /** collect once the heap is this much larger than after the last full collection (ratio) */
  growth?: number;
  /** ...and at least this many bytes larger */
  minBytes?: number;
}

export interface GcPacer {
  /** full collections this pacer asked for */
  readonly collections: number;
  stop(): void;
}

export function startGcPacer(opts: GcPacerOptions = {}): GcPacer | undefined {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return undefined;
  const growth = opts.growth ?? 1.3;
  const minBytes = opts.minBytes ?? 4 * 1024 * 1024;
  const used = (): number => getHeapStatistics().used_heap_size;
  let base = used();
  let collections = 0;
  // (V8's own full collections lower `now`, so they put the next one off by themselves.)
  const timer = setInterval(() => {
    const now = used();
    if (now < base * growth || now - base < minBytes) return;
    gc();
    collections++;
    base = used();
  }, opts.everyMs ?? 60_000);
  timer.unref();
  return {
    get collections() {
      return collections;
    },
    stop() {
      clearInterval(timer);
    },
  };
}
