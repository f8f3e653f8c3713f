import type * as http2 from 'node:http2';
import type * as net from 'node:net';
import type { DNSResponse__Output } from '../gen/rdbg/v1/DNSResponse';
import { H2FlowClient } from './h2/client';
import { datagramChannel, type DatagramChannel } from './h2/protocol';
import { DialError, type DialCode } from './messages';
import { RawFlowBudget } from './raw/budget';
import { openRawFlow, type RawFlowOptions } from './raw/flow';
import { HalfCloseChannel } from './raw/half-close';
import { splice, type ByteCounters, type JoinableFlow, type SpliceOptions } from './splice';

/** Where a session's flows go. */
export interface DataPlaneTarget {
  /** host:port of the manager's data port (direct, or the local end of a port-forward) */
  address: string;
  session: string;
  /** the manager is reached directly: TCP flows may take connections of their own */
  direct: boolean;
}

export interface DataPlaneOptions {
  /** the open-file limit the raw-flow budget is a share of */
  fileLimit: number;
  /** RDBG_RAW_FLOWS_MAX: raw flows at once (0: every flow over HTTP/2) */
  rawFlowsMax?: number;
  counters?: ByteCounters;
  /** the data plane's HTTP/2 connection stopped answering */
  onLost?: (why: string) => void;
}

/**
 * A process's client of the manager's data plane, for one session at a time.
 * It owns the connections, renews them for a new session, and picks each
 * TCP flow's transport:
 *   - direct: a TCP connection of its own per flow (raw/), within the budget
 *     of descriptors and ports; its half-close goes beside it on one shared
 *     channel (raw/half-close.ts), else as an HTTP/2 request, else as a FIN;
 *   - otherwise (port-forward, or past the budget): a stream on the one
 *     HTTP/2 connection (h2/).
 * UDP, DNS and diverted flows always take HTTP/2 streams.
 */
export class DataPlaneClient {
  readonly budget: RawFlowBudget;
  private target?: DataPlaneTarget;
  private h2?: H2FlowClient;
  private halfCloses?: HalfCloseChannel;
  /** What every raw flow on the current connections is opened with (one object, not closures per flow). */
  private rawFlowOpts?: RawFlowOptions;

  constructor(private readonly opts: DataPlaneOptions) {
    this.budget = RawFlowBudget.forThisProcess(opts.fileLimit, opts.rawFlowsMax);
  }

  /**
   * Carry flows to `target` from now on. A new address gets new connections
   * (the old ones close); a new session on the same address renews them,
   * since it may mean a new manager pod behind the same port-forward. Flows
   * already open carry on.
   */
  use(target: DataPlaneTarget): void {
    const old = this.target;
    this.target = { ...target };
    if (old && old.address === target.address) {
      if (old.session !== target.session) {
        this.h2?.renew();
        this.halfCloses?.renew();
      }
      return;
    }
    this.h2?.close();
    this.halfCloses?.close();
    const session = (): string => this.target?.session ?? '';
    this.h2 = new H2FlowClient(target.address, () => ({ 'rdbg-session': session() }), this.opts.onLost);
    this.halfCloses = new HalfCloseChannel(target.address, session);
    const h2 = this.h2;
    this.rawFlowOpts = {
      counters: this.opts.counters,
      halfClose: (flow, n) => this.halfClose(h2, flow, n),
      onClosedFirst: () => this.budget.closedFirst(),
    };
    // Connected at once (over port-forward: the apiserver's stream and HTTP/2's handshake), not by the first flow.
    this.h2.warm();
  }

  get address(): string | undefined {
    return this.target?.address;
  }

  private current(): { target: DataPlaneTarget; h2: H2FlowClient; rawFlowOpts: RawFlowOptions } {
    if (!this.target || !this.h2 || !this.rawFlowOpts) throw new DialError('UNREACHABLE', 'the traffic manager has no data port: upgrade it');
    return { target: this.target, h2: this.h2, rawFlowOpts: this.rawFlowOpts };
  }

  async tcp(host: string, port: number, source = ''): Promise<JoinableFlow> {
    const { target, h2, rawFlowOpts } = this.current();
    const release = target.direct ? this.budget.take() : undefined;
    if (release) {
      const req = { session: target.session, protocol: 'tcp', host, port, source };
      return openRawFlow(target.address, req, release, rawFlowOpts);
    }
    return new StreamFlow(await h2.open('tcp', host, port, source), this.opts.counters);
  }

  /** A raw flow's half-close: on the channel, else as an HTTP/2 request; false sends a FIN instead. */
  private async halfClose(h2: H2FlowClient, flow: string, bytes: number): Promise<boolean> {
    const taken = await this.halfCloses?.halfClose(flow, bytes);
    return taken ?? h2.halfClose(flow, bytes);
  }

  async udp(host: string, port: number, source = ''): Promise<DatagramChannel> {
    return datagramChannel(await this.current().h2.open('udp', host, port, source));
  }

  async dns(name: string, qtype: number): Promise<DNSResponse__Output> {
    return this.current().h2.dns(name, qtype);
  }

  /** The answer to a flow an agent diverted to this session, after its local process was dialled. */
  async accept(flowId: string, dial: DialCode, message = ''): Promise<http2.ClientHttp2Stream> {
    return this.current().h2.accept(flowId, dial, message);
  }

  close(): void {
    this.h2?.close();
    this.halfCloses?.close();
    this.h2 = undefined;
    this.halfCloses = undefined;
    this.rawFlowOpts = undefined;
    this.target = undefined;
  }
}

/** A TCP flow on an HTTP/2 stream, and once joined its splice's options (one object per flow, see Splice). */
class StreamFlow implements JoinableFlow, SpliceOptions {
  onDone?: (err?: string) => void;

  constructor(
    private readonly stream: http2.ClientHttp2Stream,
    readonly counters: ByteCounters | undefined,
  ) {}

  join(sock: net.Socket, onDone: (err?: string) => void): void {
    this.onDone = onDone;
    splice(sock, this.stream, this);
  }

  cancel(): void {
    this.stream.close();
  }
}
