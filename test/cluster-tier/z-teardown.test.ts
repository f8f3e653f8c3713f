// `make cluster-down` (down.sh) leaves nothing behind: no process, mount,
// cgroup, network namespace or iptables rule, also after a cluster-up that
// failed half-way. Runs last (file name) and leaves the cluster down.
import t from 'tap';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { resolve } from 'node:path';
import { cluster, clusterDir, clusterDown, exec, stateDir } from './cluster-helper';

const CGROUP_ROOT = 'rdbg-cluster';

// what was there before this file ran (other users of the machine may have some)
const before = {
  cniResults: new Set(existsSync('/var/lib/cni/results') ? readdirSync('/var/lib/cni/results') : []),
};

async function leftovers(): Promise<string[]> {
  const found: string[] = [];
  const state = stateDir();
  // processes: anything started with the state dir on its command line or in
  // a network namespace other than the machine's that is named rdbg-*
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd = '';
    try { cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' '); } catch { continue; }
    if (cmd.includes(state) && Number(p) !== process.pid) found.push(`process ${p}: ${cmd.slice(0, 120)}`);
    try {
      if (/containerd-shim/.test(cmd) && readlinkSync(`/proc/${p}/ns/net`) !== readlinkSync('/proc/self/ns/net')) found.push(`shim ${p}`);
    } catch { /* gone */ }
  }
  // mounts
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp && (mp === state || mp.startsWith(`${state}/`) || /\/run\/netns\/rdbg-/.test(mp))) found.push(`mount ${mp}`);
  }
  // cgroups
  for (const h of readdirSync('/sys/fs/cgroup')) {
    if (existsSync(`/sys/fs/cgroup/${h}/${CGROUP_ROOT}`)) found.push(`cgroup /sys/fs/cgroup/${h}/${CGROUP_ROOT}`);
  }
  // namespaces
  const netns = (await exec('ip', ['netns', 'list'])).stdout;
  for (const l of netns.split('\n')) if (/^(rdbg-|cni-)/.test(l)) found.push(`netns ${l}`);
  // iptables of the machine's namespace
  const rules = (await exec('iptables-save', [])).stdout;
  if (/KUBE-|CNI-|RDBG-/.test(rules)) found.push('iptables rules of the cluster in the root namespace');
  // files
  if (existsSync(state)) found.push(`state dir ${state}`);
  if (existsSync('/var/lib/cni/results')) {
    for (const f of readdirSync('/var/lib/cni/results')) if (!before.cniResults.has(f)) found.push(`CNI result ${f}`);
  }
  for (const d of ['/etc/netns/rdbg-node', '/etc/netns/rdbg-laptop']) if (existsSync(d)) found.push(d);
  return found;
}

t.test('cluster-down removes everything', async (t) => {
  const rulesBefore = (await exec('iptables-save', [])).stdout.replace(/^#.*\n/gm, '');
  const c = await cluster();
  // make sure pods (and so overlay, shm and netns mounts) exist
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  t.match(mounts, `${c.info.STATE}/containerd`, 'containerd mounts exist before');
  const down = await clusterDown();
  t.equal(down.code, 0, `down.sh succeeded\n${down.stderr}`);
  t.same(await leftovers(), [], 'nothing left behind');
  const rulesAfter = (await exec('iptables-save', [])).stdout.replace(/^#.*\n/gm, '');
  t.equal(rulesAfter, rulesBefore, 'the root namespace iptables are unchanged');
  const again = await clusterDown();
  t.equal(again.code, 0, 'down.sh is idempotent');
});

t.test('a cluster-up that fails half-way cleans up after itself', async (t) => {
  const r = await exec('bash', [resolve(clusterDir(), 'up.sh')], {
    env: { ...process.env, RDBG_CLUSTER_FAIL_AT: 'after-coredns' }, check: false, timeoutMs: 15 * 60_000,
  });
  t.not(r.code, 0, 'up.sh failed as asked');
  t.match(r.stderr, 'failing on purpose');
  t.same(await leftovers(), [], 'nothing left behind');
});
