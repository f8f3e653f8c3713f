import * as dnsPacket from 'dns-packet';

/**
 * An EDNS option (local/experimental range, RFC 6891 section 9) that rdbg adds
 * to the queries it forwards. A query that arrives carrying it has already
 * passed through an rdbg resolver: the original resolvers sent it back to us,
 * a loop. Resolvers ignore unknown options, so the upstream answer is as it
 * would have been.
 */
export const LOOP_OPTION_CODE = 65431;
const LOOP_OPTION_DATA = Buffer.from('rdbg');

type OptRecord = Omit<dnsPacket.OptAnswer, 'options'> & { options?: { code: number; data?: Buffer }[] };

function optOf(packet: dnsPacket.Packet): OptRecord | undefined {
  return (packet.additionals ?? []).find((a) => a.type === 'OPT') as OptRecord | undefined;
}

export function hasLoopMarker(packet: dnsPacket.Packet): boolean {
  return optOf(packet)?.options?.some((o) => (o.code as number) === LOOP_OPTION_CODE) ?? false;
}

/**
 * The query bytes with the marker appended to its OPT record, everything else
 * byte for byte as the client sent it. Only possible when the OPT record is
 * the last record (it is, unless a TSIG/SIG(0) follows, which we must not
 * invalidate): then its RDLENGTH sits just before its options, at the end.
 * Queries without EDNS are forwarded untouched, unmarked: a forwarder in a
 * loop (dnsmasq) adds EDNS itself, so the second pass through us gets marked.
 */
export function withLoopMarker(query: Buffer, packet: dnsPacket.Packet): Buffer {
  const additionals = packet.additionals ?? [];
  const opt = optOf(packet);
  if (!opt || additionals[additionals.length - 1] !== opt) return query;
  const rdlen = (opt.options ?? []).reduce((n, o) => n + 4 + (o.data?.length ?? 0), 0);
  const at = query.length - rdlen - 2;
  if (at < 12 || query.readUInt16BE(at) !== rdlen) return query;
  const option = Buffer.alloc(4 + LOOP_OPTION_DATA.length);
  option.writeUInt16BE(LOOP_OPTION_CODE, 0);
  option.writeUInt16BE(LOOP_OPTION_DATA.length, 2);
  LOOP_OPTION_DATA.copy(option, 4);
  const out = Buffer.concat([query, option]);
  out.writeUInt16BE(rdlen + option.length, at);
  return out;
}
