import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { StreamDuplex } from '../src/tunnel/stream-duplex';
import type { TunnelMessage__Output, TunnelStream } from '../src/tunnel/messages';
import { DivertError } from './errors';
import type { ActiveIntercept } from './intercept-table';
import type { ManagerLink } from './manager-link';

const log = logger('agent.divert');

/** The manager waits 10 s for the client to accept; allow a little more. */
const DIAL_TIMEOUT_MS = 12_000;

/** The text a caller reads when its diverted request could not reach the laptop. */
export function divertFailure(i: ActiveIntercept, reason: string): string {
  return `rdbg intercept of ${i.workload} by ${i.owner} could not reach ${i.target}: ${reason}`;
}

/**
 * Opens a diverted flow for one intercept: a Tunnel stream to the manager,
 * `open {intercept_id, agent_id}`, then the owner's dial result. Resolves with
 * the dialled stream, paused (resume it after attaching listeners); rejects with a DivertError whose message is for the caller.
 */
export function openDivertedFlow(link: ManagerLink, i: ActiveIntercept, source: string): Promise<TunnelStream> {
  const agentId = link.agentId;
  if (!agentId) return Promise.reject(new DivertError(divertFailure(i, 'the traffic agent is not connected to the traffic manager')));
  return new Promise((resolve, reject) => {
    const call = link.client.Tunnel();
    const stream = call as unknown as TunnelStream;
    let settled = false;
    const fail = (reason: string, code?: DivertError['dial']): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      call.removeAllListeners('data');
      call.on('error', () => undefined);
      call.cancel();
      reject(new DivertError(divertFailure(i, reason), code));
    };
    const timer = setTimeout(() => fail('no answer from the rdbg client within 12 seconds', 'TIMEOUT'), DIAL_TIMEOUT_MS);
    call.on('error', (err: Error & { details?: string }) => fail(`the traffic manager: ${err.details || errorMessage(err)}`));
    stream.once('data', (msg: TunnelMessage__Output) => {
      if (settled) return;
      if (msg.msg !== 'dial' || !msg.dial) {
        fail(`the traffic manager answered "${msg.msg ?? 'empty'}" instead of a dial result`);
        return;
      }
      if (msg.dial.code !== 'OK') {
        fail(msg.dial.message || msg.dial.code, msg.dial.code);
        return;
      }
      settled = true;
      clearTimeout(timer);
      // Paused until its taker attaches listeners and resumes it (a later tick).
      call.removeAllListeners('error');
      call.on('error', () => undefined);
      stream.pause();
      log.debug('diverted flow open', { intercept: i.id, source });
      resolve(stream);
    });
    call.write({ open: { intercept_id: i.id, agent_id: agentId, protocol: 'TCP', source } });
  });
}

/** A diverted flow as a node Duplex (for http/http2 clients). */
export async function openDivertedDuplex(link: ManagerLink, i: ActiveIntercept, source: string, allowHalfOpen = true): Promise<StreamDuplex> {
  const stream = await openDivertedFlow(link, i, source);
  return new StreamDuplex(stream, { allowHalfOpen });
}
