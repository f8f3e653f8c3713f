import type { Socket } from 'node:net';
import { errorMessage } from '../core/errors';
import type { TunnelStream, TunnelMessage__Output } from './messages';

export interface ByteCounters {
  bytesOut: number; // socket -> stream
  bytesIn: number; // stream -> socket
}

export interface PipeOptions {
  counters?: ByteCounters;
  /** Called once when the flow is over, with the reason when it did not end cleanly. */
  onDone?: (err?: string) => void;
}

/**
 * Joins a TCP socket and a tunnel stream whose dial has already succeeded.
 * Carries bytes both ways with backpressure, turns FIN into close_write (and
 * back), and turns a reset or a broken stream into an RST on the socket.
 * The socket must have been created with allowHalfOpen.
 */
export function pipeFlow(sock: Socket, stream: TunnelStream, opts: PipeOptions = {}): void {
  let sentClose = false;
  let gotClose = false;
  let done = false;
  const counters = opts.counters;

  const finish = (err?: string): void => {
    if (done) return;
    done = true;
    stream.removeAllListeners('data');
    opts.onDone?.(err);
  };

  const maybeEndStream = (): void => {
    if (sentClose && gotClose) {
      stream.end();
      finish();
    }
  };

  const fail = (reason: string, sendReset: boolean): void => {
    if (done) return;
    if (sendReset) {
      try {
        stream.write({ reset: { message: reason } });
        stream.end();
      } catch {
        // the stream is already gone
      }
    }
    if (!sock.destroyed) {
      // libuv refuses an RST while our FIN is in flight (uv_tcp_close_reset: EINVAL), and node
      // then leaks the handle and spins on it at exit: close plainly in that case.
      if (sock.writableEnded && !sock.writableFinished) sock.destroy();
      else sock.resetAndDestroy();
    }
    finish(reason);
  };

  sock.on('data', (chunk: Buffer) => {
    if (counters) counters.bytesOut += chunk.length;
    if (!stream.write({ data: chunk })) sock.pause();
  });
  stream.on('drain', () => sock.resume());
  sock.on('end', () => {
    if (done) return;
    sentClose = true;
    stream.write({ close_write: {} });
    maybeEndStream();
  });
  sock.on('drain', () => stream.resume());
  sock.on('error', (err: NodeJS.ErrnoException) => fail(`local socket: ${err.code ?? errorMessage(err)}`, true));
  sock.on('close', () => {
    if (!done && !(sentClose && gotClose)) fail('local socket closed', true);
  });

  const onMessage = (msg: TunnelMessage__Output): void => {
    switch (msg.msg) {
      case 'data': {
        const data = msg.data!;
        if (counters) counters.bytesIn += data.length;
        if (!sock.write(data)) stream.pause();
        return;
      }
      case 'close_write':
        gotClose = true;
        sock.end();
        maybeEndStream();
        return;
      case 'reset':
        fail(msg.reset?.message || 'reset by peer', false);
        stream.end();
        return;
      default:
        fail(`unexpected tunnel message "${msg.msg ?? 'empty'}" in an open flow`, true);
    }
  };
  stream.on('data', onMessage);
  stream.on('end', () => {
    // A peer that ends its side without close_write has stopped sending all the same.
    if (!gotClose && !done) {
      gotClose = true;
      sock.end();
      maybeEndStream();
    }
  });
  stream.on('error', (err) => fail(`tunnel: ${err.details ?? errorMessage(err)}`, false));
}
