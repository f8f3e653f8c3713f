import * as dnsPacket from 'dns-packet';
import { errorMessage } from '../../../src/core/errors';
import type { Logger } from '../../../src/core/log';
import { AnswerCache } from './answer-cache';
import { buildResponse, qtypeNumber, rawErrorResponse, RCODE, toAnswers, udpLimit, type ClusterResult } from './answers';
import { DnsCodes, dnsError } from './dns-errors';
import { hasLoopMarker, withLoopMarker } from './loop-marker';
import type { DnsRouter } from './routing';
import { forwardTcp, forwardUdp, upstreamText, type Upstream } from './upstream';

export type Transport = 'udp' | 'tcp';

/**
 * Resolves a cluster name through the manager. `name` is as the manager takes
 * it: bare for short forms (`echo.default`, expanded with the pod search path),
 * with a trailing dot when absolute (under the cluster domain, reverse names).
 */
export type LookupCluster = (name: string, qtype: number) => Promise<ClusterResult>;

export interface DnsCounters {
  queries: number;
  cluster: number;
  forwarded: number;
  errors: number; // malformed queries, SERVFAILs we produced, dropped packets
  cacheHits: number;
  truncated: number;
  loops: number;
  upstreamTimeouts: number;
}

export interface QueryHandlerOptions {
  router: DnsRouter;
  lookupCluster: LookupCluster;
  upstreams: () => readonly Upstream[];
  ttl: number;
  cacheSize: number;
  upstreamTimeoutMs: number;
  clusterTimeoutMs: number;
  log: Logger;
}

/** Longest name we accept (RFC 1035: 255 octets on the wire, 253 characters in text). */
const MAX_NAME = 253;
/** A forwarded question already in flight this many times is a loop, or a flood: SERVFAIL. */
const MAX_SAME_IN_FLIGHT = 16;

/** One DNS message in, at most one out. Never throws: bad input gets an error answer or is dropped. */
export class QueryHandler {
  readonly counters: DnsCounters = { queries: 0, cluster: 0, forwarded: 0, errors: 0, cacheHits: 0, truncated: 0, loops: 0, upstreamTimeouts: 0 };
  private readonly cache: AnswerCache;
  private readonly pending = new Map<string, Promise<ClusterResult>>();
  private readonly forwarding = new Map<string, number>();
  private readonly warned = new Map<string, number>();

  constructor(private readonly o: QueryHandlerOptions) {
    this.cache = new AnswerCache(o.cacheSize, o.ttl);
  }

  async handle(msg: Buffer, transport: Transport): Promise<Buffer | undefined> {
    this.counters.queries++;
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg) as dnsPacket.DecodedPacket;
    } catch (err) {
      this.counters.errors++;
      this.o.log.debug('malformed query', { bytes: msg.length, error: errorMessage(err) });
      return rawErrorResponse(msg, RCODE.FORMERR);
    }
    if (query.type === 'response') {
      // Never answer an answer: two servers would bounce it forever.
      this.counters.errors++;
      return undefined;
    }
    const opcode = (query as unknown as { opcode?: string }).opcode;
    if (opcode !== 'QUERY') return this.fail(rawErrorResponse(msg, RCODE.NOTIMP));
    const questions = query.questions ?? [];
    if (questions.length !== 1 || questions[0].name.length > MAX_NAME) {
      return this.fail(buildResponse({ ...query, questions: [] }, RCODE.FORMERR, [], 512));
    }
    const q = questions[0];
    const limit = transport === 'udp' ? udpLimit(query) : 65535;
    if (hasLoopMarker(query)) {
      this.counters.loops++;
      this.warnOnce('loop', 'DNS loop: a query we forwarded came back; check the upstream resolvers', { name: q.name, type: q.type });
      return this.fail(buildResponse(query, RCODE.SERVFAIL, [], limit));
    }
    const started = Date.now();
    const route = this.o.router.route(q.name);
    const out = route === 'cluster' ? await this.cluster(query, q, limit) : await this.forward(msg, query, q, transport, limit);
    // "Why does this name not resolve?": RDBG_LOG_LEVEL=debug (or SIGUSR2) shows every decision.
    if (this.o.log.enabled('debug')) {
      const rcode = out && out.length >= 4 ? out.readUInt16BE(2) & 0xf : undefined;
      this.o.log.debug('query', { name: q.name, type: q.type, transport, route, rcode, ms: Date.now() - started });
    }
    return out;
  }

  /** At most one warning of a kind per 10 s: a dead manager must not flood the log (debug has every one). */
  private warnOnce(kind: string, msg: string, fields: Record<string, unknown>): void {
    const now = Date.now();
    if (now - (this.warned.get(kind) ?? 0) < 10_000) return this.o.log.debug(msg, fields);
    this.warned.set(kind, now);
    this.o.log.warn(msg, fields);
  }

  private fail(answer: Buffer | undefined): Buffer | undefined {
    this.counters.errors++;
    return answer;
  }

  private async cluster(query: dnsPacket.Packet, q: dnsPacket.Question, limit: number): Promise<Buffer> {
    this.counters.cluster++;
    const qtype = qtypeNumber(q.type);
    // Other types for a cluster name (MX, HTTPS, ANY, ...) get an empty NOERROR
    // (NODATA), not NOTIMP: stubs that ask HTTPS/SVCB beside A/AAAA (browsers,
    // curl) then carry on with the addresses, and glibc does not fail over.
    if (qtype === undefined || (q.class ?? 'IN') !== 'IN') return this.answer(query, RCODE.NOERROR, [], limit);
    let result: ClusterResult;
    try {
      result = await this.lookup(q.name, qtype);
    } catch (err) {
      this.warnOnce('cluster', 'cluster lookup failed', { name: q.name, type: q.type, error: errorMessage(err) });
      return this.fail(buildResponse(query, RCODE.SERVFAIL, [], limit))!;
    }
    if (result.rcode === RCODE.SERVFAIL) this.counters.errors++;
    return this.answer(query, result.rcode, toAnswers(q.name, result, this.o.ttl), limit);
  }

  private answer(query: dnsPacket.Packet, rcode: number, answers: dnsPacket.Answer[], limit: number): Buffer {
    const out = buildResponse(query, rcode, answers, limit);
    if (out.length >= 4 && out.readUInt16BE(2) & dnsPacket.TRUNCATED_RESPONSE) this.counters.truncated++;
    return out;
  }

  /** Cached, and one manager call per (name, type) however many clients ask at once. */
  private lookup(name: string, qtype: number): Promise<ClusterResult> {
    const key = AnswerCache.key(name, qtype);
    const cached = this.cache.get(key);
    if (cached) {
      this.counters.cacheHits++;
      return Promise.resolve(cached);
    }
    let p = this.pending.get(key);
    if (!p) {
      p = this.withTimeout(this.o.lookupCluster(this.o.router.managerName(name), qtype), this.o.clusterTimeoutMs, name)
        .then((r) => {
          this.cache.set(key, r);
          return r;
        })
        .finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }

  private withTimeout<T>(p: Promise<T>, ms: number, name: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(dnsError(DnsCodes.CLUSTER_TIMEOUT, `the manager did not answer for ${name} within ${ms} ms`)), ms);
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
  }

  private async forward(msg: Buffer, query: dnsPacket.Packet, q: dnsPacket.Question, transport: Transport, limit: number): Promise<Buffer | undefined> {
    const ups = this.o.upstreams();
    if (ups.length === 0) return this.fail(buildResponse(query, RCODE.SERVFAIL, [], limit));
    const key = `${q.type}:${q.name.toLowerCase()}`;
    const inFlight = this.forwarding.get(key) ?? 0;
    if (inFlight >= MAX_SAME_IN_FLIGHT) {
      this.counters.loops++;
      return this.fail(buildResponse(query, RCODE.SERVFAIL, [], limit));
    }
    this.forwarding.set(key, inFlight + 1);
    this.counters.forwarded++;
    const marked = withLoopMarker(msg, query);
    try {
      // Each upstream in turn, as a stub would; the whole budget is bounded.
      const deadline = Date.now() + this.o.upstreamTimeoutMs * Math.min(ups.length, 2);
      for (const up of ups) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        try {
          return transport === 'tcp'
            ? await forwardTcp(marked, up, Math.min(left, this.o.upstreamTimeoutMs))
            : await forwardUdp(marked, up, Math.min(left, this.o.upstreamTimeoutMs));
        } catch (err) {
          if ((err as { code?: string }).code === DnsCodes.UPSTREAM_TIMEOUT) this.counters.upstreamTimeouts++;
          this.o.log.debug('upstream failed', { upstream: upstreamText(up), name: q.name, error: errorMessage(err) });
        }
      }
      return this.fail(buildResponse(query, RCODE.SERVFAIL, [], limit));
    } finally {
      const n = (this.forwarding.get(key) ?? 1) - 1;
      if (n <= 0) this.forwarding.delete(key);
      else this.forwarding.set(key, n);
    }
  }
}
