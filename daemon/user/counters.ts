/** Traffic counters of the user daemon, shown by `rdbg status`. */
export interface Counters {
  flowsOpened: number;
  flowsFailed: number;
  flowsActive: number;
  bytesOut: number;
  bytesIn: number;
  dnsQueries: number;
  divertedFlows: number;
}

export function newCounters(): Counters {
  return { flowsOpened: 0, flowsFailed: 0, flowsActive: 0, bytesOut: 0, bytesIn: 0, dnsQueries: 0, divertedFlows: 0 };
}
