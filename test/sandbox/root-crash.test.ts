import t from 'tap';
import { readFileSync } from 'node:fs';
import { CLUSTER, Sandbox } from '../helpers/sandbox';

// The root daemon dies under a running session: its watchdog resets the
// laptop's connections into the cluster and gives back routes and DNS at once;
// `rdbg status` says what is broken and `rdbg connect` repairs it.

let sb: Sandbox;
let routesBefore = '';
let resolvBefore = '';

const resolvPath = (): string => `/etc/netns/${sb.laptop.ns.name}/resolv.conf`;
const routes = (): string => sb.laptop.ns.exec('ip', ['route', 'show']);
/** The netfilter rules rdbg may touch (nat and mangle, both families). */
const rules = (): string => ['iptables', 'ip6tables'].flatMap((cmd) => ['nat', 'mangle'].map((table) => sb.laptop.ns.exec(cmd, ['-t', table, '-S']))).join('');
let rulesBefore = '';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!what() && Date.now() < end) await sleep(100);
  return what();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function rootStatus(): Promise<{ root: { pid: number; watchdog_pid: number } | null; root_problem: Record<string, unknown> | null }> {
  return JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout);
}

t.before(async () => {
  sb = await Sandbox.create();
  routesBefore = routes();
  rulesBefore = rules();
  resolvBefore = readFileSync(resolvPath(), 'utf8');
  const r = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress]);
  if (r.code !== 0) throw new Error(`connect failed: ${r.stderr}\n${r.stdout}`);
});
t.teardown(async () => {
  await sb?.laptop.rdbg(['quit']).catch(() => undefined);
  sb?.destroy();
});

t.test('kill -9 of the root daemon mid-download: curl fails at once, routes and resolv.conf come back, status says so, connect repairs', async (t) => {
  const st = await rootStatus();
  t.ok(st.root?.pid && st.root.watchdog_pid, 'a worker and its watchdog');
  // 1 GiB at 20 MB/s: still running long after the kill; --max-time is curl's own 60 s timeout.
  const n = 1024 * 1024 * 1024;
  const download = sb.laptop.ns.run('curl', ['-sS', '--max-time', '60', '--limit-rate', '20M', '-o', '/dev/null', `http://${CLUSTER.echoIp}/bytes?n=${n}`], 90_000);
  await sleep(1500);
  process.kill(st.root!.pid, 'SIGKILL');
  const killedAt = Date.now();
  const r = await download;
  const afterKill = Date.now() - killedAt;
  t.not(r.code, 0, 'curl did not finish the download');
  t.not(r.code, 28, `curl saw the connection end, not its own timeout: ${r.stderr.trim()}`);
  t.ok(afterKill < 10_000, `curl ended ${afterKill} ms after the kill, not at its 60 s timeout: ${r.stderr.trim()}`);

  t.ok(await until(() => readFileSync(resolvPath(), 'utf8') === resolvBefore, 10_000), 'resolv.conf restored byte for byte with no command typed');
  t.ok(await until(() => routes() === routesBefore, 10_000), 'routes as before');
  t.ok(await until(() => rules() === rulesBefore, 10_000), 'netfilter rules as before');
  t.ok(await until(() => !alive(st.root!.watchdog_pid), 10_000), 'the watchdog has exited');

  const text = await sb.laptop.rdbg(['status']);
  t.equal(text.code, 0);
  t.match(text.stdout, /Root daemon:\s+NOT RUNNING \(killed by SIGKILL at [^)]+\): its watchdog removed the TUN device, routes and DNS settings and reset the connections into 198\.19\.128\.0\/20/);
  t.match(text.stdout, /run "rdbg connect" to repair it, or "rdbg quit"/);
  const json = await rootStatus();
  t.equal(json.root, null);
  t.match(json.root_problem, { state: 'NOT_RUNNING', reason: 'killed by SIGKILL', cleaned: true });

  const c = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress]);
  t.equal(c.code, 0, c.stderr);
  t.match(c.stderr, /the root daemon of this session is not running \(killed by SIGKILL\): starting a new one/);
  t.match(c.stdout, /^Repaired: traffic manager .*rdbg0 routes 198\.19\.128\.0\/20, 198\.19\.0\.0\/20/);
  const curl = await sb.laptop.ns.run('curl', ['-sS', '--max-time', '10', 'http://echo.default/']);
  t.equal(curl.stdout, `hello from ${CLUSTER.echoIp}\n`, `the cluster is reachable again by name: ${curl.stderr}`);
  t.notOk((await rootStatus()).root_problem, 'status has nothing to report');
});

t.test('kill -9 of the worker and its watchdog: status says what was left behind; connect replays the journal, quit restores', async (t) => {
  const st = await rootStatus();
  t.ok(st.root?.pid, 'running');
  process.kill(st.root!.watchdog_pid, 'SIGKILL');
  process.kill(st.root!.pid, 'SIGKILL');
  t.ok(await until(() => !alive(st.root!.pid) && !alive(st.root!.watchdog_pid), 5000), 'both gone');
  t.not(readFileSync(resolvPath(), 'utf8'), resolvBefore, 'with nobody left to undo it, resolv.conf is still rdbg\'s');
  const text = await sb.laptop.rdbg(['status']);
  t.match(text.stdout, /Root daemon:\s+NOT RUNNING \(crashed\?\): the TUN device and its routes are gone, and it may have left changes behind \(resolv\.conf\)/);
  t.match((await rootStatus()).root_problem, { state: 'NOT_RUNNING', cleaned: false });

  const c = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress]);
  t.equal(c.code, 0, c.stderr);
  t.match(c.stdout, /^Repaired:/);
  const curl = await sb.laptop.ns.run('curl', ['-sS', '--max-time', '10', 'http://echo.default/']);
  t.equal(curl.stdout, `hello from ${CLUSTER.echoIp}\n`, curl.stderr);

  const q = await sb.laptop.rdbg(['quit']);
  t.equal(q.code, 0, q.stderr);
  t.equal(readFileSync(resolvPath(), 'utf8'), resolvBefore, 'resolv.conf restored byte for byte');
  t.equal(routes(), routesBefore, 'routes as before');
  t.match((await sb.laptop.rdbg(['status'])).stdout, /^rdbg is not connected \(no user daemon running\)\.\n$/);
});
