import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { RDBG, Sandbox } from '../helpers/sandbox';
import { ResolvedHost } from '../helpers/resolved-host';
import { buildGoResolver, killEveryRdbgProcess, rdbgPids } from '../helpers/rdbg-crash';

// rdbg on a host where a real systemd-resolved runs (the laptop's namespace,
// in a mount namespace of its own: /etc/resolv.conf links to resolved's stub).
// rdbg gives its TUN device per-link DNS with the cluster's domains as routing
// domains; everything else stays with the uplink. After kill -9 of every rdbg
// process names outside the cluster still resolve at once, resolved keeps no
// rdbg link config, and quit leaves resolved as it was before connect.

const ECHO = '198.19.128.10';
const ECHO6 = '2001:db8:96::10'; // in the IPv6 service subnet given to this test's manager
const WWW = '192.0.2.80'; // www.example.test, answered by the uplink DNS server
const UPLINK = '198.18.1.1'; // the laptop's network (the cluster namespace's end of its veth)
const FAST_MS = 1000;

let sb: Sandbox;
let host: ResolvedHost;
let go: ReturnType<typeof buildGoResolver> | undefined;
let before = { status: '', dns: '', domain: '' };

const run = (cmd: string, args: string[], timeoutMs = 30_000) => host.run(cmd, args, timeoutMs);
const rdbg = (args: string[], timeoutMs = 60_000) => run('env', [`RDBG_HOME=${sb.laptop.home}`, RDBG, ...args], timeoutMs);

async function resolvedState(): Promise<typeof before> {
  return { status: await host.resolvectl(['status']), dns: await host.resolvectl(['dns']), domain: await host.resolvectl(['domain']) };
}

async function connect(): Promise<string> {
  const r = await rdbg(['connect', '--manager', sb.laptop.managerAddress]);
  if (r.code !== 0) throw new Error(`connect failed: ${r.stderr}\n${r.stdout}\n${host.log().slice(-2000)}`);
  return r.stdout;
}

/** The name of rdbg's TUN device while connected, from `rdbg status -o json`. */
async function tunDevice(): Promise<string> {
  const st = JSON.parse((await rdbg(['status', '-o', 'json'])).stdout) as { root?: { tun_device?: string } };
  return st.root?.tun_device ?? '';
}

async function resolveCluster(t: Test, when: string): Promise<void> {
  for (const name of ['echo', 'echo.default', 'echo.default.svc.cluster.local']) {
    const r = await run('getent', ['ahosts', name]);
    t.match(r.stdout, ECHO, `${when}: getent ahosts ${name} (${r.stdout.trim().split('\n')[0] ?? r.code})`);
  }
  for (const name of ['echo.default', 'echo.default.svc.cluster.local']) {
    const r = await run('dig', ['+short', '@127.0.0.53', name, 'A']);
    t.equal(r.stdout.trim(), ECHO, `${when}: dig @127.0.0.53 ${name}`);
  }
  const r = await run('dig', ['+short', '+search', 'echo', 'A']);
  t.equal(r.stdout.trim().split('\n').pop(), ECHO, `${when}: dig +search echo (resolved's stub has the search domains)`);
  // Reverse names of the cluster's subnets go to rdbg too, for both families.
  for (const ip of [ECHO, ECHO6]) {
    const ptr = await run('dig', ['+short', '@127.0.0.53', '-x', ip]);
    t.equal(ptr.stdout.trim(), 'echo.default.svc.cluster.local.', `${when}: dig -x ${ip} through resolved`);
    const g = await run('getent', ['hosts', ip]);
    t.match(g.stdout, /echo\.default\.svc\.cluster\.local/, `${when}: getent hosts ${ip} (glibc's reverse lookup)`);
  }
}

/** glibc, dig (UDP, TCP) and Go, each for a name outside the cluster: answer and time. */
async function resolveOutside(t: Test, when: string): Promise<number[]> {
  const checks: [string, string, string[]][] = [
    ['glibc (getent hosts)', 'getent', ['hosts', 'www.example.test']],
    ['dig over UDP', 'dig', ['+short', 'www.example.test', 'A']],
    ['dig over TCP', 'dig', ['+tcp', '+short', 'www.example.test', 'A']],
    ['Go (netdns=go)', 'env', ['GODEBUG=netdns=go', go!.bin, 'www.example.test']],
  ];
  const times: number[] = [];
  for (const [what, cmd, args] of checks) {
    const r = await run(cmd, args);
    t.match(r.stdout, WWW, `${when}: ${what} answers (${r.stdout.trim().split('\n').pop()}) ${r.stderr.trim()}`);
    t.ok(r.ms < FAST_MS, `${when}: ${what} in ${r.ms} ms, not after a timeout`);
    times.push(r.ms);
  }
  return times;
}

t.before(async () => {
  go = buildGoResolver();
  sb = await Sandbox.create({ managerArgs: ['--service-cidr', '2001:db8:96::/112'] });
  const ns = sb.laptop.ns;
  ns.exec('ip', ['route', 'add', 'default', 'via', UPLINK]);
  // The sandbox's stand-in for the laptop's resolver holds 127.0.0.53, which is resolved's stub here.
  for (const pid of ns.pids()) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.startsWith('dnsmasq\0') && cmd.includes('--listen-address=127.0.0.53')) process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  sb.cluster.spawn('dnsmasq', [
    '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', `--listen-address=${UPLINK}`, '--port=53',
    `--host-record=www.example.test,${WWW}`, '--local=/test/', '--log-facility=-',
  ]);
  host = await ResolvedHost.start(ns);
  // The uplink as DHCP or NetworkManager would set it: per-link DNS on eth0.
  await host.resolvectl(['dns', 'eth0', UPLINK]);
  // resolved takes eth0 into account once it has seen the link's state; bounded wait for that.
  let warm = await run('getent', ['hosts', 'www.example.test']);
  for (let i = 0; i < 50 && !warm.stdout.includes(WWW); i++) {
    await new Promise((r) => setTimeout(r, 100));
    warm = await run('getent', ['hosts', 'www.example.test']);
  }
  if (!warm.stdout.includes(WWW)) throw new Error(`resolved does not answer www.example.test: ${warm.stdout} ${warm.stderr} ${host.log().slice(-2000)}`);
  before = await resolvedState();
});
t.teardown(() => {
  try {
    sb?.destroy();
  } finally {
    host?.stop();
    go?.remove();
  }
});

t.test('connected: resolved routes the cluster\'s names to rdbg, and only those', async (t) => {
  const out = await connect();
  t.match(out, /systemd-resolved/, `connect says systemd-resolved is in use: ${out.trim().split('\n').pop()}`);
  const st = await rdbg(['status']);
  t.match(st.stdout, /^DNS: .*\(systemd-resolved\)/m, `status says systemd-resolved is in use: ${/^DNS:.*$/m.exec(st.stdout)?.[0]}`);
  const tun = await tunDevice();
  t.match(tun, /^rdbg/, `TUN device ${tun}`);
  const link = await host.resolvectl(['status', tun]);
  t.match(link, /DNS Servers: 127\.0\.83\.\d+/, 'the TUN link names rdbg\'s loopback resolver');
  const domains = (await host.resolvectl(['domain', tun])).replace(/\s+/g, ' ').trim();
  t.match(domains, /: default\.svc\.cluster\.local .*\bcluster\.local\b.*~svc ~default ~prod ~128\.19\.198\.in-addr\.arpa /, `the cluster's search and routing domains go to it (${domains})`);
  t.match(domains, /~(0\.){16}6\.9\.0\.0\.8\.b\.d\.0\.1\.0\.0\.2\.ip6\.arpa\b/, 'the IPv6 service subnet\'s reverse zone too');
  t.match(link, /-DefaultRoute/, 'the link is not a default route');
  t.match((await run('readlink', ['/etc/resolv.conf'])).stdout, /stub-resolv\.conf/, '/etc/resolv.conf still links to resolved\'s stub');
  await resolveCluster(t, 'connected');
  await resolveOutside(t, 'connected');
});

t.test('after kill -9 of every rdbg process: outside names at once, no rdbg link left, status says so', async (t) => {
  const tun = await tunDevice();
  t.ok((await killEveryRdbgProcess(sb.laptop.ns)) >= 2, 'the user and root daemons were killed');
  t.same(rdbgPids(sb.laptop.ns), [], 'no rdbg process is left');
  const times = await resolveOutside(t, 'after kill -9');
  t.comment(`outside names after the crash, ms: ${times.join(', ')}`);
  const status = await host.resolvectl(['status']);
  t.notMatch(status, new RegExp(`\\(${tun}\\)`), `resolved has no link ${tun} any more`);
  t.notMatch(status, /127\.0\.83\.|cluster\.local/, 'nor any of rdbg\'s servers or domains');
  const st = await rdbg(['status']);
  t.match(st.stdout, /systemd-resolved/, `status names what was left behind: ${st.stdout.trim()}`);
  t.match(st.stdout, /rdbg quit.*rdbg connect|rdbg connect.*rdbg quit/s, 'and says that quit or connect cleans it');
  // The journal's link entry must be undoable with the link gone, or the state would stay for ever.
  const q = await rdbg(['quit']);
  t.equal(q.code, 0, q.stderr);
  t.match(q.stdout, /undone/, `quit undoes the leftovers: ${q.stdout.trim()}`);
  t.notMatch((await rdbg(['status'])).stdout, /without cleaning up/, 'and nothing is left behind after it');
});

t.test('the next connect after a crash works, and quit leaves resolved as it was before connect', async (t) => {
  await connect();
  await killEveryRdbgProcess(sb.laptop.ns);
  await connect();
  await resolveCluster(t, 'connect after a crash');
  const q = await rdbg(['quit']);
  t.equal(q.code, 0, q.stderr);
  const after = await resolvedState();
  t.equal(after.status, before.status, 'resolvectl status as before connect');
  t.equal(after.dns, before.dns, 'resolvectl dns as before connect');
  t.equal(after.domain, before.domain, 'resolvectl domain as before connect');
  t.notMatch((await rdbg(['status'])).stdout, /left behind|without cleaning up/, 'nothing left behind after quit');
  const r = await run('getent', ['ahosts', 'echo.default.svc.cluster.local']);
  t.notMatch(r.stdout, ECHO, 'cluster names no longer resolve');
});
