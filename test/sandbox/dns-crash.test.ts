import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { buildGoResolver, killEveryRdbgProcess, rdbgPids } from '../helpers/rdbg-crash';
import { Sandbox } from '../helpers/sandbox';

// DNS after kill -9 of every rdbg process: resolv.conf still names rdbg's
// resolver first, and nothing listens there any more. Names outside the
// cluster must still resolve at once (well under glibc's 5 s timeout) for
// glibc, dig (UDP and TCP) and Go's own resolver, with no command typed; the
// next connect or quit puts resolv.conf back byte for byte.
//
// The laptop has a default route, as real laptops do: a query to an address
// that is not local then leaves for the network and waits out a timeout.

const WWW = '192.0.2.80'; // www.example.test, answered by the laptop's original resolver
const FAST_MS = 1000;

let sb: Sandbox;
let goResolver: { bin: string; remove: () => void } | undefined;
let resolvBefore = '';

const resolvPath = (): string => `/etc/netns/${sb.laptop.ns.name}/resolv.conf`;
const run = (cmd: string, args: string[], timeoutMs = 30_000) => sb.laptop.ns.run(cmd, args, timeoutMs);

async function connect(): Promise<void> {
  const r = await sb.laptop.rdbg(['connect', '--manager', sb.laptop.managerAddress]);
  if (r.code !== 0) throw new Error(`connect failed: ${r.stderr}\n${r.stdout}`);
}

/** The three kinds of resolver, and TCP, each for a name outside the cluster: answer and time. */
async function resolveOutside(t: Test, when: string): Promise<void> {
  const checks: [string, string, string[], Record<string, string>?][] = [
    ['glibc (getent hosts)', 'getent', ['hosts', 'www.example.test']],
    ['dig over UDP', 'dig', ['+short', 'www.example.test', 'A']],
    ['dig over TCP', 'dig', ['+tcp', '+short', 'www.example.test', 'A']],
    ['Go (netdns=go)', 'env', ['GODEBUG=netdns=go', goResolver!.bin, 'www.example.test']],
  ];
  for (const [what, cmd, args] of checks) {
    const r = await run(cmd, args);
    t.match(r.stdout, WWW, `${when}: ${what} answers (${r.stdout.trim().split('\n').pop()}) ${r.stderr.trim()}`);
    t.ok(r.ms < FAST_MS, `${when}: ${what} in ${r.ms} ms, not after a timeout`);
  }
}

t.before(async () => {
  goResolver = buildGoResolver();
  sb = await Sandbox.create();
  sb.laptop.ns.exec('ip', ['route', 'add', 'default', 'via', '198.18.1.1']);
  resolvBefore = readFileSync(resolvPath(), 'utf8');
});
t.teardown(() => {
  try {
    sb?.destroy();
  } finally {
    goResolver?.remove();
  }
});

t.test('with every rdbg process killed, names outside the cluster resolve at once; status says what is left', async (t) => {
  await connect();
  const ours = readFileSync(resolvPath(), 'utf8');
  const first = /^nameserver (\S+)/m.exec(ours)?.[1];
  t.match(first, /^127\./, `resolv.conf names rdbg's resolver first, on a loopback address (${first})`);
  t.match(ours, /^nameserver 127\.0\.0\.53$/m, 'the original nameserver follows it');
  t.match(ours, /^options edns0$/m, 'options unchanged');
  t.match((await run('dig', ['+short', 'echo.default.svc.cluster.local'])).stdout.trim(), '198.19.128.10', 'cluster names resolve while connected');

  t.ok((await killEveryRdbgProcess(sb.laptop.ns)) >= 2, 'the user and root daemons were killed');
  t.same(rdbgPids(sb.laptop.ns), [], 'no rdbg process is left');
  t.equal(readFileSync(resolvPath(), 'utf8'), ours, 'resolv.conf is still rdbg\'s: nothing was left to restore it');
  await resolveOutside(t, 'after kill -9');

  const st = await sb.laptop.rdbg(['status']);
  t.match(st.stdout, /resolv\.conf/, `status names what was left behind: ${st.stdout.trim()}`);
  t.match(st.stdout, /rdbg quit.*rdbg connect|rdbg connect.*rdbg quit/s, 'and says that quit or connect cleans it');
});

t.test('the next connect starts from the original, and quit after a second crash restores it byte for byte', async (t) => {
  await connect();
  const ours = readFileSync(resolvPath(), 'utf8');
  t.equal(ours.match(/^nameserver 127\.0\.0\.53$/gm)?.length, 1, 'the original nameserver once, not ours in front of ours');
  t.equal(ours.match(/^nameserver 127\.0\.83\./gm)?.length, 1, 'one rdbg resolver');
  await killEveryRdbgProcess(sb.laptop.ns);
  await resolveOutside(t, 'after the second kill -9');
  const q = await sb.laptop.rdbg(['quit']);
  t.equal(q.code, 0, q.stderr);
  t.equal(readFileSync(resolvPath(), 'utf8'), resolvBefore, 'resolv.conf restored byte for byte');
  const st = await sb.laptop.rdbg(['status']);
  t.notMatch(st.stdout, /left behind/, `nothing left behind after quit: ${st.stdout.trim()}`);
});
