import type { TunnelStream } from '../src/tunnel/messages';

/**
 * Joins two tunnel streams message for message, with backpressure each way.
 * When one side ends, the other is ended; when one side breaks, the other
 * gets a reset.
 */
export function spliceStreams(a: TunnelStream, b: TunnelStream): void {
  let over = false;
  const oneWay = (from: TunnelStream, to: TunnelStream): void => {
    from.on('data', (m) => {
      if (!to.write(m)) from.pause();
    });
    to.on('drain', () => from.resume());
    from.on('end', () => {
      try {
        to.end();
      } catch {
        // gone
      }
    });
    from.on('error', (err) => {
      if (over) return;
      over = true;
      try {
        to.write({ reset: { message: `peer vanished: ${err.details ?? err.message}` } });
        to.end();
      } catch {
        // gone
      }
    });
  };
  oneWay(a, b);
  oneWay(b, a);
  a.resume();
  b.resume();
}
