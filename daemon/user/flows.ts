import type { Socket } from 'node:net';
import { H2FlowClient } from '../../src/tunnel/h2-client';
import { datagramChannel, type DatagramChannel } from '../../src/tunnel/h2-flows';
import { pipeFlow } from '../../src/tunnel/flow-pipe';
import { DialError } from '../../src/tunnel/messages';
import { RawFlowBudget } from '../../src/tunnel/raw-flow';
import { openTcpFlow, RawConnectionPool } from '../../src/tunnel/raw-pool';
import { openFileLimit } from '../../src/core/rlimit';
import type { Counters } from './counters';
import type { ManagerLink } from './manager-link';
import { openFlow } from './tunnel-client';

/** An opened TCP flow, waiting to be joined to a local socket. */
export interface TcpFlow {
  join(sock: Socket, onDone: (err?: string) => void): void;
  cancel(): void;
}

/** An opened UDP flow: one datagram in, one datagram out. */
export type UdpFlow = DatagramChannel;

/**
 * Opens flows to cluster destinations: TCP as raw flows on the manager's data
 * port where it is reached directly (the fastest path), otherwise over its
 * HTTP/2 data plane, else over the gRPC Tunnel RPC.
 */
export class FlowOpener {
  private h2?: H2FlowClient;
  private h2Address = '';
  readonly rawBudget: RawFlowBudget;

  constructor(
    private readonly link: ManagerLink,
    private readonly counters: Counters,
    private readonly dataAddressOf: () => string | undefined,
    /** whether TCP flows may open connections of their own to the data port (not over port-forward) */
    readonly rawFlows: boolean,
    /** where they may not: how many raw connections to keep opened ahead (see src/tunnel/raw-pool.ts) */
    readonly rawPoolSize = 0,
    /** RDBG_RAW_FLOWS_MAX: raw flows at once; else a share of the open-file limit */
    rawFlowsMax?: number,
  ) {
    this.rawBudget = RawFlowBudget.forThisProcess(openFileLimit(), rawFlowsMax);
    // A new session may mean a new manager pod behind the same port-forward address.
    link.on('session', () => {
      this.h2?.renew();
      this.pool?.flush();
    });
  }

  private pool?: RawConnectionPool;

  dataAddress(): string | undefined {
    return this.dataAddressOf();
  }

  /** The data plane client for the current session, if the manager has a data plane. */
  dataPlane(): H2FlowClient | undefined {
    const addr = this.dataAddressOf();
    if (!addr) return undefined;
    if (!this.h2 || this.h2Address !== addr) {
      this.h2?.close();
      this.pool?.close();
      this.pool = !this.rawFlows && this.rawPoolSize > 0 ? new RawConnectionPool(addr, this.rawBudget, this.rawPoolSize) : undefined;
      this.h2Address = addr;
      this.h2 = new H2FlowClient(addr, () => ({ 'rdbg-session': this.link.sessionId }), (why) => this.link.lost(why));
    }
    return this.h2;
  }

  async tcp(host: string, port: number, source: string): Promise<TcpFlow> {
    const h2 = this.dataPlane();
    if (h2) {
      this.requireConnected();
      const dp = { address: this.h2Address, h2, rawFlows: this.rawFlows, budget: this.rawBudget, pool: this.pool };
      return openTcpFlow(dp, { session: this.link.sessionId, protocol: 'tcp', host, port, source }, this.counters);
    }
    const stream = await openFlow(this.link, 'TCP', host, port, source);
    return { join: (sock, onDone) => pipeFlow(sock, stream, { counters: this.counters, onDone }), cancel: () => stream.cancel?.() };
  }

  async udp(host: string, port: number, source: string): Promise<UdpFlow> {
    const h2 = this.dataPlane();
    const closeFns: (() => void)[] = [];
    if (h2) {
      this.requireConnected();
      return datagramChannel(await h2.open('udp', host, port, source));
    }
    const stream = await openFlow(this.link, 'UDP', host, port, source);
    stream.on('end', () => closeFns.forEach((f) => f()));
    stream.on('error', () => closeFns.forEach((f) => f()));
    return {
      send: (d) => stream.write({ data: d }),
      onDatagram: (fn) =>
        stream.on('data', (m) => {
          if (m.msg === 'data' && m.data) fn(m.data);
        }),
      onClose: (fn) => closeFns.push(fn),
      close: () => stream.end(),
    };
  }

  private requireConnected(): void {
    if (this.link.state !== 'CONNECTED') {
      throw new DialError('UNREACHABLE', `not connected to the traffic manager (${this.link.state.toLowerCase()}: ${this.link.lastError})`);
    }
  }

  close(): void {
    this.h2?.close();
    this.pool?.close();
  }
}
