/**
 * A tiny real HTTP server that names itself in every answer, used as "the app"
 * in a pod and as "the developer's local copy" on a laptop.
 * Usage: node tiny-http.js HOST PORT NAME   (prints READY)
 */
import * as http from 'node:http';

const [host, port, name] = process.argv.slice(2);
const server = http.createServer((req, res) => {
  let body = 0;
  req.on('data', (d: Buffer) => (body += d.length));
  req.on('end', () => {
    res.setHeader('x-served-by', name);
    res.end(`${name} ${req.method} ${req.url} dev=${req.headers['x-dev'] ?? '-'} body=${body} env=${process.env.APP_SECRET ?? '-'}\n`);
  });
});
server.keepAliveTimeout = 30_000;
server.listen(Number(port), host, () => process.stdout.write('READY\n'));
