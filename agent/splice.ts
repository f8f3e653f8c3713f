import type { Duplex } from 'node:stream';

type Conn = Duplex & { resetAndDestroy?: () => unknown };

/** Abort a connection: RST for a TCP socket, a tunnel reset for a diverted flow. */
export function abort(c: Conn): void {
  if (c.destroyed) return;
  // libuv refuses an RST while our FIN is in flight (uv_tcp_close_reset: EINVAL), and node
  // then leaks the handle: close plainly in that case.
  if (typeof c.resetAndDestroy === 'function' && !(c.writableEnded && !c.writableFinished)) {
    try {
      c.resetAndDestroy();
      return;
    } catch {
      // not connected yet: plain destroy
    }
  }
  c.destroy();
}

/**
 * Join two byte streams both ways with backpressure. FIN is passed on as FIN
 * (both should allow half-open); an error or an abrupt close on one side
 * aborts the other.
 */
export function splice(a: Conn, b: Conn, onDone?: () => void): void {
  let closed = 0;
  const side = (x: Conn, y: Conn): void => {
    x.pipe(y);
    x.on('error', () => abort(y));
    x.on('close', () => {
      if (!(x.readableEnded && x.writableFinished)) abort(y);
      if (++closed === 2) onDone?.();
    });
  };
  side(a, b);
  side(b, a);
}
