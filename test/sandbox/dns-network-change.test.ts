import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { apply, parseResolvConf, restore } from '../../daemon/root/dns/resolv-conf';
import { CLUSTER_SEARCH, DNS, DnsSandbox } from './dns-fixture';

// The laptop moves to another network while connected: its DHCP client
// rewrites resolv.conf. rdbg adopts the new file as the original, forwards to
// the new resolver, stays first for cluster names, and restores the new file.

let sb: DnsSandbox;
let resolver: ChildProcess | undefined;

t.before(async () => {
  sb = await DnsSandbox.create();
});
t.teardown(async () => {
  try {
    if (resolver && resolver.exitCode === null) await sb.stopResolver(resolver);
    if (sb) restore(sb.journal);
  } finally {
    sb?.destroy();
  }
});

const short = async (...args: string[]): Promise<string[]> =>
  (await sb.laptop.run('dig', ['+time=3', '+tries=1', '+short', ...args], 20_000)).stdout.trim().split('\n').filter(Boolean);

t.test('resolv.conf rewritten by someone else: adopted, upstreams follow, the newest original restored', async (t) => {
  const { upstreams } = apply(sb.resolvConfPath, { nameserver: DNS.rdbg, search: CLUSTER_SEARCH }, sb.journal);
  const r = await sb.startResolver([DNS.rdbg], upstreams, true);
  resolver = r.proc;
  t.same(await short('www.example.test'), [DNS.www]);

  const NEXT = `# new network\nnameserver ${DNS.nextNetwork}\nsearch hotel.test\n`;
  writeFileSync(sb.resolvConfPath, NEXT);
  let ours = false;
  for (let i = 0; i < 50 && !ours; i++) {
    await new Promise((r2) => setTimeout(r2, 100));
    ours = parseResolvConf(sb.readResolvConf()).nameservers[0] === DNS.rdbg;
  }
  t.ok(ours, 'rdbg is first again');
  t.same(parseResolvConf(sb.readResolvConf()).search, [...CLUSTER_SEARCH, 'hotel.test']);
  t.same(await short('www2.example.test'), [DNS.www2], 'the new network\'s names, through rdbg');
  t.same(await short(`@${DNS.rdbg}`, 'www2.example.test'), [DNS.www2]);
  t.same(await short('+search', 'echo'), [DNS.echo], 'cluster names still resolve');

  await sb.stopResolver(resolver);
  t.same(restore(sb.journal), [{ path: sb.resolvConfPath, restored: true }]);
  t.equal(sb.readResolvConf(), NEXT, 'the new network\'s file comes back, byte for byte');
});
