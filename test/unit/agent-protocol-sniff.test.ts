import t from 'tap';
import * as net from 'node:net';
import { classify, readHeaderBlock, sniffProtocol } from '../../agent/protocol-sniff';

t.test('classify: h2 preface, HTTP/1 request lines, everything else', async (t) => {
  const b = (s: string | number[]): Buffer => (typeof s === 'string' ? Buffer.from(s, 'latin1') : Buffer.from(s));
  t.equal(classify(b('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')), 'h2');
  t.equal(classify(b('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04')), 'h2');
  t.equal(classify(b('PRI * HTTP/2')), undefined, 'a partial preface waits');
  t.equal(classify(b('GET / HTTP/1.1\r\n')), 'http1');
  t.equal(classify(b('M-SEARCH * HTTP/1.1\r\n')), 'http1');
  t.equal(classify(b('OPTIONS * HTTP/1.0\n')), 'http1');
  t.equal(classify(b('PROPFIND /dav/x%20y?q=1 HTTP/1.1\r\nHost: x')), 'http1');
  t.equal(classify(b('GET /very/long')), undefined, 'a partial request line waits');
  t.equal(classify(b('GET / HTTP/1')), undefined);
  t.equal(classify(b('SET key value\r\n')), 'other', 'redis inline command');
  t.equal(classify(b('*1\r\n$4\r\nPING\r\n')), 'other', 'RESP');
  t.equal(classify(b('EHLO mail\r\n')), 'other');
  t.equal(classify(b('GET / HTTP/2.0\r\n')), 'other');
  t.equal(classify(b([0x16, 0x03, 0x01, 0x02, 0x00])), 'other', 'TLS ClientHello');
  t.equal(classify(b([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])), 'other', 'postgres SSLRequest');
  t.equal(classify(b('GET\x00')), 'other');
  t.equal(classify(b('GET / HTTP/1.1 junk\r\n')), 'other');
  t.equal(classify(Buffer.alloc(0)), undefined);
  t.equal(classify(b('GET /' + 'a'.repeat(17000))), 'http1', 'a huge URL is left to the HTTP parser');
});

t.test('classify never throws on random bytes', async (t) => {
  let seed = 42;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 256;
  for (let i = 0; i < 2000; i++) {
    const buf = Buffer.from(Array.from({ length: 1 + (rnd() % 64) }, rnd));
    const p = classify(buf);
    if (p !== undefined && !['h2', 'http1', 'other'].includes(p)) t.fail(`bad result ${p}`);
  }
  t.pass('2000 random heads classified');
});

async function pair(t: { teardown(fn: () => void): void }): Promise<{ client: net.Socket; server: net.Socket }> {
  const srv = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const client = net.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const server = await accepted;
  t.teardown(() => {
    client.destroy();
    server.destroy();
    srv.close();
  });
  return { client, server };
}

t.test('sniffProtocol over a socket: split preface, timeout, early FIN', async (t) => {
  {
    const { client, server } = await pair(t);
    client.write('PRI * HTTP/2.0\r\n');
    setTimeout(() => client.write('\r\nSM\r\n\r\nrest'), 30);
    const s = await sniffProtocol(server, 1000);
    t.equal(s.protocol, 'h2');
    t.equal(s.head.toString(), 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest');
  }
  {
    const { server } = await pair(t);
    const t0 = Date.now();
    const s = await sniffProtocol(server, 100);
    t.equal(s.protocol, 'other', 'silence: a server-first protocol');
    t.ok(Date.now() - t0 >= 90);
  }
  {
    const { client, server } = await pair(t);
    client.end('GE');
    const s = await sniffProtocol(server, 1000);
    t.same([s.protocol, s.ended, s.head.toString()], ['other', true, 'GE']);
  }
  {
    const { client, server } = await pair(t);
    client.write('GET / HTTP/1.1\r\nHost: x\r\n');
    setTimeout(() => client.write('User-Agent: kube-probe/1.30\r\n\r\n'), 20);
    const s = await sniffProtocol(server, 1000);
    t.equal(s.protocol, 'http1');
    const h = await readHeaderBlock(server, s.head, 1000);
    t.equal(h.headers['user-agent'], 'kube-probe/1.30');
    t.equal(h.headers.host, 'x');
    t.notOk(h.ended);
  }
});
