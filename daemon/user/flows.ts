import type { Socket } from 'node:net';
import { H2FlowClient } from '../../src/tunnel/h2-client';
import { datagramChannel, type DatagramChannel } from '../../src/tunnel/h2-flows';
import { DialError } from '../../src/tunnel/messages';
import { RawFlowBudget } from '../../src/tunnel/raw-flow';
import { openTcpFlow } from '../../src/tunnel/client';
import { openFileLimit } from '../../src/core/rlimit';
import type { Counters } from './counters';
import type { ManagerLink } from './manager-link';

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
 * HTTP/2 data plane.
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
    /** RDBG_RAW_FLOWS_MAX: raw flows at once; else a share of the open-file limit */
    rawFlowsMax?: number,
  ) {
    this.rawBudget = RawFlowBudget.forThisProcess(openFileLimit(), rawFlowsMax);
    // A new session may mean a new manager pod behind the same port-forward address.
    link.on('session', () => this.h2?.renew());
  }

  dataAddress(): string | undefined {
    return this.dataAddressOf();
  }

  /** The data plane client for the current session, if the manager has a data plane. */
  dataPlane(): H2FlowClient | undefined {
    const addr = this.dataAddressOf();
    if (!addr) return undefined;
    if (!this.h2 || this.h2Address !== addr) {
      this.h2?.close();
      this.h2Address = addr;
      this.h2 = new H2FlowClient(addr, () => ({ 'rdbg-session': this.link.sessionId }), (why) => this.link.lost(why));
    }
    return this.h2;
  }

  async tcp(host: string, port: number, source: string): Promise<TcpFlow> {
    const h2 = this.requireDataPlane();
    const dp = { address: this.h2Address, h2, rawFlows: this.rawFlows, budget: this.rawBudget };
    return openTcpFlow(dp, { session: this.link.sessionId, protocol: 'tcp', host, port, source }, this.counters);
  }

  async udp(host: string, port: number, source: string): Promise<UdpFlow> {
    return datagramChannel(await this.requireDataPlane().open('udp', host, port, source));
  }

  private requireDataPlane(): H2FlowClient {
    if (this.link.state !== 'CONNECTED') {
      throw new DialError('UNREACHABLE', `not connected to the traffic manager (${this.link.state.toLowerCase()}: ${this.link.lastError})`);
    }
    const h2 = this.dataPlane();
    if (!h2) throw new DialError('UNREACHABLE', 'the traffic manager has no data port: upgrade it');
    return h2;
  }

  close(): void {
    this.h2?.close();
  }
}
