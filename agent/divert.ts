import type * as http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { DialError } from '../src/tunnel/messages';
import { DivertError } from './errors';
import type { ActiveIntercept } from './intercept-table';
import type { ManagerLink } from './manager-link';

const log = logger('agent.divert');

/** The text a caller reads when its diverted request could not reach the laptop. */
export function divertFailure(i: ActiveIntercept, reason: string): string {
  // The laptop's own dial message may already name the target; say it once.
  const why = reason.replace(/^could not reach \S+: /, '');
  return `rdbg intercept of ${i.workload} by ${i.owner} could not reach ${i.target}: ${why}`;
}

/**
 * A diverted flow as a node Duplex (for splicing, and for http/http2 clients):
 * an HTTP/2 stream on the manager's data plane, answering the net.Socket
 * methods http's Agent calls.
 */
export async function openDivertedDuplex(link: ManagerLink, i: ActiveIntercept, source: string, allowHalfOpen = true): Promise<Duplex> {
  const data = link.dataPlane;
  if (!data) throw new DivertError(divertFailure(i, 'the traffic agent is not connected to the traffic manager\'s data port'));
  let stream: http2.ClientHttp2Stream;
  try {
    stream = await data.divert(i.id);
  } catch (err) {
    throw new DivertError(divertFailure(i, errorMessage(err)), err instanceof DialError ? err.code : undefined);
  }
  log.debug('diverted flow open', { intercept: i.id, source });
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
