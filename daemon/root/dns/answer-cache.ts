import type { ClusterResult } from './answers';
import { RCODE } from './answers';

interface Entry {
  result: ClusterResult;
  expires: number; // ms since epoch
}

/**
 * Cluster answers per (name, type), kept for their TTL (capped by the
 * server's ttl), negative answers for the server's ttl. SERVFAIL is never
 * kept. Bounded: the oldest entry goes first.
 */
export class AnswerCache {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly maxEntries: number,
    private readonly maxTtl: number,
    private readonly now: () => number = Date.now,
  ) {}

  static key(name: string, qtype: number): string {
    return `${qtype}:${name.toLowerCase().replace(/\.$/, '')}`;
  }

  get(key: string): ClusterResult | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    const left = Math.floor((e.expires - this.now()) / 1000);
    if (left <= 0) {
      this.entries.delete(key);
      return undefined;
    }
    return { ...e.result, answers: e.result.answers.map((a) => ({ ...a, ttl: Math.min(a.ttl ?? left, left) })) };
  }

  set(key: string, result: ClusterResult): void {
    if (this.maxEntries <= 0 || result.rcode === RCODE.SERVFAIL) return;
    const ttls = (result.answers ?? []).map((a) => a.ttl ?? this.maxTtl);
    const ttl = Math.min(this.maxTtl, ...ttls);
    if (ttl <= 0) return;
    this.entries.delete(key);
    this.entries.set(key, { result, expires: this.now() + ttl * 1000 });
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
  }

  get size(): number {
    return this.entries.size;
  }
}
