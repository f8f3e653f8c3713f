/**
 * The floor of a relay written in Node, for `make bench` (bench/wire.ts): a
 * TCP listener whose every connection is piped to a new connection to one
 * address with Node's own streams (`pipe()` both ways, Nagle off, half-closes
 * passed on), and nothing else: no flow requests, no accounting, no limits.
 * It stands beside socat, the floor of any relay, so that each rdbg row can
 * be read against what its language allows on the same machine.
 *
 *   node dist/bench/pipe-relay.js LISTEN_HOST LISTEN_PORT TO_HOST TO_PORT
 */
import * as net from 'node:net';

function main(): void {
  const [listenHost, listenPort, toHost, toPort] = process.argv.slice(2);
  if (!listenHost || !Number(listenPort) || !toHost || !Number(toPort)) {
    process.stderr.write('usage: pipe-relay LISTEN_HOST LISTEN_PORT TO_HOST TO_PORT\n');
    process.exit(2);
  }
  const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (a) => {
    const b = net.connect({ host: toHost, port: Number(toPort), noDelay: true, allowHalfOpen: true });
    const drop = (): void => {
      a.destroy();
      b.destroy();
    };
    // Each side ends the other (pipe), so both close once both directions are done; a reset drops both.
    a.on('error', drop);
    b.on('error', drop);
    a.pipe(b);
    b.pipe(a);
  });
  server.listen({ host: listenHost, port: Number(listenPort), backlog: 1024 });
  server.on('error', (err) => {
    process.stderr.write(`pipe-relay: ${err.message}\n`);
    process.exit(1);
  });
}

main();
