import t from 'tap';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns } from '../helpers/netns';
import { RDBG } from '../helpers/sandbox';
import { rootPaths, rootSessionId } from '../../src/core/paths';
import { ensureBaseDir, ensureSessionDir, validateUserSocket } from '../../daemon/root/state-dir';

// Root acts only on state it keeps itself: nothing it replays, writes or
// deletes comes from the caller's environment or a path the caller chose.

const RESOLV = 'nameserver 127.0.0.53\nsearch example.test\n';
let ns: Netns;
let dir: string;

t.before(() => {
  ns = Netns.create(`rdbgst${process.pid % 10000}`, RESOLV);
  ns.exec('ip', ['link', 'add', 'victim0', 'type', 'veth', 'peer', 'name', 'victim1']);
  ns.exec('ip', ['link', 'set', 'victim0', 'up']);
  ns.exec('ip', ['addr', 'add', '10.99.0.1/16', 'dev', 'victim0']);
  dir = mkdtempSync(join(tmpdir(), 'rdbg-state-'));
});
t.teardown(() => {
  ns?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

const resolvConf = (): string => readFileSync(`/etc/netns/${ns.name}/resolv.conf`, 'utf8');
const linkExists = (): boolean => ns.exec('ip', ['-o', 'link', 'show']).includes('victim0');
const routes = (): string => ns.exec('ip', ['route', 'show']);
const daemonRoot = (args: string[], env: string[] = []) => ns.run('env', [...env, RDBG, 'daemon-root', ...args], 30_000);

/** A hostile journal: rewrite resolv.conf, delete a link and a route rdbg never made. */
function hostileJournal(path: string): void {
  writeFileSync(
    path,
    JSON.stringify({
      entries: [
        { id: 'tun:victim0', kind: 'tun', data: { name: 'victim0' } },
        { id: 'route:10.99.0.0/16', kind: 'route', data: { cidr: '10.99.0.0/16', dev: 'victim0' } },
        { id: 'netfilter:victim0', kind: 'netfilter', data: { dev: 'victim0' } },
        { id: 'resolv-conf:/etc/resolv.conf', kind: 'resolv-conf', data: { path: '/etc/resolv.conf', original: 'nameserver 6.6.6.6\n', ours: RESOLV, existed: '1' } },
        { id: 'resolv-conf:x', kind: 'resolv-conf', data: { path: join(dir, 'other'), original: 'owned\n', ours: 'mine\n', existed: '1' } },
      ],
    }),
  );
}

t.test('a journal in the caller\'s RDBG_ROOT_HOME is not replayed', async (t) => {
  const evil = join(dir, 'evil');
  mkdirSync(evil, { mode: 0o777 });
  chmodSync(evil, 0o777);
  hostileJournal(join(evil, 'journal.json'));
  const r = await daemonRoot(['--user-socket', join(evil, 'daemon.sock'), '--cleanup'], [`RDBG_ROOT_HOME=${evil}`, `RDBG_HOME=${evil}`]);
  t.equal(r.code, 0, r.stderr);
  t.equal(resolvConf(), RESOLV, 'resolv.conf untouched');
  t.ok(linkExists(), 'the link it names still exists');
  t.match(routes(), /10\.99\.0\.0\/16 dev victim0/, 'the route it names still exists');
});

t.test('--resolv-conf is gone: root writes resolver text to /etc/resolv.conf only', async (t) => {
  const target = join(dir, 'target');
  writeFileSync(target, 'precious\n');
  const r = await daemonRoot(['--user-socket', join(dir, 'daemon.sock'), '--resolv-conf', target, '--cleanup']);
  t.not(r.code, 0);
  t.match(r.stderr, /unknown flag "--resolv-conf"/);
  t.equal(readFileSync(target, 'utf8'), 'precious\n');
});

t.test('entries of root\'s own journal are checked before replay: only rdbg\'s devices and /etc/resolv.conf', async (t) => {
  const sock = join(dir, 'own.sock');
  const paths = rootPaths(rootSessionId(0, sock, ns.exec('readlink', ['/proc/self/ns/net']).trim()));
  ensureBaseDir('/var/run/rdbg');
  ensureSessionDir(paths.dir);
  writeFileSync(join(dir, 'other'), 'mine\n');
  hostileJournal(paths.journal);
  // A chain that looks like rdbg's, for a device that is not rdbg's.
  ns.exec('iptables', ['-t', 'nat', '-N', 'RDBG-victim0']);
  ns.exec('iptables', ['-t', 'nat', '-A', 'OUTPUT', '-o', 'victim0', '-j', 'RDBG-victim0']);
  t.teardown(() => {
    ns.exec('iptables', ['-t', 'nat', '-D', 'OUTPUT', '-o', 'victim0', '-j', 'RDBG-victim0']);
    ns.exec('iptables', ['-t', 'nat', '-X', 'RDBG-victim0']);
  });
  const r = await daemonRoot(['--user-socket', sock, '--cleanup']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /"msg":"ignoring an invalid journal entry","id":"tun:victim0","why":"\\"victim0\\" is not an rdbg TUN device name"/);
  t.match(r.stderr, /"msg":"ignoring an invalid journal entry","id":"netfilter:victim0"/);
  t.match(ns.exec('iptables', ['-t', 'nat', '-S']), /-A OUTPUT -o victim0 -j RDBG-victim0/, 'netfilter rules for another device are not removed');
  t.ok(linkExists(), 'a link that is not an rdbg TUN device is not deleted');
  t.match(routes(), /10\.99\.0\.0\/16 dev victim0/, 'a route into another device is not deleted');
  t.equal(readFileSync(join(dir, 'other'), 'utf8'), 'mine\n', 'a file other than /etc/resolv.conf is not written');
  // The resolv.conf entry is valid in form; its "ours" matches, so it is restored: only root could have written it.
  t.equal(resolvConf(), 'nameserver 6.6.6.6\n');
  writeFileSync(`/etc/netns/${ns.name}/resolv.conf`, RESOLV);
  t.notOk(existsSync(paths.dir), 'the session directory is gone once its journal is empty');
});

t.test('state directories: root-owned, not writable by others, no symlinks', async (t) => {
  const base = join(dir, 'base');
  ensureBaseDir(base);
  t.equal(statSync(base).mode & 0o777, 0o755, 'base created 0755: users reach their sockets, only root writes');
  chmodSync(base, 0o775);
  t.throws(() => ensureBaseDir(base), { code: 'RDBG_PERMISSION', message: /its mode is 775/ });
  chmodSync(base, 0o755);
  chownSync(base, 65534, 65534);
  t.throws(() => ensureBaseDir(base), { code: 'RDBG_PERMISSION', message: /owned by uid 65534/ });
  chownSync(base, 0, 0);
  t.throws(() => ensureBaseDir(join(tmpdir(), 'rdbg-x')), { code: 'RDBG_PERMISSION' }, 'a base in a world-writable directory (/tmp) is refused');

  const session = join(base, 'abc');
  ensureSessionDir(session);
  t.equal(statSync(session).mode & 0o777, 0o700);
  chmodSync(session, 0o711);
  t.throws(() => ensureSessionDir(session), { message: /its mode is 711/ });
  rmSync(session, { recursive: true });
  const elsewhere = mkdtempSync(join(dir, 'elsewhere-'));
  symlinkSync(elsewhere, session);
  t.throws(() => ensureSessionDir(session), { message: /it is a symlink/ });
});

t.test('--user-socket: absolute, a socket, owned by the caller', async (t) => {
  const sockPath = join(dir, 'user.sock');
  const server: Server = await new Promise((res) => {
    const s = createServer().listen(sockPath, () => res(s));
  });
  t.teardown(() => server.close());
  t.doesNotThrow(() => validateUserSocket(sockPath, 0, true));
  t.throws(() => validateUserSocket('relative.sock', 0, true), { code: 'RDBG_BAD_ARGUMENT' });
  t.throws(() => validateUserSocket(`${dir}/../${dir}/user.sock`, 0, true), { code: 'RDBG_BAD_ARGUMENT' });
  t.throws(() => validateUserSocket(sockPath, 1000, true), { code: 'RDBG_PERMISSION', message: /belongs to uid 0, not to the caller \(uid 1000\)/ });
  const file = join(dir, 'file.sock');
  writeFileSync(file, '');
  t.throws(() => validateUserSocket(file, 0, true), { message: /is not a socket/ });
  const link = join(dir, 'link.sock');
  symlinkSync(sockPath, link);
  t.throws(() => validateUserSocket(link, 0, true), { message: /is not a socket/ }, 'a symlink to a socket is refused');
  const r = await daemonRoot(['--user-socket', file]);
  t.equal(r.code, 1);
  t.match(JSON.parse(r.stdout.trim().split('\n')[0]), { ready: false, code: 'RDBG_PERMISSION' }, 'the root daemon refuses to start');
});

t.test('a user socket that appears after the root daemon started is checked when it appears', async (t) => {
  // `rdbg connect` starts both daemons at once, so the root daemon may come first; it changes nothing until the
  // user daemon's socket is there, and then refuses one that is not the caller's.
  const late = join(dir, 'late.sock');
  const run = daemonRoot(['--user-socket', late, '--dns', 'none', '--tun-name', 'rdbglate0']);
  await new Promise((r) => setTimeout(r, 1500));
  const server: Server = await new Promise((res) => {
    const s = createServer().listen(late, () => res(s));
  });
  t.teardown(() => server.close());
  chownSync(late, 1000, 1000);
  const r = await run;
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(JSON.parse(r.stdout.trim().split('\n')[0]), { ready: false, code: 'RDBG_PERMISSION', message: /belongs to uid 1000, not to the caller \(uid 0\)/ }, 'refused when it appears');
  t.not((await ns.run('ip', ['link', 'show', 'rdbglate0'], 5000)).code, 0, 'no TUN device was made');
});
