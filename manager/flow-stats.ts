/** The manager's flow counters, shown by `rdbg status` and read by tests. */
export interface FlowStats {
  bytesIn: number; // from destinations
  bytesOut: number; // to destinations
  flowsOpened: number;
  flowsFailed: number;
  flowsActive: number;
}

export function newFlowStats(): FlowStats {
  return { bytesIn: 0, bytesOut: 0, flowsOpened: 0, flowsFailed: 0, flowsActive: 0 };
}
