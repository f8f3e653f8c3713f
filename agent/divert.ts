import type * as http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { StreamDuplex } from '../src/tunnel/stream-duplex';
import { DialError, type TunnelMessage__Output, type TunnelStream } from '../src/tunnel/messages';
import { DivertError } from './errors';
import type { ActiveIntercept } from './intercept-table';
import type { ManagerLink } from './manager-link';

const log = logger('agent.divert');

/** The manager waits 10 s for the client to accept; allow a little more. */
const DIAL_TIMEOUT_MS = 12_000;

/** The text a caller reads when its diverted request could not reach the laptop. */
export function divertFailure(i: ActiveIntercept, reason: string): string {
  // The laptop's own dial message may already name the target; say it once.
  const why = reason.replace(/^could not reach \S+: /, '');
  return `rdbg intercept of ${i.workload} by ${i.owner} could not reach ${i.target}: ${why}`;
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

/**
 * A diverted flow as a node Duplex (for splicing, and for http/http2 clients):
 * an HTTP/2 stream on the manager's data plane when it has one, else a
 * Tunnel RPC stream. Both answer the net.Socket methods http's Agent calls.
 */
export async function openDivertedDuplex(link: ManagerLink, i: ActiveIntercept, source: string, allowHalfOpen = true): Promise<Duplex> {
  const data = link.dataPlane;
  if (!data) return new StreamDuplex(await openDivertedFlow(link, i, source), { allowHalfOpen });
  let stream: http2.ClientHttp2Stream;
  try {
    stream = await data.divert(i.id);
  } catch (err) {
    throw new DivertError(divertFailure(i, errorMessage(err)), err instanceof DialError ? err.code : undefined);
  }
  log.debug('diverted flow open (data plane)', { intercept: i.id, source });
  return socketLike(stream, allowHalfOpen);
}

type WriteCb = (err?: Error | null) => void;

/** An HTTP/2 stream standing in for a socket: END_STREAM is FIN, RST_STREAM is a reset. */
function socketLike(stream: http2.ClientHttp2Stream, allowHalfOpen: boolean): Duplex {
  const s = stream as http2.ClientHttp2Stream & Record<string, unknown>;
  for (const m of ['setKeepAlive', 'setNoDelay', 'ref', 'unref']) if (typeof s[m] !== 'function') s[m] = () => s;
  // Node 20's Http2Stream corrupts string chunks (http's request heads) written through its
  // native writev: the string's temporary storage is gone before nghttp2 sends it. Hand it
  // Buffers only, one per batch.
  const write = (stream as unknown as { _write(c: Buffer, e: string, cb: WriteCb): void })._write.bind(stream);
  const bytes = (chunk: Buffer | string, enc: string): Buffer => (typeof chunk === 'string' ? Buffer.from(chunk, enc as BufferEncoding) : chunk);
  s._write = (chunk: Buffer | string, enc: string, cb: WriteCb) => write(bytes(chunk, enc), 'buffer', cb);
  s._writev = (chunks: Array<{ chunk: Buffer | string; encoding: string }>, cb: WriteCb) =>
    write(Buffer.concat(chunks.map((c) => bytes(c.chunk, c.encoding))), 'buffer', cb);
  // A pooled HTTP/1 flow whose laptop end closed is closed here too, so the pool drops it.
  if (!allowHalfOpen) stream.once('end', () => stream.writableEnded || stream.end());
  return stream;
}
