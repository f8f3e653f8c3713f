import t from 'tap';
import fc from 'fast-check';
import { SocketAddress } from 'node:net';
import { ipFromBytes, ipToBytes, joinHostPort, splitHostPort, unmapIPv4 } from '../../src/core/address';
import { bigIntToIp, ipToBigInt, parseCidr } from '../../src/core/cidr';

/** How Node itself writes an IPv6 address (inet_ntop). */
const nodeText = (address: string): string => new SocketAddress({ address, family: 'ipv6' }).address;

t.test('text to bytes: IPv4, IPv6 in every spelling, a trailing dotted quad, a zone', async (t) => {
  t.same([...ipToBytes('10.96.0.7')], [10, 96, 0, 7]);
  const loop = [...Buffer.alloc(15), 1];
  for (const s of ['::1', '0:0:0:0:0:0:0:1', '0::1', '::0:1']) t.same([...ipToBytes(s)], loop, s);
  t.same(ipToBytes('2001:DB8::1:0:0:1').toString('hex'), '20010db8000000000001000000000001');
  t.same(ipToBytes('::ffff:127.0.0.1').toString('hex'), '00000000000000000000ffff7f000001');
  t.same(ipToBytes('64:ff9b::192.0.2.33').toString('hex'), '0064ff9b0000000000000000c0000221');
  t.same(ipToBytes('1:2:3:4:5:6:7.8.9.10').toString('hex'), '0001000200030004000500060708090a');
  t.same(ipToBytes('fe80::1%eth0'), ipToBytes('fe80::1'), 'the zone is not part of the address');
  for (const bad of ['', 'host.example', '10.0.0.256', '1::2::3', '1:2:3:4:5:6:7:8:9', '[::1]']) {
    t.throws(() => ipToBytes(bad), { code: 'RDBG_BAD_ARGUMENT' }, JSON.stringify(bad));
  }
});

t.test('bytes to text: RFC 5952, as Node writes it', async (t) => {
  const text = (hex: string): string => ipFromBytes(Buffer.from(hex, 'hex'));
  t.equal(text('0a600007'), '10.96.0.7');
  t.equal(text('00000000000000000000000000000000'), '::');
  t.equal(text('00000000000000000000000000000001'), '::1');
  t.equal(text('00010000000000020000000000000003'), '1:0:0:2::3', 'the longest run of zeros is the one shortened');
  t.equal(text('00010000000200000003000000000004'), '1:0:2:0:3::4');
  t.equal(text('20010db8000000010000000000000001'), '2001:db8:0:1::1');
  t.equal(text('00010000000000020000000000000000'), '1:0:0:2::', 'a run at the end');
  t.equal(text('00010002000300040005000600070008'), '1:2:3:4:5:6:7:8');
  t.equal(text('00010000000200030004000500060007'), '1:0:2:3:4:5:6:7', 'a single zero group stays');
  t.equal(text('00000000000000000000ffff7f000001'), '::ffff:127.0.0.1', 'a mapped IPv4 address ends in its dotted quad');
  t.equal(text('00000000000000000000ffff00000000'), '::ffff:0.0.0.0');
  t.equal(text('000000000000000000000000c0000221'), '::192.0.2.33', 'so does a compatible one, as Node writes it');
  t.throws(() => ipFromBytes(Buffer.alloc(5)), { code: 'RDBG_BAD_ARGUMENT' });
  // Few groups, many of them zero: the runs of zeros are where formatters go wrong.
  const group = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 1, max: 0xffff }));
  fc.assert(
    fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), (groups) => {
      const bytes = Buffer.alloc(16);
      groups.forEach((g, i) => bytes.writeUInt16BE(g, i * 2));
      const s = ipFromBytes(bytes);
      return s === nodeText(groups.map((g) => g.toString(16)).join(':')) && ipToBytes(s).equals(bytes);
    }),
    { numRuns: 2000 },
  );
});

t.test('cidr.ts uses the same parser and formatter', async (t) => {
  t.equal(bigIntToIp(6, ipToBigInt('1:0:0:2:0:0:0:3').value), '1:0:0:2::3');
  t.equal(parseCidr('2001:db8:0:0:0:0:0:0/32').text, '2001:db8::/32');
  t.equal(ipToBigInt('::ffff:10.0.0.1').value, 0xffff0a000001n);
});

t.test('host and port', async (t) => {
  t.same(splitHostPort('manager.example:8081', '--manager'), { host: 'manager.example', port: 8081 });
  t.same(splitHostPort('[fd00::7]:443', '--manager'), { host: 'fd00::7', port: 443 });
  t.same(splitHostPort(':1080', '--socks'), { host: '', port: 1080 });
  for (const bad of ['fd00::7:443', 'host', 'host:70000', 'host:']) {
    t.throws(() => splitHostPort(bad, '--manager'), { code: 'RDBG_BAD_ARGUMENT', message: /--manager ".*" must look like HOST:PORT/ }, bad);
  }
  t.equal(joinHostPort('fd00::7', 443), '[fd00::7]:443');
  t.equal(joinHostPort('10.0.0.1', 80), '10.0.0.1:80');
  t.equal(joinHostPort('manager.example', 80), 'manager.example:80');
  for (const s of ['[fd00::7]:443', '10.0.0.1:80']) {
    const { host, port } = splitHostPort(s, 'x');
    t.equal(joinHostPort(host, port), s);
  }
  t.equal(unmapIPv4('::ffff:127.0.0.1'), '127.0.0.1');
  t.equal(unmapIPv4('::FFFF:10.0.0.1'), '10.0.0.1');
  t.equal(unmapIPv4('::1'), '::1');
  t.equal(unmapIPv4('10.0.0.1'), '10.0.0.1');
});
