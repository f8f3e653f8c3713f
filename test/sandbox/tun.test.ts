import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLUSTER, NETCLIENT, Sandbox } from '../helpers/sandbox';
import { patternSha256 } from '../helpers/pattern';

// `rdbg connect` without --socks: the root daemon's TUN device, routes and DNS,
// driven with plain programs that know nothing about rdbg.

let sb: Sandbox;
let routesBefore = '';
let resolvBefore = '';
let rulesBefore = '';

/** The namespace's netfilter rules that rdbg may touch (nat and mangle, both families). */
const rules = (lap = sb.laptop): string =>
  ['iptables', 'ip6tables'].flatMap((cmd) => ['nat', 'mangle'].map((table) => lap.ns.exec(cmd, ['-t', table, '-S']))).join('');

const resolvPath = (): string => `/etc/netns/${sb.laptop.ns.name}/resolv.conf`;
const run = (cmd: string, args: string[], timeoutMs = 60_000) => sb.laptop.ns.run(cmd, args, timeoutMs);
const curl = (url: string, extra: string[] = []) => run('curl', ['-sS', '--max-time', '20', ...extra, url], 30_000);
const dig = (args: string[]) => run('dig', ['+time=3', '+tries=1', ...args]);

t.before(async () => {
  sb = await Sandbox.create({ extraServers: true, laptops: 2 });
  routesBefore = sb.laptop.ns.exec('ip', ['route', 'show']);
  rulesBefore = rules();
  resolvBefore = readFileSync(resolvPath(), 'utf8');
  // The IPv6 service address is outside the announced subnets: --also-proxy adds it.
  const r = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress, '--also-proxy', '2001:db8:96::/64']);
  if (r.code !== 0) throw new Error(`connect failed: ${r.stderr}\n${r.stdout}`);
});
t.teardown(() => sb?.destroy());

t.test('connect prints progress and a one-line summary; status shows the TUN, routes and DNS', async (t) => {
  const st = await sb.laptop.rdbg(['status']);
  t.match(st.stdout, /TUN device:\s+rdbg0 \(169\.254\.83\.1\), routes 198\.19\.128\.0\/20, 198\.19\.0\.0\/20, 2001:db8:96::\/64/);
  t.match(st.stdout, /DNS:\s+127\.0\.83\.53 \(resolv\.conf\)/);
  const routes = sb.laptop.ns.exec('ip', ['route', 'show']);
  t.match(routes, /198\.19\.128\.0\/20 dev rdbg0/);
  t.match(readFileSync(resolvPath(), 'utf8'), /^nameserver 127\.0\.83\.53$/m);
  t.match(st.stdout, /TCP capture:\s+netfilter redirects TCP to the cluster to the root daemon/);
  const now = rules();
  t.match(now, /-A OUTPUT -o rdbg0 -j RDBG-rdbg0/, 'the jumps match what is routed into the TUN');
  t.match(now, /-A RDBG-rdbg0 -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j NFQUEUE --queue-num \d+ --queue-bypass/, 'SYNs wait in the queue');
  t.match(now, /-A RDBG-rdbg0 -p tcp -j REDIRECT --to-ports \d+/, 'TCP goes to the loopback listener');
});

t.test('the redirect listener serves only redirected connections', async (t) => {
  const port = /-A RDBG-rdbg0 -p tcp -j REDIRECT --to-ports (\d+)/.exec(sb.laptop.ns.exec('iptables', ['-t', 'nat', '-S']))![1];
  // Someone on the laptop dialling the listener itself has no cluster destination: turned away, not relayed anywhere.
  const direct = await run('node', ['-e', `const s=require('net').connect(${port},'127.0.0.1');s.on('data',()=>console.log('DATA'));s.on('close',()=>console.log('CLOSED'));s.on('error',e=>console.log(e.code));s.write('GET / HTTP/1.0\\r\\n\\r\\n')`], 30_000);
  t.match(direct.stdout, /ECONNRESET|CLOSED/, `the connection is reset: ${direct.stdout}`);
  t.notMatch(direct.stdout, /DATA/, 'no bytes come back');
  const ok = await curl(`http://${CLUSTER.echoIp}/`);
  t.equal(ok.stdout, `hello from ${CLUSTER.echoIp}\n`, 'the daemon still serves');
});

t.test('a SYN that passed unheld is dialled once accepted; a program that resets meanwhile harms nothing else', async (t) => {
  // As when something flushed rdbg's mangle chain: the SYN goes on at once, the kernel completes the connection
  // with the listener, and the daemon dials only then. The programs reset (SO_LINGER 0) while the manager still
  // waits for an address that never answers.
  const rule = sb.laptop.ns.exec('iptables', ['-t', 'mangle', '-S', 'RDBG-rdbg0']).split('\n').find((l) => /NFQUEUE/.test(l))!;
  const pid = async (): Promise<number> => JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout).root?.pid;
  const before = await pid();
  t.ok(before > 0, `the root daemon runs (${before})`);
  sb.laptop.ns.exec('iptables', ['-t', 'mangle', '-F', 'RDBG-rdbg0']);
  t.teardown(() => void sb.laptop.ns.exec('iptables', ['-t', 'mangle', ...rule.split(' ')]));
  const resets = await run('python3', ['-c', [
    'import socket, struct',
    'for i in range(20):',
    '    s = socket.create_connection(("198.19.7.7", 80), timeout=5)',
    '    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))',
    '    s.close()',
    'print("reset 20")',
  ].join('\n')]);
  t.equal(resets.stdout.trim(), 'reset 20', `connected to the listener and reset: ${resets.stderr}`);
  const ok = await curl(`http://${CLUSTER.echoIp}/`);
  t.equal(ok.stdout, `hello from ${CLUSTER.echoIp}\n`, 'an unheld SYN to a live service is served');
  await new Promise((r) => setTimeout(r, 4000)); // the manager's dials to 198.19.7.7 fail meanwhile
  t.equal(await pid(), before, 'the same root daemon still runs');
  const again = await curl(`http://${CLUSTER.echoIp}/`);
  t.equal(again.stdout, `hello from ${CLUSTER.echoIp}\n`);
});

t.test('curl reaches services by IP and by every short name', async (t) => {
  for (const target of [CLUSTER.echoIp, 'echo.default', 'echo.default.svc', 'echo.default.svc.cluster.local', 'echo']) {
    const r = await curl(`http://${target}/`);
    t.equal(r.code, 0, `curl ${target}: ${r.stderr}`);
    // With the IPv6 subnet routed too, names resolve to both families and curl may pick either.
    t.ok([`hello from ${CLUSTER.echoIp}\n`, `hello from ${CLUSTER.echoIp6}\n`].includes(r.stdout), `answer for ${target}: ${r.stdout}`);
  }
  const v6 = await curl(`http://[${CLUSTER.echoIp6}]/`);
  t.equal(v6.code, 0, `IPv6 destination: ${v6.stderr}`);
  t.equal(v6.stdout, `hello from ${CLUSTER.echoIp6}\n`);
});

t.test('dig answers A, AAAA, SRV and PTR for cluster names; other names go to the original resolver', async (t) => {
  t.equal((await dig(['+short', 'echo.default.svc.cluster.local', 'A'])).stdout.trim(), CLUSTER.echoIp);
  t.equal((await dig(['+short', 'echo.default', 'AAAA'])).stdout.trim(), CLUSTER.echoIp6);
  t.match((await dig(['+short', '_http._tcp.echo.default.svc.cluster.local', 'SRV'])).stdout, /0 100 80 echo\.default\.svc\.cluster\.local\./);
  t.match((await dig(['+short', '-x', CLUSTER.echoIp])).stdout, /echo\.default\.svc\.cluster\.local\./);
  const headless = (await dig(['+short', 'headless.default.svc.cluster.local'])).stdout.trim().split('\n').sort();
  t.same(headless, [...CLUSTER.podIps].sort(), 'a headless service has several A records');
  t.equal((await dig(['+short', 'www.example.test'])).stdout.trim(), '192.0.2.80', 'unrelated name answered by the original resolver');
  const nx = await dig(['nosuch.default.svc.cluster.local']);
  t.match(nx.stdout, /status: NXDOMAIN/);
  const tcp = await dig(['+tcp', '+short', 'echo.default.svc.cluster.local']);
  t.equal(tcp.stdout.trim(), CLUSTER.echoIp, 'DNS over TCP');
});

t.test('redis-cli, iperf3 and a UDP exchange work with no proxy settings', async (t) => {
  const set = await run('redis-cli', ['-h', CLUSTER.otherIp, 'set', 'rdbg', 'works']);
  t.equal(set.stdout.trim(), 'OK', set.stderr);
  const get = await run('redis-cli', ['-h', 'other.prod', 'get', 'rdbg']);
  t.equal(get.stdout.trim(), 'works', `by name: ${get.stderr}`);
  const ip3 = await run('iperf3', ['-c', CLUSTER.otherIp, '-t', '2', '-J'], 30_000);
  t.equal(ip3.code, 0, ip3.stderr);
  const bps = JSON.parse(ip3.stdout).end?.sum_received?.bits_per_second ?? 0;
  t.ok(bps > 0, `iperf3 moved data (${(bps / 8e6).toFixed(0)} MB/s)`);
  const udp = await run('bash', ['-c', `echo -n ping | timeout 5 socat -t 2 - UDP:${CLUSTER.echoIp}:7`]);
  t.equal(udp.stdout, 'echo:ping', `UDP echo: ${udp.stderr}`);
});

t.test('1 GiB byte-exact in each direction', async (t) => {
  const n = 1024 * 1024 * 1024;
  const [expected, got] = await Promise.all([
    patternSha256(n, 'tun-down'),
    run('bash', ['-c', `curl -sS 'http://echo.default/bytes?n=${n}&seed=tun-down' | sha256sum`], 300_000),
  ]);
  t.equal(got.stdout.split(' ')[0], expected, 'download');
  const upExpected = await patternSha256(n, 'tun-up');
  const up = await run('bash', ['-c',
    `node -e "require('${join(__dirname, '../helpers/pattern.js')}').patternStream(${n}, 'tun-up').pipe(process.stdout)" | curl -sS -T - http://echo.default/sha256`], 300_000);
  t.equal(up.stdout.trim(), `${upExpected} ${n}`, 'upload');
});

t.test('1,000 concurrent connections', async (t) => {
  const r = await run('node', [NETCLIENT, 'concurrent', '--dst', `${CLUSTER.echoIp}:7`, '--n', '1000'], 120_000);
  t.match(JSON.parse(r.stdout.trim().split('\n').pop()!), { ok: 1000, failed: 0 });
});

t.test('refused and unreachable destinations fail fast and correctly', async (t) => {
  // The errno a program sees, as in a pod: ECONNREFUSED from an RST, EHOSTUNREACH from an ICMP error.
  const probe = (host: string, port: number) =>
    run('node', ['-e', `const s=require('net').connect(${port},'${host}');s.on('connect',()=>{console.log('CONNECTED');s.destroy()});s.on('error',e=>console.log(e.code))`], 30_000);
  const refused = await probe(CLUSTER.echoIp, CLUSTER.closedPort);
  t.equal(refused.stdout.trim(), 'ECONNREFUSED');
  t.ok(refused.ms < 3000, `refused in ${refused.ms} ms`);
  const unreach = await probe('198.19.7.7', 80);
  t.equal(unreach.stdout.trim(), 'EHOSTUNREACH');
  t.ok(unreach.ms < 5000, `unreachable in ${unreach.ms} ms`);
  const curlRefused = await curl(`http://${CLUSTER.echoIp}:${CLUSTER.closedPort}/`);
  t.equal(curlRefused.code, 7, 'curl: could not connect');
});

t.test('malformed packets into the TUN are dropped; the daemon keeps serving', async (t) => {
  const before = JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout).root;
  const inj = await run('python3', [join(__dirname, '../../../test/helpers/inject-garbage.py'), CLUSTER.echoIp, CLUSTER.echoIp6, '600']);
  t.equal(inj.code, 0, inj.stderr);
  t.ok(Number(inj.stdout) > 500, `garbage sent (${inj.stdout.trim()} packets)`);
  const after = JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout).root;
  t.ok(after.malformed_packets > before.malformed_packets, `counted as malformed (${after.malformed_packets - before.malformed_packets})`);
  t.equal(after.pid, before.pid, 'the same root daemon is still running');
  const ok = await curl('http://echo.default/');
  t.equal(ok.code, 0, 'service traffic still flows');
  const r = await run('node', [NETCLIENT, 'concurrent', '--dst', `${CLUSTER.echoIp}:7`, '--n', '100'], 60_000);
  t.match(JSON.parse(r.stdout.trim().split('\n').pop()!), { ok: 100 });
});

t.test('the fallbacks: TCP read off the TUN (RDBG_TCP_CAPTURE=tun), the TUN read on a poll thread (RDBG_TUN_READER=poll), carry the same traffic', async (t) => {
  const rootLog = (home: string): string => readFileSync(join(home, 'root-daemon.log'), 'utf8');
  t.match(rootLog(sb.laptop.home), /TUN reader: event loop/, 'the default reader');
  const lap = sb.laptops[1];
  const before = rules(lap);
  const c = await lap.rdbg(['connect', '--manager', lap.managerAddress], 60_000, ['RDBG_TUN_READER=poll', 'RDBG_TCP_CAPTURE=tun']);
  t.equal(c.code, 0, c.stderr);
  t.teardown(() => lap.rdbg(['quit']));
  t.match(rootLog(lap.home), /TUN reader: poll thread/, 'the fallback reader');
  t.match((await lap.rdbg(['status'])).stdout, /TCP capture:\s+TCP packets read off the TUN device/);
  t.equal(rules(lap), before, 'no netfilter rules');
  const refused = await lap.ns.run('node', ['-e', `const s=require('net').connect(${CLUSTER.closedPort},'${CLUSTER.echoIp}');s.on('connect',()=>{console.log('CONNECTED');s.destroy()});s.on('error',e=>console.log(e.code))`], 30_000);
  t.equal(refused.stdout.trim(), 'ECONNREFUSED', 'a refused port is refused');
  const hello = await lap.ns.run('curl', ['-sS', '--max-time', '20', 'http://echo.default/'], 30_000);
  t.equal(hello.stdout, `hello from ${CLUSTER.echoIp}\n`, `curl by name: ${hello.stderr}`);
  const n = 64 * 1024 * 1024;
  const [expected, got] = await Promise.all([
    patternSha256(n, 'poll'),
    lap.ns.run('bash', ['-c', `curl -sS 'http://echo.default/bytes?n=${n}&seed=poll' | sha256sum`], 120_000),
  ]);
  t.equal(got.stdout.split(' ')[0], expected, '64 MiB download checksum');
  const r = await lap.ns.run('node', [NETCLIENT, 'concurrent', '--dst', `${CLUSTER.echoIp}:7`, '--n', '200'], 60_000);
  t.match(JSON.parse(r.stdout.trim().split('\n').pop()!), { ok: 200, failed: 0 }, '200 concurrent connections');
});

t.test('kill -9 of the root daemon and its watchdog, then rdbg quit: routes and resolv.conf are as before', async (t) => {
  const st = JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout);
  t.ok(st.root?.pid, 'the root daemon is running');
  // The worker alone would be cleaned up after by its watchdog (test/sandbox/root-crash.test.ts).
  process.kill(st.root.watchdog_pid, 'SIGKILL');
  process.kill(st.root.pid, 'SIGKILL');
  await new Promise((r) => setTimeout(r, 300));
  t.not(readFileSync(resolvPath(), 'utf8'), resolvBefore, 'resolv.conf is still rdbg\'s after the crash');
  const q = await sb.laptop.rdbg(['quit']);
  t.equal(q.code, 0, q.stderr);
  t.match(q.stdout, /leftovers of a crashed root daemon were undone/);
  t.equal(sb.laptop.ns.exec('ip', ['route', 'show']), routesBefore, 'routes restored');
  t.equal(rules(), rulesBefore, 'netfilter rules restored');
  t.equal(readFileSync(resolvPath(), 'utf8'), resolvBefore, 'resolv.conf restored byte for byte');
  t.equal((await dig(['+short', 'www.example.test'])).stdout.trim(), '192.0.2.80', 'normal names still resolve');
});

t.test('kill -9 of the user daemon: the root daemon gives the network back by itself', async (t) => {
  const r = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress]);
  t.equal(r.code, 0, r.stderr);
  t.match(readFileSync(resolvPath(), 'utf8'), /^nameserver 127\.0\.83\.53$/m);
  const st = JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout);
  process.kill(st.pid, 'SIGKILL');
  const until = Date.now() + 30_000;
  while (Date.now() < until && readFileSync(resolvPath(), 'utf8') !== resolvBefore) await new Promise((res) => setTimeout(res, 250));
  t.equal(readFileSync(resolvPath(), 'utf8'), resolvBefore, 'resolv.conf restored without any command');
  let alive = true;
  const exitBy = Date.now() + 10_000;
  while (alive && Date.now() < exitBy) {
    try {
      process.kill(st.root.pid, 0);
      await new Promise((res) => setTimeout(res, 100));
    } catch {
      alive = false;
    }
  }
  t.equal(sb.laptop.ns.exec('ip', ['route', 'show']), routesBefore, 'routes restored');
  t.equal(rules(), rulesBefore, 'netfilter rules restored');
  t.notOk(alive, 'the root daemon has exited');
  const q = await sb.laptop.rdbg(['quit']);
  t.equal(q.code, 0);
});

t.test('a cluster subnet that overlaps a route is refused unless allowed; --never-proxy carves out', async (t) => {
  sb.laptop.ns.exec('ip', ['route', 'add', '198.19.0.0/24', 'via', '198.18.1.1']);
  try {
    const r = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress]);
    t.equal(r.code, 1);
    t.match(r.stderr, /the cluster subnet 198\.19\.0\.0\/20 overlaps the route 198\.19\.0\.0\/24 dev eth0 via 198\.18\.1\.1/);
    t.match(r.stderr, /--allow-conflicting-subnets/);
    t.match((await sb.laptop.rdbg(['status'])).stdout, /not connected/, 'nothing left running');
    t.equal(readFileSync(resolvPath(), 'utf8'), resolvBefore, 'resolv.conf untouched');

    const ok = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress, '--never-proxy', '198.19.0.0/24']);
    t.equal(ok.code, 0, ok.stderr);
    const routes = sb.laptop.ns.exec('ip', ['route', 'show']);
    t.notMatch(routes, /198\.19\.0\.0\/20 dev rdbg0/, 'the /20 is not routed whole');
    t.match(routes, /198\.19\.8\.0\/21 dev rdbg0/, 'the rest of it is');
    t.match(routes, /198\.19\.0\.0\/24 via 198\.18\.1\.1 dev eth0/, 'the local route is kept');
    const curl = await sb.laptop.ns.run('curl', ['-sS', '--max-time', '10', `http://${CLUSTER.echoIp}/`]);
    t.equal(curl.code, 0, 'service traffic still flows');
    t.equal((await sb.laptop.rdbg(['quit'])).code, 0);
  } finally {
    sb.laptop.ns.exec('ip', ['route', 'del', '198.19.0.0/24']);
  }
  t.equal(sb.laptop.ns.exec('ip', ['route', 'show']), routesBefore);
});

t.test('--dns-include and --dns-exclude decide which names the cluster answers', async (t) => {
  t.equal((await dig(['+short', 'www.example.test'])).stdout.trim(), '192.0.2.80', 'not connected: the laptop resolver answers');
  const r = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress, '--dns-include', 'example.test', '--dns-exclude', 'prod']);
  t.equal(r.code, 0, r.stderr);
  try {
    t.not((await dig(['+short', 'www.example.test'])).stdout.trim(), '192.0.2.80', 'an included suffix is asked of the cluster');
    t.equal((await dig(['+short', 'other.prod'])).stdout.trim(), '', 'an excluded namespace is not');
    t.equal((await dig(['+short', 'echo.default'])).stdout.trim(), CLUSTER.echoIp, 'other cluster names still resolve');
  } finally {
    t.equal((await sb.laptop.rdbg(['quit'])).code, 0);
  }
  t.equal(readFileSync(resolvPath(), 'utf8'), resolvBefore);
});
