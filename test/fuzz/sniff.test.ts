import t from 'tap';
import fc from 'fast-check';
import { classify } from '../../agent/protocol-sniff';
import { forwardRaw, withoutHeaders } from '../../agent/http-headers';
import { mutated, params, report, RUNS } from './fuzz';

// The agent decides a connection's protocol from its first bytes, which come
// in whatever pieces TCP cut them into: a decision, once made, must be the
// one the whole head would give, wherever the cut falls.

const HEADS = [
  'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
  'POST /upload?x=1 HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc',
  'PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n',
  'GET / HTTP/1.1\nHost: a\n\n',
  'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00',
  '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n',
  'PING\r\n',
  'EHLO mail.example\r\n',
].map((s) => Buffer.from(s, 'latin1'));

const heads = mutated(HEADS, 300);

t.test('classify never throws, and a decision on a prefix is the decision on the whole', async (t) => {
  let decidedEarly = 0;
  fc.assert(
    fc.property(heads, fc.nat(), (head, cut) => {
      const whole = classify(head);
      const prefix = head.subarray(0, head.length ? cut % (head.length + 1) : 0);
      const early = classify(prefix);
      if (early === undefined) return true;
      decidedEarly++;
      return early === whole;
    }),
    params(RUNS * 5),
  );
  t.ok(decidedEarly > 0, report('protocol sniff', { cases: RUNS * 5, decidedEarly }));
});

t.test('a request line cut between its CR and LF is still HTTP/1 (regression)', async (t) => {
  t.equal(classify(Buffer.from('GET / HTTP/1.1\r')), undefined, 'undecided until the LF');
  t.equal(classify(Buffer.from('GET / HTTP/1.1\r\n')), 'http1');
  t.equal(classify(Buffer.from('GET / HTTP/1.1\rX')), 'other', 'a CR inside the line is not HTTP/1');
});

t.test('forwardRaw and withoutHeaders never throw, and keep name/value pairs', async (t) => {
  const token = fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}$/);
  const raw = fc.array(fc.tuple(fc.oneof(token, fc.constantFrom('Connection', 'connection', 'Keep-Alive', 'Upgrade', 'x-user')), fc.string({ maxLength: 60 })), { maxLength: 20 });
  fc.assert(
    fc.property(raw, fc.boolean(), (pairs, upgrading) => {
      const flat = pairs.flat();
      const out = forwardRaw(flat, upgrading);
      const kept = withoutHeaders(flat, new Set(['x-user']));
      return out.length % 2 === 0 && out.length <= flat.length && kept.length % 2 === 0 && !out.some((n, i) => i % 2 === 0 && n.toLowerCase() === 'connection' && !upgrading);
    }),
    params(),
  );
  t.pass('no throw');
});
