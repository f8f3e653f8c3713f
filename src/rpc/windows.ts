import type * as grpc from '@grpc/grpc-js';
import type * as http2 from 'node:http2';

const WINDOW = 16 * 1024 * 1024;

/**
 * grpc-js servers keep HTTP/2's 64 KB default receive window (grpc-node
 * PR #3058), which caps uploads at window/RTT over a slow link. Widen the
 * per-stream and per-connection windows of every session the server accepts.
 * This reaches into grpc-js's private fields: if they move, it does nothing.
 */
export function enlargeServerWindows(server: grpc.Server): void {
  const internals = server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> };
  if (!(internals.http2Servers instanceof Map)) return;
  for (const h2 of internals.http2Servers.keys()) {
    h2.on('session', (session: http2.ServerHttp2Session) => {
      session.settings({ initialWindowSize: WINDOW });
      session.once('localSettings', () => {
        try {
          session.setLocalWindowSize(WINDOW);
        } catch {
          // session already closed
        }
      });
    });
  }
}
