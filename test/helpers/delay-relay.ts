// A TCP relay that holds every chunk DELAY_MS in each direction, in order:
// a manager far away, where the kernel here has no netem. Run as a program:
//   node delay-relay.js DELAY_MS LISTEN_HOST:PORT=TARGET_HOST:PORT ...
// Prints READY once every listener is up.
import * as net from 'node:net';

function relay(listen: string, target: string, delayMs: number): Promise<void> {
  const [lh, lp] = listen.split(':');
  const [th, tp] = target.split(':');
  const server = net.createServer((a) => {
    const b = net.connect({ host: th, port: Number(tp) });
    for (const [from, to] of [[a, b], [b, a]] as const) {
      from.on('data', (d) => setTimeout(() => to.write(d), delayMs));
      from.on('end', () => setTimeout(() => to.end(), delayMs));
      from.on('error', () => setTimeout(() => to.destroy(), delayMs));
      from.on('close', () => setTimeout(() => to.destroy(), delayMs));
    }
  });
  return new Promise((resolve) => server.listen(Number(lp), lh, resolve));
}

const [delay, ...pairs] = process.argv.slice(2);
void Promise.all(pairs.map((p) => relay(p.split('=')[0], p.split('=')[1], Number(delay)))).then(() => console.log('READY'));
