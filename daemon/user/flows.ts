import type { Socket } from 'node:net';
import { DataPlaneClient } from '../../src/tunnel/client';
import type { DatagramChannel } from '../../src/tunnel/h2/protocol';
import { DialError } from '../../src/tunnel/messages';
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

/** The user daemon's flows (SOCKS5, diverted flows) on the data plane of the link's current session. */
export class FlowOpener {
  readonly client: DataPlaneClient;

  constructor(
    private readonly link: ManagerLink,
    counters: Counters,
    private readonly dataAddressOf: () => string | undefined,
    /** whether TCP flows may open connections of their own to the data port (not over port-forward) */
    readonly rawFlows: boolean,
    /** RDBG_RAW_FLOWS_MAX: raw flows at once; else a share of the open-file limit */
    rawFlowsMax?: number,
  ) {
    this.client = new DataPlaneClient({ fileLimit: openFileLimit(), rawFlowsMax, counters, onLost: (why) => link.lost(why) });
    link.on('session', () => this.dataPlane());
  }

  dataAddress(): string | undefined {
    return this.dataAddressOf();
  }

  /** The data plane for the current session, if the manager has one. */
  dataPlane(): DataPlaneClient | undefined {
    const address = this.dataAddressOf();
    if (!address) return undefined;
    this.client.use({ address, session: this.link.sessionId, direct: this.rawFlows });
    return this.client;
  }

  async tcp(host: string, port: number, source: string): Promise<TcpFlow> {
    return this.connected().tcp(host, port, source);
  }

  async udp(host: string, port: number, source: string): Promise<UdpFlow> {
    return this.connected().udp(host, port, source);
  }

  private connected(): DataPlaneClient {
    if (this.link.state !== 'CONNECTED') {
      throw new DialError('UNREACHABLE', `not connected to the traffic manager (${this.link.state.toLowerCase()}: ${this.link.lastError})`);
    }
    const dp = this.dataPlane();
    if (!dp) throw new DialError('UNREACHABLE', 'the traffic manager has no data port: upgrade it');
    return dp;
  }

  close(): void {
    this.client.close();
  }
}
