import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Journal } from '../../daemon/root/journal';
import { apply, parseResolvConf, readNameservers, restore, restoreEntry } from '../../daemon/root/dns/resolv-conf';

// resolv.conf apply/restore on temporary files (never the machine's own).

const dir = mkdtempSync(join(tmpdir(), 'rdbg-dns-resolv-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ORIGINAL = '# from DHCP\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch corp.example lab.example\noptions ndots:2 rotate timeout:3\nsortlist 10.0.0.0/255.0.0.0\n';
const SEARCH = ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'];
let n = 0;
const fresh = (content?: string): { path: string; journal: Journal } => {
  const path = join(dir, `resolv-${n++}.conf`);
  if (content !== undefined) writeFileSync(path, content);
  return { path, journal: new Journal(join(dir, `journal-${n}.json`)) };
};

t.test('apply: ours first, cluster search first, options kept (without rotate); journal before the write', async (t) => {
  const { path, journal } = fresh(ORIGINAL);
  const { upstreams } = apply(path, { nameserver: '198.18.0.1', search: SEARCH }, journal);
  t.same(upstreams, ['192.0.2.53', '2001:db8::53']);
  const now = readFileSync(path, 'utf8');
  const p = parseResolvConf(now);
  t.same(p.nameservers, ['198.18.0.1', '192.0.2.53', '2001:db8::53']);
  t.same(p.search, [...SEARCH, 'corp.example', 'lab.example']);
  t.same(p.options, ['ndots:2', 'timeout:3']);
  t.match(now, /sortlist 10\.0\.0\.0\/255\.0\.0\.0/);
  const [e] = journal.entries();
  t.match(e, { kind: 'resolv-conf', data: { path, original: ORIGINAL, ours: now } });
  t.same(readNameservers(path)[0], '198.18.0.1');
});

t.test('restore: byte-identical original, journal entry gone', async (t) => {
  const { path, journal } = fresh(ORIGINAL);
  apply(path, { nameserver: '198.18.0.1', search: SEARCH }, journal);
  t.same(restore(journal, path), [{ path, restored: true }]);
  t.equal(readFileSync(path, 'utf8'), ORIGINAL);
  t.same(journal.entries(), []);
});

t.test('restore leaves a file someone else rewrote meanwhile, and says so', async (t) => {
  const { path, journal } = fresh(ORIGINAL);
  apply(path, { nameserver: '198.18.0.1', search: SEARCH }, journal);
  writeFileSync(path, 'nameserver 203.0.113.1\n');
  t.same(restore(journal), [{ path, restored: false, reason: 'changed-by-someone-else' }]);
  t.equal(readFileSync(path, 'utf8'), 'nameserver 203.0.113.1\n');
  t.same(journal.entries(), []);
});

t.test('apply twice (crash, restart): the original stays the original', async (t) => {
  const { path, journal } = fresh(ORIGINAL);
  apply(path, { nameserver: '198.18.0.1', search: SEARCH }, journal);
  const { upstreams } = apply(path, { nameserver: '198.18.0.1', search: SEARCH }, journal);
  t.same(upstreams, ['192.0.2.53', '2001:db8::53']);
  t.equal(journal.entries().length, 1);
  // Crash recovery replays the journal with the lead's undoer.
  restoreEntry(journal.entries()[0], path);
  t.equal(readFileSync(path, 'utf8'), ORIGINAL);
});

t.test('our own address among the originals is not an upstream; `domain` counts as search', async (t) => {
  const { path, journal } = fresh('domain home.example\nnameserver 198.18.0.1\nnameserver 192.0.2.9\n');
  const { upstreams } = apply(path, { nameserver: '198.18.0.1', search: SEARCH }, journal);
  t.same(upstreams, ['192.0.2.9']);
  t.same(parseResolvConf(readFileSync(path, 'utf8')).search, [...SEARCH, 'home.example']);
  t.same(parseResolvConf(readFileSync(path, 'utf8')).nameservers, ['198.18.0.1', '192.0.2.9']);
  restore(journal);
});

t.test('a missing file is created and removed again', async (t) => {
  const { path, journal } = fresh();
  t.same(apply(path, { nameserver: '198.18.0.1', search: SEARCH }, journal).upstreams, []);
  t.ok(existsSync(path));
  restore(journal);
  t.notOk(existsSync(path));
});

t.test('a symlinked resolv.conf is written through, the link stays a link', async (t) => {
  const { path: target, journal } = fresh(ORIGINAL);
  const link = join(dir, 'link.conf');
  symlinkSync(target, link);
  apply(link, { nameserver: '198.18.0.1', search: SEARCH }, journal);
  t.match(readFileSync(target, 'utf8'), /^nameserver 198\.18\.0\.1$/m);
  restore(journal);
  t.equal(readFileSync(target, 'utf8'), ORIGINAL);
});

t.test('bad nameserver refused before anything is written', async (t) => {
  const { path, journal } = fresh(ORIGINAL);
  t.throws(() => apply(path, { nameserver: 'not-an-ip', search: SEARCH }, journal), { code: 'RDBG_DNS_RESOLV_CONF' });
  t.equal(readFileSync(path, 'utf8'), ORIGINAL);
  t.same(journal.entries(), []);
});

t.test('watch: a rewrite by someone else (new network) is adopted as the original', async (t) => {
  const { watchResolvConf } = await import('../../daemon/root/dns/resolv-conf-watch');
  const { path, journal } = fresh(ORIGINAL);
  apply(path, { nameserver: '198.18.0.1', search: SEARCH }, journal);
  const seen: string[][] = [];
  const w = watchResolvConf(path, { nameserver: '198.18.0.1', search: SEARCH }, journal, { intervalMs: 30, onUpstreams: (u) => seen.push(u) });
  t.teardown(() => w.stop());
  const NEW = 'nameserver 192.0.2.99\nsearch hotel.example\n';
  writeFileSync(path, NEW);
  for (let i = 0; i < 50 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.same(seen, [['192.0.2.99']], 'the new resolvers become the upstreams');
  const p = parseResolvConf(readFileSync(path, 'utf8'));
  t.same(p.nameservers, ['198.18.0.1', '192.0.2.99']);
  t.same(p.search, [...SEARCH, 'hotel.example']);
  restore(journal);
  t.equal(readFileSync(path, 'utf8'), NEW, 'restore gives back the newest original');
});

t.test('watch: gives up against a program that keeps rewriting', async (t) => {
  const { watchResolvConf } = await import('../../daemon/root/dns/resolv-conf-watch');
  const { path, journal } = fresh(ORIGINAL);
  apply(path, { nameserver: '198.18.0.1', search: SEARCH }, journal);
  let adopted = 0;
  const w = watchResolvConf(path, { nameserver: '198.18.0.1', search: SEARCH }, journal, { intervalMs: 20, maxRewritesPerMinute: 3, onUpstreams: () => adopted++ });
  t.teardown(() => w.stop());
  for (let i = 0; i < 8; i++) {
    writeFileSync(path, `nameserver 192.0.2.${i + 1}\n`);
    await new Promise((r) => setTimeout(r, 120));
  }
  t.equal(adopted, 3);
  t.equal(readFileSync(path, 'utf8'), 'nameserver 192.0.2.8\n', 'the last rewrite stays');
  restore(journal);
});
