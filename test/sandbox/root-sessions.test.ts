import t from 'tap';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLUSTER, RDBG, Sandbox, forgetRootState } from '../helpers/sandbox';
import { ROOT_BASE, rootPaths, rootSessionId } from '../../src/core/paths';

// Two sessions on one laptop (two RDBG_HOMEs, as two users or two clusters
// would have): each has a root daemon of its own, and quitting one leaves the
// other's TUN device, routes and DNS alone.

let sb: Sandbox;
let homeB: string;

/** Session B: its own TUN name and addresses, no routes of the cluster (A has them), DNS left to A. */
const B_ARGS = ['--tun-name', 'rdbg1', '--tun-cidr', '169.254.84.0/24', '--tun-cidr6', 'fd72:6462:6701::/64',
  '--never-proxy', CLUSTER.serviceCidr, '--never-proxy', CLUSTER.podCidr, '--also-proxy', '203.0.113.0/24', '--dns', 'none'];
const rdbgB = (args: string[]) => sb.laptop.ns.run('env', [`RDBG_HOME=${homeB}`, RDBG, ...args], 60_000);
/** The namespace's device names: `ip -o link` lines also name the peer namespace (`link-netns rdbg1830c`), which must not count. */
const links = (): string[] => sb.laptop.ns.exec('ip', ['-o', 'link', 'show']).split('\n')
  .map((line) => /^\d+: ([^:@\s]+)/.exec(line)?.[1]).filter((name): name is string => name !== undefined);
const status = async (run: (a: string[]) => Promise<{ stdout: string }>) => JSON.parse((await run(['status', '-o', 'json'])).stdout);
const rdbgA = (args: string[]) => sb.laptop.rdbg(args);
const echo = () => sb.laptop.ns.run('curl', ['-sS', '--max-time', '10', `http://${CLUSTER.echoIp}/`]);

t.before(async () => {
  sb = await Sandbox.create();
  homeB = mkdtempSync(join(tmpdir(), 'rdbg-home-b-'));
});
t.teardown(async () => {
  await rdbgB(['quit']).catch(() => undefined);
  await rdbgA(['quit']).catch(() => undefined);
  const forget = sb ? forgetRootState(sb.laptop.ns, homeB) : undefined;
  sb?.destroy();
  forget?.();
  rmSync(homeB, { recursive: true, force: true });
});

t.test('each session gets a root daemon of its own, in a state directory root keys by session', async (t) => {
  const a = await rdbgA(['connect', '--manager', sb.laptop.managerAddress]);
  t.equal(a.code, 0, a.stderr);
  const b = await rdbgB(['connect', '--manager', sb.laptop.managerAddress, ...B_ARGS]);
  t.equal(b.code, 0, b.stderr);
  const [sa, sbb] = [await status(rdbgA), await status(rdbgB)];
  t.equal(sa.root?.tun_device, 'rdbg0');
  t.equal(sbb.root?.tun_device, 'rdbg1');
  t.not(sa.root.pid, sbb.root.pid, 'two root daemons');
  const netns = sb.laptop.ns.exec('readlink', ['/proc/self/ns/net']).trim();
  const paths = rootPaths(rootSessionId(0, join(homeB, 'daemon.sock'), netns));
  const sock = statSync(paths.socket);
  t.equal(sock.mode & 0o777, 0o600, 'the root socket is 0600');
  t.equal(statSync(ROOT_BASE).uid, 0, 'in a root-owned directory');
  t.equal(statSync(ROOT_BASE).mode & 0o022, 0, 'that nobody else may write');
  t.equal(statSync(paths.dir).mode & 0o777, 0o700, 'the session\'s state directory is root-only');
});

t.test('a third session with the default TUN device is told to take its own; A is untouched', async (t) => {
  const homeC = mkdtempSync(join(tmpdir(), 'rdbg-home-c-'));
  const rdbgC = (args: string[]) => sb.laptop.ns.run('env', [`RDBG_HOME=${homeC}`, RDBG, ...args], 60_000);
  t.teardown(async () => {
    await rdbgC(['quit']).catch(() => undefined);
    rmSync(homeC, { recursive: true, force: true });
  });
  const c = await rdbgC(['connect', '--manager', sb.laptop.managerAddress, '--dns', 'none']);
  t.equal(c.code, 1, 'the connect fails');
  t.match(c.stderr, 'rdbg: the TUN device rdbg0 is in use by another session on this machine\n');
  t.match(c.stderr, 'hint: give this session its own device and subnet: rdbg connect --tun-name rdbg1 --tun-cidr');
  t.notMatch(c.stderr, /errno|TUNSETIFF|\n\s+at /, 'no raw errno, no stack');
  t.match((await echo()).stdout, /^hello from /, "session A's TUN still carries traffic");
  t.equal((await status(rdbgA)).root?.tun_device, 'rdbg0');
});

t.test('rdbg quit of session B leaves session A\'s root daemon and TUN running', async (t) => {
  const before = await status(rdbgA);
  const q = await rdbgB(['quit']);
  t.equal(q.code, 0, q.stderr);
  t.notOk(links().includes('rdbg1'), 'B\'s TUN device is gone');
  t.ok(links().includes('rdbg0'), 'A\'s TUN device is still there');
  const after = await status(rdbgA);
  t.equal(after.root?.pid, before.root.pid, 'A\'s root daemon still answers, the same one');
  t.notOk(after.root_problem);
  t.match(sb.laptop.ns.exec('ip', ['route', 'show']), /198\.19\.128\.0\/20 dev rdbg0/, 'A\'s routes are still there');
  const r = await echo();
  t.equal(r.stdout, `hello from ${CLUSTER.echoIp}\n`, `A still reaches the cluster: ${r.stderr}`);
});

t.test('and the other way round: quit of A leaves B running', async (t) => {
  const b = await rdbgB(['connect', '--manager', sb.laptop.managerAddress, ...B_ARGS]);
  t.equal(b.code, 0, b.stderr);
  const before = await status(rdbgB);
  t.equal((await rdbgA(['quit'])).code, 0);
  t.notOk(links().includes('rdbg0'), 'A\'s TUN device is gone');
  t.ok(links().includes('rdbg1'), 'B\'s TUN device is still there');
  t.equal((await status(rdbgB)).root?.pid, before.root.pid);
  t.match(sb.laptop.ns.exec('ip', ['route', 'show']), /203\.0\.113\.0\/24 dev rdbg1/);
  t.equal((await rdbgB(['quit'])).code, 0);
  t.notOk(links().includes('rdbg1'), 'and then B\'s');
});
