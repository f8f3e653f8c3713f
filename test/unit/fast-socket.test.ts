import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { connectFlowSocket, createFlowServer, fastReader, plainReads } from '../../src/tunnel/fast-socket';
import { splice } from '../../src/tunnel/splice';

// Sockets a flow server accepts read into pooled buffers as connected flow sockets do.

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function listen(srv: net.Server): Promise<number> {
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r((srv.address() as net.AddressInfo).port)));
}

/** Everything a socket reads until its FIN. */
function readAll(s: net.Socket): Promise<Buffer> {
  const got: Buffer[] = [];
  return new Promise((resolve, reject) => {
    s.on('data', (d: Buffer) => got.push(d));
    s.once('end', () => resolve(Buffer.concat(got)));
    s.once('error', reject);
  });
}

t.test('an accepted flow socket is a fast reader, and a relay of two carries bulk bytes intact both ways', async (t) => {
  // The far end answers, after the FIN, with the hash of what it got and then its own payload.
  const down = randomBytes(8 * 1024 * 1024);
  const far = net.createServer({ allowHalfOpen: true }, (s) => {
    void readAll(s).then((up) => s.end(Buffer.concat([Buffer.from(`${sha(up)}\n`), down])));
  });
  const farPort = await listen(far);
  let accepted: net.Socket | undefined;
  const relay = createFlowServer({ allowHalfOpen: true, noDelay: true }, (sock) => {
    accepted = sock;
    splice(sock, connectFlowSocket({ host: '127.0.0.1', port: farPort, allowHalfOpen: true }));
  });
  const port = await listen(relay);
  t.teardown(() => (far.close(), relay.close()));
  const up = randomBytes(8 * 1024 * 1024);
  const app = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  const answer = readAll(app);
  app.end(up);
  const got = await answer;
  t.ok(accepted && fastReader(accepted), 'the accepted socket got a fast reader');
  const nl = got.indexOf(0x0a);
  t.equal(got.subarray(0, nl).toString(), sha(up), 'the far end got every byte sent up, in order');
  t.equal(sha(got.subarray(nl + 1)), sha(down), 'the app got every byte sent down, in order');
});

t.test('plainReads: a flow socket that is not a flow reads with data events, what it had read first included', async (t) => {
  const text = new Promise<string>((resolve) => {
    const srv = createFlowServer({ allowHalfOpen: true }, (sock) => {
      t.teardown(() => sock.destroy());
      const fr = fastReader(sock)!;
      fr.wake = () => {
        plainReads(sock);
        void readAll(sock).then((b) => resolve(b.toString()));
        return true;
      };
    });
    t.teardown(() => srv.close());
    void listen(srv).then(async (port) => {
      const c = net.connect({ host: '127.0.0.1', port });
      t.teardown(() => c.destroy());
      c.write('first ');
      await new Promise((r) => setTimeout(r, 50));
      c.end('and the rest');
    });
  });
  t.equal(await text, 'first and the rest');
});
