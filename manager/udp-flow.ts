import * as dgram from 'node:dgram';
import { isIP } from 'node:net';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { dialCodeForErrno, type DialCode } from '../src/tunnel/messages';
import { describeErrno } from './errno';
import { countDialFailure, type FlowStats } from './flow-stats';
import { joinHostPort } from '../src/core/address';

const log = logger('manager.udp');

const UDP_IDLE_MS = 60_000;

/** The client's end of a UDP flow, as the data plane carries it. */
export interface UdpFlowClient {
  /** The dial's result, given once: OK, or the code and message of why not. */
  answer(code: DialCode, message: string, errno?: string): void;
  /** One datagram from the destination. */
  deliver(d: Buffer): void;
  /** Start passing the client's datagrams to `send`; `close` ends the flow. Called once, when the dial succeeded. */
  start(send: (d: Buffer) => void, close: () => void): void;
  /** The flow is over: end the client's side. */
  end(): void;
}

export interface UdpFlowHandle {
  /** The client went away: drop the flow (also while it dials). */
  close(): void;
}

/**
 * A UDP flow to address:port from a connected socket. A failed connect is
 * answered with its dial code, and a failed send, a throwing transport or
 * any socket error ends this flow only: nothing in here may escape into the
 * event loop, where it would end the manager and every session on it.
 * The flow ends after a minute of silence.
 */
export function openUdpFlow(address: string, port: number, client: UdpFlowClient, stats: FlowStats): UdpFlowHandle {
  const dst = joinHostPort(address, port);
  const sock = dgram.createSocket(isIP(address) === 6 ? 'udp6' : 'udp4');
  let state: 'dialling' | 'open' | 'closed' = 'dialling';
  let idle: NodeJS.Timeout | undefined;
  const close = (why?: string): void => {
    if (state === 'closed') return;
    if (state === 'open') stats.flowsActive--;
    state = 'closed';
    clearTimeout(idle);
    try {
      sock.close();
    } catch {
      // already closed by a failed bind
    }
    if (why) log.debug('UDP flow ended', { dst, err: why });
    guarded(() => client.end());
  };
  const fail = (err: NodeJS.ErrnoException): void => {
    if (state === 'dialling') {
      const code = dialCodeForErrno(err.code);
      countDialFailure(stats, code);
      guarded(() => client.answer(code, `${dst}: ${describeErrno(err)}`, err.code));
    }
    close(describeErrno(err));
  };
  /** Runs a transport's callback; one that throws ends this flow. */
  const guarded = (fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      if (state !== 'closed') close(`transport: ${errorMessage(err)}`);
    }
  };
  const touch = (): void => {
    clearTimeout(idle);
    idle = setTimeout(() => close(), UDP_IDLE_MS);
  };
  sock.on('error', (err: NodeJS.ErrnoException) => {
    // ICMP port unreachable shows up as ECONNREFUSED on a connected socket: keep the flow.
    if (err.code !== 'ECONNREFUSED') fail(err);
  });
  sock.on('message', (m) => {
    if (state !== 'open') return;
    touch();
    stats.bytesIn += m.length;
    guarded(() => client.deliver(m));
  });
  const send = (d: Buffer): void => {
    if (state !== 'open') return;
    touch();
    stats.bytesOut += d.length;
    try {
      sock.send(d, (err) => {
        if (err && (err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') fail(err);
      });
    } catch (err) {
      fail(err as NodeJS.ErrnoException);
    }
  };
  // Node passes connect's error to this callback (its types leave it out): a
  // destination with no route fails here, and the socket stays unconnected.
  const connected = (err?: NodeJS.ErrnoException): void => {
    if (err) return fail(err);
    if (state !== 'dialling') return;
    state = 'open';
    stats.flowsOpened++;
    stats.flowsActive++;
    touch();
    guarded(() => client.answer('OK', ''));
    guarded(() => client.start(send, () => close()));
  };
  try {
    sock.connect(port, address, connected as () => void);
  } catch (err) {
    fail(err as NodeJS.ErrnoException);
  }
  return { close: () => close() };
}
