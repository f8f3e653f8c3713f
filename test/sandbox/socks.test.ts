import t from 'tap';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CLUSTER, NETCLIENT, RDBG, Sandbox } from '../helpers/sandbox';
import { patternSha256 } from '../helpers/pattern';
import * as yaml from 'js-yaml';

// rdbg connect --socks from a `laptop` namespace to a standalone manager in a `cluster` namespace.

let sb: Sandbox;
let basePids: number[] = [];
const SOCKS = '127.0.0.1:1080';

t.before(async () => {
  sb = await Sandbox.create({ laptops: 2 });
  basePids = sb.laptop.ns.pids(); // the laptop's own resolver
  const r = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress, '--socks', SOCKS]);
  if (r.code !== 0) throw new Error(`connect failed: ${r.stderr}`);
});
t.teardown(() => sb?.destroy());

function curl(args: string[], timeoutMs = 60_000) {
  return sb.laptop.ns.run('curl', ['-sS', '--max-time', String(timeoutMs / 1000), '--socks5-hostname', SOCKS, ...args], timeoutMs + 5000);
}

function netclient(mode: string, dst: string, extra: string[] = [], timeoutMs = 120_000) {
  return sb.laptop.ns.run('node', [NETCLIENT, mode, '--socks', SOCKS, '--dst', dst, ...extra], timeoutMs).then((r) => {
    const last = r.stdout.trim().split('\n').pop() ?? '{}';
    return JSON.parse(last) as Record<string, unknown>;
  });
}

t.test('curl reaches the HTTP server by cluster name in every form, and by IP', async (t) => {
  for (const name of ['echo.default', 'echo.default.svc', 'echo.default.svc.cluster.local', 'echo', CLUSTER.echoIp, `[${CLUSTER.echoIp6}]`]) {
    const r = await curl([`http://${name}/`]);
    t.equal(r.code, 0, `curl ${name}: ${r.stderr}`);
    t.match(r.stdout, /^hello from /, `answer for ${name}`);
  }
});

t.test('status reports a healthy session with subnets and counters', async (t) => {
  const r = await sb.laptop.rdbg(['status', '--output', 'json']);
  t.equal(r.code, 0);
  const st = JSON.parse(r.stdout);
  t.equal(st.state, 'CONNECTED');
  t.equal(st.manager_address, sb.laptop.managerAddress);
  t.ok(st.manager.version, 'manager version shown');
  t.same(st.cluster.service_subnets, [CLUSTER.serviceCidr]);
  t.same(st.cluster.pod_subnets, [CLUSTER.podCidr]);
  t.ok(st.counters.flows_opened > 0, 'flows counted');
  t.ok(st.counters.bytes_in > 0, 'bytes counted');
  t.match(st.transport, /TCP flows on connections of their own, up to \d+/, 'how flows travel');
  const text = await sb.laptop.rdbg(['status']);
  t.match(text.stdout, /Session:\s+connected/);
});

t.test('--help never acts on the session; a second connect must ask for the same settings', async (t) => {
  const connected = async (what: string) => t.equal(JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout).state, 'CONNECTED', what);
  for (const args of [['quit', '--help'], ['quit', '-h'], ['leave', 'echo', '--help'], ['connect', '--socks', '1090', '--help'], ['help', 'quit']]) {
    const r = await sb.laptop.rdbg(args);
    t.equal(r.code, 0, `rdbg ${args.join(' ')}`);
    t.match(r.stdout, /Usage:\n  rdbg (quit|leave|connect)/);
    await connected(`still connected after rdbg ${args.join(' ')}`);
  }
  const same = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress, '--socks', SOCKS]);
  t.equal(same.code, 0, 'the same connect again is fine');
  t.match(same.stdout, /Already connected/);
  const other = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress, '--socks', '1090']);
  t.equal(other.code, 1, 'a connect with other settings fails');
  t.match(other.stderr, `already connected with other settings: --socks ${SOCKS} (asked: 127.0.0.1:1090)`);
  t.match(other.stderr, 'hint: run "rdbg quit" first');
  const tun = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress]);
  t.equal(tun.code, 1);
  t.match(tun.stderr, `--socks ${SOCKS} (asked: not set)`, 'TUN instead of SOCKS differs too');
  await connected('still connected to the first settings');
});

t.test('status, list and version print json and yaml of the same fields', async (t) => {
  const json = JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout) as Record<string, unknown>;
  const y = yaml.load((await sb.laptop.rdbg(['status', '-o', 'yaml'])).stdout) as Record<string, unknown>;
  t.same(Object.keys(y).sort(), Object.keys(json).sort(), 'the same fields');
  t.equal(y.state, 'CONNECTED');
  t.equal(y.manager_address, json.manager_address);
  const v = JSON.parse((await sb.laptop.rdbg(['version', '-o', 'json'])).stdout) as Record<string, unknown>;
  t.ok(v.manager_version, `the manager's version, connected (${v.manager_version})`);
  t.equal(v.manager_address, sb.laptop.managerAddress);
  t.same(yaml.load((await sb.laptop.rdbg(['list', '-o', 'yaml'])).stdout), JSON.parse((await sb.laptop.rdbg(['list', '-o', 'json'])).stdout));
  const wide = await sb.laptop.rdbg(['list', '-o', 'wide']);
  t.equal(wide.code, 0, wide.stderr);
  // A reader that stops early: the output ends quietly.
  const head = await sb.laptop.ns.run('env', [`RDBG_HOME=${sb.laptop.home}`, 'bash', '-c', `for i in $(seq 20); do ${RDBG} status | head -c 1 >/dev/null; done`], 60_000);
  t.equal(head.stderr, '', 'no EPIPE trace when the reader goes away');
});

t.test('a 1 GiB download and a 256 MiB upload arrive byte-exact', async (t) => {
  const n = 1024 * 1024 * 1024;
  const [expected, got] = await Promise.all([
    patternSha256(n, 'big'),
    sb.laptop.ns.run('bash', ['-c', `curl -sS --socks5-hostname ${SOCKS} 'http://echo.default/bytes?n=${n}&seed=big' | sha256sum`], 300_000),
  ]);
  t.equal(got.stdout.split(' ')[0], expected, '1 GiB download checksum');
  const up = 256 * 1024 * 1024;
  const upExpected = await patternSha256(up, 'up');
  const r = await sb.laptop.ns.run('bash', ['-c',
    `node -e "require('${join(__dirname, '../helpers/pattern.js')}').patternStream(${up}, 'up').pipe(process.stdout)" | ` +
      `curl -sS --socks5-hostname ${SOCKS} -T - http://echo.default/sha256`], 300_000);
  t.equal(r.stdout.trim(), `${upExpected} ${up}`, 'upload checksum and length');
});

t.test('1,000 concurrent connections all complete', async (t) => {
  const r = await netclient('concurrent', `echo.default:7`, ['--n', '1000']);
  t.equal(r.ok, 1000, `all echoed (${JSON.stringify(r)})`);
});

t.test('a closed port fails at once as refused', async (t) => {
  const r = await curl([`http://${CLUSTER.echoIp}:${CLUSTER.closedPort}/`]);
  t.not(r.code, 0);
  t.match(r.stderr, /refused|\(5\)/i, `curl says refused: ${r.stderr}`);
  t.ok(r.ms < 3000, `failed fast (${r.ms} ms)`);
  const c = await netclient('connect', `${CLUSTER.echoIp}:${CLUSTER.closedPort}`);
  t.match(String(c.error), /ConnectionRefused/);
});

t.test('half-close: the client shuts its write side and still reads the full reply', async (t) => {
  const r = await netclient('halfclose', `echo.default:7`);
  t.equal(r.received, 'hello, half-closed world\nclosed after 25 bytes\n');
});

t.test('UDP ASSOCIATE reaches the UDP echo', async (t) => {
  const r = await netclient('udp', `${CLUSTER.echoIp}:7`);
  t.equal(r.reply, 'echo:ping over udp');
  const byName = await netclient('udp', `echo.default:7`);
  t.equal(byName.reply, 'echo:ping over udp');
});

t.test('an unknown name fails as a name error', async (t) => {
  const r = await curl(['http://nosuch.default/']);
  t.not(r.code, 0);
  t.match(r.stderr, /unreachable|\(4\)/i, r.stderr);
  const log = await sb.laptop.rdbg(['status', '-o', 'json']);
  t.ok(JSON.parse(log.stdout).counters.flows_failed > 0, 'counted as a failed flow');
});

t.test('with raw flows turned off (RDBG_RAW_FLOWS_MAX=0) TCP flows share the HTTP/2 connection and behave the same', async (t) => {
  const lap = sb.laptops[1];
  const socks = '127.0.0.1:1081';
  const c = await lap.rdbg(['connect', '--manager', lap.managerAddress, '--socks', socks], 60_000, ['RDBG_RAW_FLOWS_MAX=0']);
  t.equal(c.code, 0, c.stderr);
  t.teardown(() => lap.rdbg(['quit']));
  const st = JSON.parse((await lap.rdbg(['status', '-o', 'json'])).stdout);
  t.notMatch(st.transport, /connections of their own/, `transport: ${st.transport}`);
  const n = 64 * 1024 * 1024;
  const [expected, got] = await Promise.all([
    patternSha256(n, 'h2'),
    lap.ns.run('bash', ['-c', `curl -sS --socks5-hostname ${socks} 'http://echo.default/bytes?n=${n}&seed=h2' | sha256sum`], 120_000),
  ]);
  t.equal(got.stdout.split(' ')[0], expected, '64 MiB download checksum');
  const run = (mode: string, dst: string, extra: string[] = []) =>
    lap.ns.run('node', [NETCLIENT, mode, '--socks', socks, '--dst', dst, ...extra], 120_000).then((r) => JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}'));
  t.equal((await run('halfclose', 'echo.default:7')).received, 'hello, half-closed world\nclosed after 25 bytes\n', 'half-close');
  t.match(String((await run('connect', `${CLUSTER.echoIp}:${CLUSTER.closedPort}`)).error), /ConnectionRefused/, 'refused');
  t.equal((await run('concurrent', 'echo.default:7', ['--n', '200'])).ok, 200, '200 concurrent connections');
});

t.test('rdbg quit leaves no process or socket file behind', async (t) => {
  const before = sb.laptop.ns.pids();
  t.ok(before.length > basePids.length, 'the daemon runs in the laptop namespace');
  const r = await sb.laptop.rdbg(['quit']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /Disconnected/);
  await new Promise((res) => setTimeout(res, 200));
  t.same(sb.laptop.ns.pids(), basePids, 'no process of rdbg left in the laptop namespace');
  t.same(readdirSync(sb.laptop.home).filter((f) => f !== 'daemon.log'), [], 'no socket or pid file left');
  t.notOk(existsSync(join(sb.laptop.home, 'daemon.sock')));
  const again = await sb.laptop.rdbg(['status']);
  t.match(again.stdout, /not connected/);
});
