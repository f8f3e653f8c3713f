/**
 * An HTTP server that prints one JSON line per request it has read to the end
 * or lost: {method, url, bytes, complete}. Used where the answer is dropped
 * (a mirror's laptop) and the test must still see what arrived.
 * Usage: node body-counter.js HOST PORT NAME   (prints READY)
 */
import * as http from 'node:http';

const [host, port, name] = process.argv.slice(2);
const server = http.createServer((req, res) => {
  let bytes = 0;
  let reported = false;
  const report = (complete: boolean): void => {
    if (reported) return;
    reported = true;
    process.stdout.write(JSON.stringify({ name, method: req.method, url: req.url, bytes, complete }) + '\n');
  };
  req.on('data', (d: Buffer) => (bytes += d.length));
  req.on('end', () => {
    report(true);
    res.end(`${name} ${req.method} ${req.url} body=${bytes}\n`);
  });
  req.on('close', () => report(req.complete));
  req.on('error', () => undefined);
});
server.keepAliveTimeout = 30_000;
server.listen(Number(port), host, () => process.stdout.write('READY\n'));
