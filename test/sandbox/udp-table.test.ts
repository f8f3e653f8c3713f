import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { CLUSTER, Sandbox } from '../helpers/sandbox';
import { waitForLine } from '../helpers/netns';

// One unprivileged program sends one datagram to each of 4,200 UDP
// destinations through the TUN device (more than the root daemon's table of
// 4,096 flows). Right after it, every other program's UDP must still work: DNS
// over UDP to a DNS server inside the cluster (as kube-dns is, through the
// TUN), rdbg's own resolver, and a UDP echo from another socket.

const FLOOD = 4200;
const CLUSTER_DNS = CLUSTER.otherIp; // a DNS server on a service address, as kube-dns

// One socket, one datagram to each destination; bounded by the count.
const FLOOD_PY = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(${FLOOD}):
    s.sendto(b'x', ('${CLUSTER.echoIp}', 10000 + i))
print(s.getsockname()[1])
`;

// In the cluster: a socket on each destination that takes datagrams and never answers, so each flow stays open.
const SINK_PY = `
import select, socket
socks = []
for i in range(${FLOOD}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('${CLUSTER.echoIp}', 10000 + i))
    socks.append(s)
print('READY', flush=True)
p = select.epoll()
for s in socks:
    p.register(s.fileno(), select.EPOLLIN)
byfd = {s.fileno(): s for s in socks}
while True:
    for fd, _ in p.poll(60):
        byfd[fd].recv(65535)
`;

let sb: Sandbox;
let clusterDns: ChildProcess;
let sink: ChildProcess;
const run = (cmd: string, args: string[], timeoutMs = 30_000) => sb.laptop.ns.run(cmd, args, timeoutMs);

interface RootUdp {
  udp_flows: number;
  udp_flow_limit: number;
  udp_source_limit: number;
  udp_evicted_source_limit: number;
  udp_evicted_table_full: number;
  packets_in: number;
}
async function rootStatus(): Promise<RootUdp> {
  return JSON.parse((await sb.laptop.rdbg(['status', '-o', 'json'])).stdout).root as RootUdp;
}

t.before(async () => {
  sb = await Sandbox.create();
  clusterDns = sb.cluster.spawn('dnsmasq', [
    '--no-daemon', '--no-resolv', '--no-hosts', '--bind-interfaces', `--listen-address=${CLUSTER_DNS}`, '--port=53',
    '--local=/cluster.local/', '--log-facility=-', `--host-record=echo.default.svc.cluster.local,${CLUSTER.echoIp}`,
  ]);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the cluster\'s DNS server did not start')), 15_000);
    clusterDns.stderr!.on('data', (d: Buffer) => {
      if (/cleared cache|started/.test(d.toString())) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  sink = sb.cluster.spawn('python3', ['-c', SINK_PY]);
  await waitForLine(sink, (l) => l === 'READY', 15_000, 'the UDP sink');
  const r = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress]);
  if (r.code !== 0) throw new Error(`connect failed: ${r.stderr}\n${r.stdout}`);
});
t.teardown(() => {
  clusterDns?.kill('SIGKILL');
  sink?.kill('SIGKILL');
  sb?.destroy();
});

t.test('after one socket sent to 4,200 destinations, DNS over UDP and another socket\'s UDP still work at once', async (t) => {
  const before = await rootStatus();
  t.match(before, { udp_flow_limit: 4096, udp_source_limit: 256 }, 'the table\'s bounds are in the status');
  t.equal((await run('dig', ['+short', '+time=2', '+tries=1', `@${CLUSTER_DNS}`, 'echo.default.svc.cluster.local'])).stdout.trim(), CLUSTER.echoIp, 'the cluster\'s DNS answers over UDP before the flood');

  const flood = await run('python3', ['-c', FLOOD_PY]);
  t.equal(flood.code, 0, `flood sent from port ${flood.stdout.trim()} ${flood.stderr}`);
  // Wait (bounded) until the root daemon has read every datagram of the flood.
  let st = await rootStatus();
  const until = Date.now() + 30_000;
  while (st.packets_in - before.packets_in < FLOOD && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 200));
    st = await rootStatus();
  }
  t.ok(st.packets_in - before.packets_in >= FLOOD, `the root daemon read the flood (${st.packets_in - before.packets_in} packets)`);
  t.ok(st.udp_flows >= 200 && st.udp_flows <= 256 + before.udp_flows + 2, `the flooding socket holds its limit (${st.udp_flows} flows)`);
  t.ok(st.udp_evicted_source_limit >= FLOOD - 256, `its own older flows made room (${st.udp_evicted_source_limit} evicted)`);

  const clusterDig = await run('dig', ['+short', '+time=2', '+tries=1', `@${CLUSTER_DNS}`, 'echo.default.svc.cluster.local']);
  t.equal(clusterDig.stdout.trim(), CLUSTER.echoIp, `DNS over UDP through the TUN answers at once: ${clusterDig.stdout.trim()}`);
  const rdbgDig = await run('dig', ['+short', '+time=2', '+tries=1', 'echo.default.svc.cluster.local']);
  t.equal(rdbgDig.stdout.trim(), CLUSTER.echoIp, 'rdbg\'s own resolver answers');
  const echo = await run('bash', ['-c', `echo -n ping | timeout 5 socat -t 2 - UDP:${CLUSTER.echoIp}:7`]);
  t.equal(echo.stdout, 'echo:ping', `a UDP echo from another socket: ${echo.stderr}`);

  const text = (await sb.laptop.rdbg(['status'])).stdout;
  t.match(text, /UDP flows:\s+\d+ of 4096, per-source limit 256; \d+ evicted to make room/, `status shows the table: ${/UDP flows:.*/.exec(text)?.[0]}`);
});
