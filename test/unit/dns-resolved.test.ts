import t from 'tap';
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Journal } from '../../daemon/root/journal';
import { apply, applyCommands, detect, restore, revertCommand, runCommand, undoEntry, uplinkServers } from '../../daemon/root/dns/systemd-resolved';

// systemd-resolved integration: the resolvectl argv lists and the journal,
// with stand-ins for resolvectl. A real resolved: test/sandbox/dns-resolved-host.

const dir = mkdtempSync(join(tmpdir(), 'rdbg-dns-resolved-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const config = { iface: 'rdbg0', dns: ['198.18.0.1'], clusterDomain: 'cluster.local.', namespaces: ['default', 'prod', 'default'] };

t.test('argv lists', async (t) => {
  t.same(applyCommands(config), [
    ['resolvectl', 'dns', 'rdbg0', '198.18.0.1'],
    ['resolvectl', 'domain', 'rdbg0', '~cluster.local', '~svc', '~default', '~prod'],
    ['resolvectl', 'default-route', 'rdbg0', 'false'],
  ]);
  t.same(revertCommand('rdbg0'), ['resolvectl', 'revert', 'rdbg0']);
  const withSearch = applyCommands({ ...config, search: ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'] });
  t.same(withSearch[1], ['resolvectl', 'domain', 'rdbg0', 'default.svc.cluster.local', 'svc.cluster.local', 'cluster.local', '~svc', '~default', '~prod'],
    'search domains plain (they route too), the rest routing-only');
  const withZones = applyCommands({ ...config, reverseZones: ['96.10.in-addr.arpa', '0.0.6.9.0.0.0.1.0.0.0.0.0.0.d.f.ip6.arpa'] });
  t.same(withZones[1].slice(-2), ['~96.10.in-addr.arpa', '~0.0.6.9.0.0.0.1.0.0.0.0.0.0.d.f.ip6.arpa'], 'reverse zones route to the link');
});

t.test('apply journals first; restore reverts and forgets', async (t) => {
  const journal = new Journal(join(dir, 'j1.json'));
  const ran: string[][] = [];
  await apply(config, journal, async (argv) => {
    t.equal(journal.entries().length, 1, 'journalled before any command');
    ran.push(argv);
  });
  t.same(ran, applyCommands(config));
  t.match(journal.entries(), [{ id: 'resolved-link:rdbg0', kind: 'resolved-link', data: { iface: 'rdbg0' } }]);
  await restore(journal, async (argv) => void ran.push(argv));
  t.same(ran.at(-1), ['resolvectl', 'revert', 'rdbg0']);
  t.same(journal.entries(), []);
});

t.test('a failing command reverts what was done', async (t) => {
  const journal = new Journal(join(dir, 'j2.json'));
  const ran: string[][] = [];
  await t.rejects(
    apply(config, journal, async (argv) => {
      ran.push(argv);
      if (argv[1] === 'domain') throw Object.assign(new Error('boom'), { code: 'RDBG_DNS_RESOLVED' });
    }),
    { code: 'RDBG_DNS_RESOLVED' },
  );
  t.same(ran.at(-1), ['resolvectl', 'revert', 'rdbg0']);
  t.same(journal.entries(), []);
});

t.test('detection needs the stub link and a live resolvectl', async (t) => {
  const plain = join(dir, 'resolv.conf');
  writeFileSync(plain, 'nameserver 192.0.2.1\n');
  t.equal(await detect(plain, async () => undefined), false, 'a plain file is not resolved');
  t.equal(await detect(join(dir, 'missing'), async () => undefined), false);
  const uplink = join(dir, 'uplink.conf');
  writeFileSync(uplink, 'nameserver 127.0.0.53\nnameserver 192.0.2.1\n');
  t.same(uplinkServers(uplink), ['192.0.2.1']);
});

t.test('detection: a link to the stub and a resolvectl that answers', async (t) => {
  const stub = join(dir, 'stub-resolv.conf');
  writeFileSync(stub, 'nameserver 127.0.0.53\n');
  const link = join(dir, 'etc-resolv.conf');
  symlinkSync(stub, link);
  t.equal(await detect(link, async () => undefined, stub), true);
  t.equal(await detect(link, async () => Promise.reject(new Error('resolved is not running')), stub), false);
});

t.test('runCommand runs the argv as given (a stand-in resolvectl on PATH)', async (t) => {
  const bin = join(dir, 'bin');
  const log = join(dir, 'argv.log');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(bin);
  writeFileSync(join(bin, 'resolvectl'), `#!/bin/sh\necho "$@" >> ${log}\n[ "$1" = fail ] && { echo "Failed to set DNS" >&2; exit 1; }\nexit 0\n`);
  chmodSync(join(bin, 'resolvectl'), 0o755);
  const path = process.env.PATH;
  process.env.PATH = `${bin}:${path}`;
  t.teardown(() => void (process.env.PATH = path));
  const journal = new Journal(join(dir, 'j3.json'));
  await apply(config, journal);
  await restore(journal);
  t.equal(readFileSync(log, 'utf8'), 'dns rdbg0 198.18.0.1\ndomain rdbg0 ~cluster.local ~svc ~default ~prod\ndefault-route rdbg0 false\nrevert rdbg0\n');
  await t.rejects(runCommand(['resolvectl', 'fail']), { code: 'RDBG_DNS_RESOLVED', message: /Failed to set DNS/ });
});

t.test('undo after a crash: a link that is gone counts as undone, other failures are kept', async (t) => {
  const bin = join(dir, 'bin-undo');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(bin);
  // resolvectl's own words for a link that does not exist, and for a resolved that does not answer.
  writeFileSync(join(bin, 'resolvectl'), '#!/bin/sh\ncase "$2" in\n  rdbg0) echo \'Failed to resolve interface "rdbg0": No such device\' >&2; exit 1;;\n  rdbg1) echo "Failed to revert interface configuration: Connection refused" >&2; exit 1;;\nesac\nexit 0\n');
  chmodSync(join(bin, 'resolvectl'), 0o755);
  const path = process.env.PATH;
  process.env.PATH = `${bin}:${path}`;
  t.teardown(() => void (process.env.PATH = path));
  const entry = (iface: string) => ({ id: `resolved-link:${iface}`, kind: 'resolved-link' as const, data: { iface } });
  t.doesNotThrow(() => undoEntry(entry('rdbg0')), 'gone link');
  t.doesNotThrow(() => undoEntry(entry('rdbg2')), 'reverted');
  t.throws(() => undoEntry(entry('rdbg1')), { code: 'RDBG_DNS_RESOLVED', message: /Connection refused/ }, 'kept for the next try');
});
