import type { ByteCounters } from '../src/tunnel/flow-pipe';

/** What a manager's data paths count: bytes both ways and flows opened, failed and open. */
export interface TunnelStats extends ByteCounters {
  flowsOpened: number;
  flowsFailed: number;
  flowsActive: number;
}
