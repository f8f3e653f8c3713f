import * as dnsPacket from 'dns-packet';
import type { DNSRecord } from '../../../src/gen/rdbg/v1/DNSRecord';
import { normalizeName } from './routing';

/** RFC 1035 numbers of the types the cluster answers. */
export const QTYPE = { A: 1, CNAME: 5, PTR: 12, TXT: 16, AAAA: 28, SRV: 33 } as const;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

const TYPE_NAMES: Record<number, dnsPacket.RecordType> = { 1: 'A', 5: 'CNAME', 12: 'PTR', 16: 'TXT', 28: 'AAAA', 33: 'SRV' };
const TYPE_NUMBERS: Record<string, number> = Object.fromEntries(Object.entries(TYPE_NAMES).map(([n, t]) => [t, Number(n)]));

/** The manager's answer (DNSResponse), or the same shape from any other source. */
export interface ClusterResult {
  rcode: number;
  name: string; // the name that answered, after search-path expansion
  answers: DNSRecord[];
}

/** dns-packet gives a type name ("A", "UNKNOWN_65"); the number, when it is one we serve. */
export function qtypeNumber(type: string): number | undefined {
  return TYPE_NUMBERS[type];
}

/** UDP payload limit a client accepts: 512, or its EDNS size (capped at 4096). */
export function udpLimit(query: dnsPacket.Packet): number {
  const opt = (query.additionals ?? []).find((a) => a.type === 'OPT') as dnsPacket.OptAnswer | undefined;
  if (!opt) return 512;
  return Math.min(4096, Math.max(512, opt.udpPayloadSize || 512));
}

/**
 * Resource records for the question `qname` (as the client spelled it). Records
 * owned by the expanded name (`echo.default.svc.cluster.local` for a question
 * `echo.default`) are owned by the question's name instead, so that the stub
 * resolver accepts them; TTLs are capped at `maxTtl`.
 */
export function toAnswers(qname: string, result: ClusterResult, maxTtl: number): dnsPacket.Answer[] {
  const expanded = normalizeName(result.name);
  const out: dnsPacket.Answer[] = [];
  for (const r of result.answers ?? []) {
    const type = TYPE_NAMES[r.type ?? 0];
    if (!type) continue;
    const owner = !r.name || normalizeName(r.name) === expanded ? qname : r.name;
    const ttl = Math.max(0, Math.min(r.ttl ?? maxTtl, maxTtl));
    const base = { name: owner, ttl, class: 'IN' as const };
    switch (type) {
      case 'A':
      case 'AAAA':
        if (r.address) out.push({ ...base, type, data: r.address });
        break;
      case 'CNAME':
      case 'PTR':
        if (r.target) out.push({ ...base, type, data: r.target });
        break;
      case 'SRV':
        if (r.target) out.push({ ...base, type, data: { target: r.target, port: r.port ?? 0, priority: r.priority ?? 0, weight: r.weight ?? 0 } });
        break;
      case 'TXT':
        out.push({ ...base, type, data: (r.txt ?? []).map((s) => Buffer.from(s)) });
        break;
    }
  }
  return out;
}

/**
 * A response to `query`: its ID and question, RD copied, RA set. When it does
 * not fit in `maxSize` bytes the answers are dropped and TC is set, so the
 * client retries over TCP. An EDNS query gets an OPT record back.
 */
export function buildResponse(query: dnsPacket.Packet, rcode: number, answers: dnsPacket.Answer[], maxSize: number): Buffer {
  const rd = (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
  const edns = (query.additionals ?? []).some((a) => a.type === 'OPT');
  const additionals: dnsPacket.Answer[] = edns
    ? [{ type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }]
    : [];
  const packet: dnsPacket.Packet = {
    id: query.id ?? 0,
    type: 'response',
    flags: rd | dnsPacket.RECURSION_AVAILABLE | (rcode & 0xf),
    questions: query.questions ?? [],
    answers,
    additionals,
  };
  const full = dnsPacket.encode(packet);
  if (full.length <= maxSize) return full;
  return dnsPacket.encode({ ...packet, flags: (packet.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE, answers: [] });
}

/**
 * An error answer for bytes that could not be decoded: the client's ID, its
 * opcode and RD bit, no sections. Undefined when not even an ID is there.
 */
export function rawErrorResponse(query: Buffer, rcode: number): Buffer | undefined {
  if (query.length < 2) return undefined;
  const id = query.readUInt16BE(0);
  const flags = query.length >= 4 ? query.readUInt16BE(2) & (0x7800 | dnsPacket.RECURSION_DESIRED) : 0;
  return dnsPacket.encode({ id, type: 'response', flags: flags | (rcode & 0xf) });
}
