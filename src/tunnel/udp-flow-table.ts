/**
 * The UDP flows of one relay (the root daemon's TUN, a SOCKS5 UDP
 * association), bounded in all and per source so that one program cannot
 * starve the others. UDP has no end of flow, so a full table must make room:
 * a new flow always gets a slot, taken from the greediest source (its flow
 * idle the longest), never refused. A source is one local socket
 * (address:port).
 */

export type EvictReason = 'idle' | 'source-limit' | 'table-full';

export interface UdpFlowTableOptions<V> {
  /** Flows in all. */
  max: number;
  /** Flows one source may hold; its next one replaces its own flow idle the longest. */
  perSource: number;
  /** A flow with no datagram either way for this long is closed. */
  idleMs: number;
  /** A flow the table let go (not called for delete()): close it. */
  onEvict: (value: V, reason: EvictReason) => void;
  /** How often idle flows are looked for. Default idleMs / 4. */
  sweepMs?: number;
  now?: () => number;
}

export interface UdpFlowTableStats {
  active: number;
  max: number;
  perSource: number;
  /** Flows let go to make room: the source was at its limit, or the table was full. */
  evictedSourceLimit: number;
  evictedTableFull: number;
  expired: number;
}

interface Entry<V> {
  key: string;
  source: string;
  value: V;
  used: number;
}

export class UdpFlowTable<V> {
  // Both kept least recently used first: a Map iterates in insertion order and touch() re-inserts.
  private readonly entries = new Map<string, Entry<V>>();
  private readonly bySource = new Map<string, Map<string, Entry<V>>>();
  private readonly now: () => number;
  private timer?: NodeJS.Timeout;
  private evictedSourceLimit = 0;
  private evictedTableFull = 0;
  private expired = 0;

  constructor(private readonly opts: UdpFlowTableOptions<V>) {
    if (opts.max < 1 || opts.perSource < 1) throw new RangeError('a UDP flow table needs room for at least one flow');
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  stats(): UdpFlowTableStats {
    return {
      active: this.entries.size,
      max: this.opts.max,
      perSource: Math.min(this.opts.perSource, this.opts.max),
      evictedSourceLimit: this.evictedSourceLimit,
      evictedTableFull: this.evictedTableFull,
      expired: this.expired,
    };
  }

  get(key: string): V | undefined {
    return this.entries.get(key)?.value;
  }

  /** A datagram went through the flow: it is the most recently used. */
  touch(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    e.used = this.now();
    this.entries.delete(key);
    this.entries.set(key, e);
    const own = this.bySource.get(e.source)!;
    own.delete(key);
    own.set(key, e);
  }

  /** A new flow of `source`; room is made first (see the class comment). */
  add(key: string, source: string, value: V): void {
    this.delete(key);
    const own = this.bySource.get(source);
    if (own && own.size >= this.opts.perSource) {
      this.evict(own.values().next().value!, 'source-limit');
    } else if (this.entries.size >= this.opts.max) {
      this.evict(this.greediestOldest(), 'table-full');
    }
    const e: Entry<V> = { key, source, value, used: this.now() };
    this.entries.set(key, e);
    if (own) own.set(key, e);
    else this.bySource.set(source, new Map([[key, e]]));
    this.startSweeping();
  }

  /** The flow ended by itself (closed, failed): forget it without onEvict. */
  delete(key: string): boolean {
    const e = this.entries.get(key);
    if (!e) return false;
    this.entries.delete(key);
    const own = this.bySource.get(e.source)!;
    own.delete(key);
    if (own.size === 0) this.bySource.delete(e.source);
    return true;
  }

  /** Let go of every flow idle for idleMs or more. */
  sweep(): void {
    const cutoff = this.now() - this.opts.idleMs;
    for (const e of this.entries.values()) {
      if (e.used > cutoff) break; // the rest were used later
      this.expired++;
      this.delete(e.key);
      this.opts.onEvict(e.value, 'idle');
    }
    if (this.entries.size === 0) this.stopSweeping();
  }

  /** Every flow, for closing them all. */
  values(): V[] {
    return [...this.entries.values()].map((e) => e.value);
  }

  clear(): void {
    this.entries.clear();
    this.bySource.clear();
    this.stopSweeping();
  }

  /** The least recently used flow of the source with the most flows (ties: the one idle the longest). */
  private greediestOldest(): Entry<V> {
    let victim: Entry<V> | undefined;
    let most = 0;
    for (const own of this.bySource.values()) {
      const oldest = own.values().next().value!;
      if (own.size > most || (own.size === most && oldest.used < victim!.used)) {
        most = own.size;
        victim = oldest;
      }
    }
    return victim!;
  }

  private evict(e: Entry<V>, reason: 'source-limit' | 'table-full'): void {
    if (reason === 'source-limit') this.evictedSourceLimit++;
    else this.evictedTableFull++;
    this.delete(e.key);
    this.opts.onEvict(e.value, reason);
  }

  private startSweeping(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.sweep(), this.opts.sweepMs ?? Math.max(1, Math.floor(this.opts.idleMs / 4)));
    this.timer.unref();
  }

  private stopSweeping(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
