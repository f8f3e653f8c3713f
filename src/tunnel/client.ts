import type { H2FlowClient } from './h2-client';
import { joinSocket } from './h2-flows';
import { openRawFlow, type JoinCounters, type JoinableFlow, type RawFlowBudget, type RawFlowRequest } from './raw-flow';

/** How a process reaches the manager's data plane for TCP flows. */
export interface TcpDataPlane {
  address: string;
  h2: H2FlowClient;
  /** raw flows on connections of their own (the manager is reached directly) */
  rawFlows: boolean;
  budget: RawFlowBudget;
}

/**
 * A TCP flow on the manager's data plane: a raw flow on a connection of its
 * own where the manager is reached directly (within the budget), else an
 * HTTP/2 stream. A raw flow's half-close goes beside it (h2.halfClose) and
 * its FIN follows the manager's, so that the manager, not the laptop, keeps
 * the closed connection's TIME_WAIT (see RawFlowBudget).
 */
export async function openTcpFlow(dp: TcpDataPlane, req: RawFlowRequest, counters?: JoinCounters): Promise<JoinableFlow> {
  const release = dp.rawFlows ? dp.budget.take() : undefined;
  if (release) {
    const halfClose = (flow: string, n: number): Promise<boolean> => dp.h2.halfClose(flow, n);
    return openRawFlow(dp.address, req, release, { counters, halfClose, onClosedFirst: () => dp.budget.closedFirst() });
  }
  const stream = await dp.h2.open('tcp', req.host, req.port, req.source);
  return { join: (sock, onDone) => joinSocket(sock, stream, counters, onDone), cancel: () => stream.close() };
}
