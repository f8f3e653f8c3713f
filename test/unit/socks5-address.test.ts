import t from 'tap';
import { encodeAddress, parseAddress, reply } from '../../daemon/user/socks5';

t.test('SOCKS5 addresses: IPv4, IPv6 and names, both ways', async (t) => {
  t.same([...encodeAddress('10.0.0.1', 80)], [1, 10, 0, 0, 1, 0, 80]);
  t.same(encodeAddress('fd00::7', 443).toString('hex'), '04' + 'fd000000000000000000000000000007' + '01bb');
  t.same(encodeAddress('echo.default', 80).toString('hex'), '030c' + Buffer.from('echo.default').toString('hex') + '0050');
  for (const [host, port] of [['10.0.0.1', 80], ['fd00::7', 443], ['echo.default', 8080]] as const) {
    t.same(parseAddress(encodeAddress(host, port), 0)?.addr, { host, port, atyp: host === '10.0.0.1' ? 1 : host.includes(':') ? 4 : 3 });
  }
});

t.test('an IPv4-mapped address (what a dual-stack socket reports) is encoded as its 16 bytes', async (t) => {
  // A relay bound on a dual-stack socket answers with ::ffff:127.0.0.1 as BND.ADDR.
  const r = reply(0, '::ffff:127.0.0.1', 1080);
  t.equal(r.subarray(3).toString('hex'), '04' + '00000000000000000000ffff7f000001' + '0438');
  t.equal(parseAddress(r, 3)?.addr.host, '::ffff:127.0.0.1');
});

t.test('an IPv6 address from a client is read in the form Node writes', async (t) => {
  const buf = Buffer.from('04' + '00000000000000000000000000000001' + '0050', 'hex');
  t.equal(parseAddress(buf, 0)?.addr.host, '::1', 'not 0:0:0:0:0:0:0:1');
});
