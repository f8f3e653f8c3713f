import { logger } from '../../src/core/log';
import type { DatagramChannel } from '../../src/tunnel/h2-flows';
import { addrToString, buildHostUnreachable, buildUdp, parsePacket, type Packet } from './packet';

const log = logger('rootd.udp');

const IDLE_MS = 60_000;
const MAX_FLOWS = 4096;

export interface UdpDialer {
  dial(host: string, port: number, source: string): Promise<DatagramChannel>;
}

interface Flow {
  channel?: Promise<DatagramChannel | undefined>;
  idle?: NodeJS.Timeout;
}

/** UDP from local programs to cluster addresses: one tunnel flow per (source, destination) pair. */
export class UdpRelay {
  private readonly flows = new Map<string, Flow>();
  stats = { flows: 0, failed: 0 };

  constructor(
    private readonly dialer: UdpDialer,
    private readonly write: (pkt: Buffer) => boolean,
  ) {}

  get active(): number {
    return this.flows.size;
  }

  onPacket(p: Packet): void {
    const key = `${p.src.toString('hex')}:${p.srcPort}>${p.dst.toString('hex')}:${p.dstPort}`;
    const payload = Buffer.from(p.buf.subarray(p.payloadOffset));
    let flow = this.flows.get(key);
    if (!flow) {
      if (this.flows.size >= MAX_FLOWS) return;
      flow = {};
      this.flows.set(key, flow);
      this.stats.flows++;
      const family = p.family;
      const app = Buffer.from(p.src);
      const appPort = p.srcPort;
      const dst = Buffer.from(p.dst);
      const dstPort = p.dstPort;
      const first = Buffer.from(p.buf);
      const f = flow;
      flow.channel = this.dialer.dial(addrToString(dst), dstPort, `${addrToString(app)}:${appPort}`).then(
        (ch) => {
          ch.onDatagram((d) => {
            this.touch(key, f);
            this.write(buildUdp(family, dst, dstPort, app, appPort, d));
          });
          ch.onClose(() => this.drop(key, f));
          return ch;
        },
        (err: Error) => {
          this.stats.failed++;
          this.drop(key, f);
          const orig = parsePacket(first);
          if (orig) this.write(buildHostUnreachable(orig));
          log.debug('UDP flow failed', { dst: `${addrToString(dst)}:${dstPort}`, err: err.message });
          return undefined;
        },
      );
    }
    this.touch(key, flow);
    void flow.channel!.then((ch) => ch?.send(payload));
  }

  private touch(key: string, flow: Flow): void {
    clearTimeout(flow.idle);
    flow.idle = setTimeout(() => {
      this.drop(key, flow);
      void flow.channel?.then((ch) => ch?.close());
    }, IDLE_MS);
  }

  private drop(key: string, flow: Flow): void {
    clearTimeout(flow.idle);
    if (this.flows.get(key) === flow) this.flows.delete(key);
  }

  close(): void {
    for (const [key, f] of this.flows) {
      this.drop(key, f);
      void f.channel?.then((ch) => ch?.close());
    }
  }
}
