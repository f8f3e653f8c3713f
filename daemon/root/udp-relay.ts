import { ipFromBytes, joinHostPort } from '../../src/core/address';
import { logger } from '../../src/core/log';
import type { DatagramChannel } from '../../src/tunnel/h2/protocol';
import { UdpFlowTable, type UdpFlowTableStats } from '../../src/tunnel/udp-flow-table';
import { buildHostUnreachable, buildUdp, parsePacket, type Packet } from './packet';

const log = logger('rootd.udp');

const IDLE_MS = 60_000;
const MAX_FLOWS = 4096;
/** One local socket may hold this many flows (a DNS client or a game needs a few; a scan gets no more). */
const MAX_FLOWS_PER_SOURCE = 256;

export interface UdpDialer {
  dial(host: string, port: number, source: string): Promise<DatagramChannel>;
}

interface Flow {
  channel?: Promise<DatagramChannel | undefined>;
  closed?: boolean;
}

export interface UdpRelayOptions {
  maxFlows?: number;
  maxFlowsPerSource?: number;
  idleMs?: number;
}

/** UDP from local programs to cluster addresses: one tunnel flow per (source, destination) pair. */
export class UdpRelay {
  private readonly flows: UdpFlowTable<Flow>;
  stats = { flows: 0, failed: 0 };

  constructor(
    private readonly dialer: UdpDialer,
    private readonly write: (pkt: Buffer) => boolean,
    opts: UdpRelayOptions = {},
  ) {
    this.flows = new UdpFlowTable<Flow>({
      max: opts.maxFlows ?? MAX_FLOWS,
      perSource: opts.maxFlowsPerSource ?? MAX_FLOWS_PER_SOURCE,
      idleMs: opts.idleMs ?? IDLE_MS,
      onEvict: (f) => this.close1(f),
    });
  }

  get active(): number {
    return this.flows.size;
  }

  table(): UdpFlowTableStats {
    return this.flows.stats();
  }

  onPacket(p: Packet): void {
    const source = `${p.src.toString('hex')}:${p.srcPort}`;
    const key = `${source}>${p.dst.toString('hex')}:${p.dstPort}`;
    const payload = Buffer.from(p.buf.subarray(p.payloadOffset));
    let flow = this.flows.get(key);
    if (!flow) {
      flow = {};
      this.flows.add(key, source, flow);
      this.stats.flows++;
      const family = p.family;
      const app = Buffer.from(p.src);
      const appPort = p.srcPort;
      const dst = Buffer.from(p.dst);
      const dstPort = p.dstPort;
      const first = Buffer.from(p.buf);
      const f = flow;
      flow.channel = this.dialer.dial(ipFromBytes(dst), dstPort, joinHostPort(ipFromBytes(app), appPort)).then(
        (ch) => {
          if (f.closed) {
            ch.close();
            return undefined;
          }
          ch.onDatagram((d) => {
            if (this.flows.get(key) === f) this.flows.touch(key);
            this.write(buildUdp(family, dst, dstPort, app, appPort, d));
          });
          ch.onClose(() => this.drop(key, f));
          return ch;
        },
        (err: Error) => {
          this.stats.failed++;
          this.drop(key, f);
          const orig = parsePacket(first);
          if (orig && !f.closed) this.write(buildHostUnreachable(orig));
          log.debug('UDP flow failed', { dst: joinHostPort(ipFromBytes(dst), dstPort), err: err.message });
          return undefined;
        },
      );
    } else {
      this.flows.touch(key);
    }
    void flow.channel!.then((ch) => ch?.send(payload));
  }

  /** The flow ended by itself: forget it if it is still the one under its key. */
  private drop(key: string, flow: Flow): void {
    if (this.flows.get(key) === flow) this.flows.delete(key);
  }

  private close1(flow: Flow): void {
    flow.closed = true;
    void flow.channel?.then((ch) => ch?.close());
  }

  close(): void {
    for (const f of this.flows.values()) this.close1(f);
    this.flows.clear();
  }
}
