import t from 'tap';
import * as dgram from 'node:dgram';
import * as packet from 'dns-packet';
import { ClusterDNS, QTYPE } from '../../manager/cluster-dns';

// The manager resolves the names that flows ask for (manager/cluster-dns.ts).
// The DNS server here is a small one of the test's own on loopback, standing
// in for CoreDNS so that its queue can be bounded and its questions counted:
// like a real server under a burst, it drops what it cannot hold (dnsmasq's
// dns-forward-max, a full socket buffer).

const QUEUE = 50;
let questions = 0;
let pending = 0;
let port = 0;
const server = dgram.createSocket('udp4');

t.before(async () => {
  server.on('message', (msg, rinfo) => {
    questions++;
    if (pending >= QUEUE) return; // dropped: the client times out and tries again
    pending++;
    const q = packet.decode(msg);
    const question = q.questions![0];
    const found = question.name === 'echo.default.svc.cluster.local' && question.type === 'A';
    setTimeout(() => {
      pending--;
      const answer = packet.encode({
        id: q.id, type: 'response', flags: packet.AUTHORITATIVE_ANSWER | (found ? 0 : 3), questions: q.questions,
        answers: found ? [{ type: 'A', name: question.name, ttl: 5, data: '10.96.0.7' }] : [],
      });
      server.send(answer, rinfo.port, rinfo.address);
    }, 20);
  });
  await new Promise<void>((r) => server.bind(0, '127.0.0.1', r));
  port = server.address().port;
});
t.teardown(() => server.close());

t.test('a thousand flows to one name at once all resolve, with one question per search candidate', async (t) => {
  const dns = new ClusterDNS('cluster.local', [`127.0.0.1:${port}`]);
  questions = 0;
  const all = await Promise.all(Array.from({ length: 1000 }, () => dns.addresses('echo.default', 'ns1')));
  t.equal(all.filter((a) => a[0] === '10.96.0.7').length, 1000, 'every flow got the Service address');
  // echo.default.ns1.svc.cluster.local (NXDOMAIN), then echo.default.svc.cluster.local
  t.equal(questions, 2, 'asked once per candidate');

  // nothing is kept once answered: the next flow asks again, and sees a change
  await dns.addresses('echo.default', 'ns1');
  t.equal(questions, 4, 'a later flow asks the server again');
  t.same(await dns.addresses('nosuch', 'ns1'), [], 'a name the cluster does not know: no address');
});

t.test('different names and types are asked each on their own', async (t) => {
  const dns = new ClusterDNS('cluster.local', [`127.0.0.1:${port}`]);
  questions = 0;
  const [a, aaaa] = await Promise.all([
    dns.lookup('echo.default.svc.cluster.local', QTYPE.A, 'ns1'),
    dns.lookup('echo.default.svc.cluster.local', QTYPE.AAAA, 'ns1'),
  ]);
  t.equal(a.answers?.[0]?.address, '10.96.0.7');
  t.same(aaaa.answers, []);
  t.ok(questions >= 2, `${questions} questions`);
});
