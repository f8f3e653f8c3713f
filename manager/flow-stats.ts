import type { DialCode } from '../src/tunnel/messages';

/** The manager's flow counters, shown by `rdbg status`, exported as metrics (metrics.ts) and read by tests. */
export interface FlowStats {
  bytesIn: number; // from destinations
  bytesOut: number; // to destinations
  flowsOpened: number;
  flowsFailed: number;
  flowsActive: number;
  /** failed dials by their code: REFUSED, UNREACHABLE, TIMEOUT, NAME_ERROR, DENIED (the dial policy), FAILED */
  dialFailures: Partial<Record<DialCode, number>>;
}

export function newFlowStats(): FlowStats {
  return { bytesIn: 0, bytesOut: 0, flowsOpened: 0, flowsFailed: 0, flowsActive: 0, dialFailures: {} };
}

/** A flow whose dial failed, counted once, by why. */
export function countDialFailure(stats: FlowStats, code: DialCode): void {
  stats.flowsFailed++;
  stats.dialFailures[code] = (stats.dialFailures[code] ?? 0) + 1;
}
