import * as dgram from 'node:dgram';
import { isIP } from 'node:net';
import type { TunnelStats } from './tunnel-handler';
import type { TunnelStream } from '../src/tunnel/messages';

const UDP_IDLE_MS = 60_000;

/**
 * A UDP flow: every `data` message is one datagram to the destination, every
 * datagram from it comes back as one `data` message. Ends after a minute of
 * silence, or when the client ends the stream.
 */
export function runUdpFlow(address: string, port: number, stream: TunnelStream, stats: TunnelStats, onDone: () => void): void {
  const sock = dgram.createSocket(isIP(address) === 6 ? 'udp6' : 'udp4');
  let closed = false;
  let idle: NodeJS.Timeout;
  const close = (): void => {
    if (closed) return;
    closed = true;
    clearTimeout(idle);
    sock.close();
    try {
      stream.end();
    } catch {
      // gone
    }
    onDone();
  };
  const touch = (): void => {
    clearTimeout(idle);
    idle = setTimeout(close, UDP_IDLE_MS);
  };
  sock.on('error', (err) => {
    // ICMP port unreachable shows up as ECONNREFUSED on a connected socket: keep the flow.
    if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') close();
  });
  sock.on('message', (msg) => {
    touch();
    stats.bytesIn += msg.length;
    stream.write({ data: msg });
  });
  sock.connect(port, address, () => {
    stream.write({ dial: { code: 'OK', address } });
    touch();
    stream.on('data', (m) => {
      if (m.msg === 'data' && m.data) {
        touch();
        stats.bytesOut += m.data.length;
        sock.send(m.data);
      } else if (m.msg === 'close_write' || m.msg === 'reset') {
        close();
      }
    });
  });
  stream.on('end', close);
  stream.on('error', close);
}
