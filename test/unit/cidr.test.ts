import t from 'tap';
import { cidrContains, cidrOverlaps, cidrSetMinus, parseCidr, subtractCidr } from '../../src/core/cidr';

t.test('parses and normalises IPv4 and IPv6 CIDRs', async (t) => {
  t.equal(parseCidr('10.96.0.7/12').text, '10.96.0.0/12');
  t.equal(parseCidr('2001:db8:96::10/64').text, '2001:db8:96::/64');
  t.equal(parseCidr('192.0.2.1').bits, 32);
  t.throws(() => parseCidr('10.0.0.0/33'), /not a CIDR/);
  t.throws(() => parseCidr('nonsense/8'), /not an IP address/);
});

t.test('containment and overlap', async (t) => {
  t.ok(cidrContains(parseCidr('198.19.128.0/20'), '198.19.128.10'));
  t.notOk(cidrContains(parseCidr('198.19.128.0/20'), '198.19.144.1'));
  t.ok(cidrOverlaps(parseCidr('10.0.0.0/8'), parseCidr('10.96.0.0/12')));
  t.notOk(cidrOverlaps(parseCidr('10.0.0.0/8'), parseCidr('2001:db8::/32')));
});

t.test('subtraction leaves exactly the rest', async (t) => {
  t.same(subtractCidr(parseCidr('10.0.0.0/24'), parseCidr('10.0.0.0/25')).map((c) => c.text), ['10.0.0.128/25']);
  t.same(subtractCidr(parseCidr('10.0.0.0/24'), parseCidr('10.0.0.64/26')).map((c) => c.text), ['10.0.0.128/25', '10.0.0.0/26']);
  t.same(subtractCidr(parseCidr('10.0.0.0/24'), parseCidr('10.0.0.0/16')), []);
  t.same(subtractCidr(parseCidr('10.0.0.0/24'), parseCidr('11.0.0.0/8')).map((c) => c.text), ['10.0.0.0/24']);
  const rest = cidrSetMinus([parseCidr('198.19.0.0/20')], [parseCidr('198.19.0.5/32')]);
  t.equal(rest.length, 12, 'a /32 out of a /20 leaves 12 blocks');
  t.notOk(rest.some((c) => cidrContains(c, '198.19.0.5')), 'the excluded address is not covered');
  t.ok(rest.some((c) => cidrContains(c, '198.19.0.4')) && rest.some((c) => cidrContains(c, '198.19.15.255')), 'everything else is');
});
