/**
 * "The app" in the soak's pod and "the developer's local copy" on its laptop:
 * HTTP/1.1 and h2c (prior knowledge) on one port, each answer naming the server.
 * Usage: node dual-http.js HOST PORT NAME   (prints READY)
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';

const [host, port, name] = process.argv.slice(2);
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const answer = (method: string, url: string, dev: unknown): string => `${name} ${method} ${url} dev=${String(dev ?? '-')}\n`;

const h1 = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => res.end(answer(req.method ?? '', req.url ?? '', req.headers['x-dev'])));
});
h1.keepAliveTimeout = 30_000;

const h2 = http2.createServer();
h2.on('stream', (stream, headers) => {
  stream.on('error', () => undefined);
  stream.resume();
  stream.on('end', () => {
    if (stream.destroyed) return;
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.end(answer(String(headers[':method']), String(headers[':path']), headers['x-dev']));
  });
});
h2.on('sessionError', () => undefined);

// The first bytes decide: the HTTP/2 preface, or anything else as HTTP/1.
const front = net.createServer((sock) => {
  sock.on('error', () => undefined);
  let head = Buffer.alloc(0);
  const onData = (d: Buffer): void => {
    head = Buffer.concat([head, d]);
    const n = Math.min(head.length, PREFACE.length);
    const h2ish = head.subarray(0, n).equals(PREFACE.subarray(0, n));
    if (h2ish && head.length < PREFACE.length) return;
    sock.off('data', onData);
    sock.pause();
    sock.unshift(head);
    // http2 takes the unshifted bytes with read() and then the socket's handle; http1 wants a flowing socket.
    if (h2ish) h2.emit('connection', sock);
    else {
      sock.resume();
      h1.emit('connection', sock);
    }
  };
  sock.on('data', onData);
});
front.listen(Number(port), host, () => process.stdout.write('READY\n'));
