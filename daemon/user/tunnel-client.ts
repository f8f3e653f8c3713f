import type { Protocol } from '../../src/gen/rdbg/v1/Protocol';
import { DialError, type TunnelStream } from '../../src/tunnel/messages';

export { DialError };
import type { ManagerLink } from './manager-link';

const DIAL_TIMEOUT_MS = 15_000;


/** Opens one tunnel stream to a destination in the cluster and waits for the manager's dial. */
export function openFlow(link: ManagerLink, protocol: Protocol, host: string, port: number, source: string): Promise<TunnelStream> {
  return new Promise((resolve, reject) => {
    if (link.state !== 'CONNECTED') {
      reject(new DialError('UNREACHABLE', `not connected to the traffic manager (${link.state.toLowerCase()}: ${link.lastError})`));
      return;
    }
    const call = link.client.tunnel() as unknown as TunnelStream;
    let settled = false;
    const timer = setTimeout(() => fail(new DialError('TIMEOUT', `the manager did not answer the dial of ${host}:${port} in time`)), DIAL_TIMEOUT_MS);
    const fail = (err: DialError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      call.removeAllListeners('data');
      call.cancel?.();
      reject(err);
    };
    call.on('error', (err) => {
      if (err.code === 14) link.lost(err.details ?? err.message);
      fail(new DialError('FAILED', `tunnel: ${err.details ?? err.message}`));
    });
    call.once('data', (msg) => {
      if (msg.msg !== 'dial' || !msg.dial) return fail(new DialError('FAILED', `the manager answered "${msg.msg}" instead of a dial result`));
      if (msg.dial.code !== 'OK') return fail(new DialError(msg.dial.code, msg.dial.message || msg.dial.code));
      settled = true;
      clearTimeout(timer);
      resolve(call);
    });
    call.write({ open: { session_id: link.sessionId, protocol, host, port, source } });
  });
}
