/**
 * The pod's files on the laptop (`rdbg intercept --mount`), on the local
 * cluster, each measured BENCH_FILES_REPS times (default 5), median:
 *
 *   mount       `intercept --mount DIR` minus the same `intercept` without
 *               it (agent already in): what the mount adds to the switch
 *   read_64mib  `cat DIR/data/big > /dev/null` of a 64 MiB file in the pod's
 *               emptyDir, cold (a fresh mount each time)
 *   walk_1000   `find DIR/data/small -type f | xargs cat` over 1,000 files
 *               of 1 KiB, cold
 *
 * References, in the same run: `kubectl exec POD -- cat` of the same file,
 * and `kubectl exec POD -- tar c` of the same 1,000 files unpacked on the
 * laptop (what `kubectl cp` does): the Kubernetes way to get a pod's files.
 * The laptop runs in the laptop network namespace and the host's mount
 * namespace (nsenter --net), connected with --socks. Writes
 * bench/results/files.{md,json}.
 *
 *   node dist/bench/files.js   (BENCH_FILES_REPS=5)
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, exec, readClusterEnv, repoRoot } from '../test/cluster-tier/cluster-helper';
import { percentile } from './kube-load';
import { markdownTable, type BenchRow } from './row';

const REPS = Number(process.env.BENCH_FILES_REPS ?? 5);
const NS = 'rdbg-bench-files';
const now = (): number => Number(process.hrtime.bigint()) / 1e6;

// The app writes its files at start: a 64 MiB file and 1,000 of 1 KiB in its emptyDir, then serves HTTP.
const APP = `
const fs = require('node:fs'), crypto = require('node:crypto');
fs.mkdirSync('/data/small', { recursive: true });
const big = fs.openSync('/data/big', 'w');
for (let i = 0; i < 64; i++) fs.writeSync(big, crypto.randomBytes(1 << 20));
fs.closeSync(big);
for (let i = 0; i < 1000; i++) fs.writeFileSync('/data/small/f' + i, crypto.randomBytes(1024));
fs.writeFileSync('/data/ready', 'yes');
require('/app/echo-http.js');
`;

async function main(): Promise<void> {
  const c = new Cluster(readClusterEnv());
  const home = mkdtempSync(join(tmpdir(), 'rdbg-bench-files-'));
  const dir = join(home, 'pod');
  const env = { ...process.env, KUBECONFIG: c.info.ADMIN_KUBECONFIG, RDBG_HOME: home };
  const rdbg = (args: string[], check = true) =>
    exec('nsenter', [`--net=/run/netns/${c.info.LAPTOP_NS}`, join(repoRoot(), 'dist/bin/rdbg.js'), ...args], { env, check, timeoutMs: 300_000 });
  const sh = (script: string) => exec('sh', ['-c', script], { timeoutMs: 300_000 });
  const log = (m: string): void => void process.stderr.write(`files bench: ${m}\n`);
  try {
    await c.kubectl(['delete', 'namespace', NS, '--ignore-not-found', '--wait=true'], { check: false, timeoutMs: 120_000 });
    await c.kubectl(['create', 'namespace', NS]);
    if ((await c.kubectl(['-n', 'rdbg', 'get', 'deploy', 'rdbg-manager'], { check: false })).code !== 0) await rdbg(['manager', 'install', '--image', c.image('rdbg')]);
    const deploy = {
      apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'files', labels: { app: 'files' } },
      spec: {
        replicas: 1, selector: { matchLabels: { app: 'files' } },
        template: {
          metadata: { labels: { app: 'files' } },
          spec: {
            terminationGracePeriodSeconds: 1,
            securityContext: { runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000 },
            volumes: [{ name: 'data', emptyDir: {} }],
            containers: [{
              name: 'files', image: c.image('echo-http'), imagePullPolicy: 'Never', command: ['/usr/bin/node', '-e', APP],
              env: [{ name: 'PORT', value: '8080' }, { name: 'NAME', value: 'files' }],
              ports: [{ name: 'http', containerPort: 8080 }],
              volumeMounts: [{ name: 'data', mountPath: '/data' }],
              readinessProbe: { exec: { command: ['cat', '/data/ready'] }, periodSeconds: 1 },
            }],
          },
        },
      },
    };
    const svc = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'files' }, spec: { selector: { app: 'files' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } };
    await c.apply(NS, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [deploy, svc] }));
    await c.rollout(NS, 'files', 300);
    await rdbg(['connect', '--socks', '1089', '-n', NS]);
    // The agent goes in once (a rollout); the app writes its files again in the new pod.
    await rdbg(['intercept', 'files', '--port', '9100:80', '--header', 'x-bench=files']);
    await rdbg(['leave', 'files']);
    await c.rollout(NS, 'files', 300);
    const pod = (await c.kubectlJson<{ items: { metadata: { name: string; deletionTimestamp?: string } }[] }>(['-n', NS, 'get', 'pods', '-l', 'app=files'])).items.find((p) => !p.metadata.deletionTimestamp)!.metadata.name;

    const raw: Record<string, number[]> = { intercept: [], intercept_mount: [], read_64mib: [], walk_1000: [], exec_cat: [], exec_tar: [] };
    const kubectl = `${c.info.KUBECTL} --kubeconfig ${c.info.ADMIN_KUBECONFIG} -n ${NS}`;
    const unpack = join(home, 'tar');
    for (let i = 0; i < REPS; i++) {
      log(`round ${i + 1}/${REPS}`);
      let t0 = now();
      await rdbg(['intercept', 'files', '--port', '9100:80', '--header', 'x-bench=files']);
      raw.intercept.push(now() - t0);
      await rdbg(['leave', 'files']);
      t0 = now();
      await rdbg(['intercept', 'files', '--port', '9100:80', '--header', 'x-bench=files', '--mount', dir]);
      raw.intercept_mount.push(now() - t0);
      t0 = now();
      await sh(`cat ${dir}/data/big > /dev/null`);
      raw.read_64mib.push(now() - t0);
      t0 = now();
      await sh(`find ${dir}/data/small -type f | xargs cat > /dev/null`);
      raw.walk_1000.push(now() - t0);
      await rdbg(['leave', 'files']);
      t0 = now();
      await sh(`ip netns exec ${c.info.LAPTOP_NS} ${kubectl} exec ${pod} -c files -- cat /data/big > /dev/null`);
      raw.exec_cat.push(now() - t0);
      rmSync(unpack, { recursive: true, force: true });
      mkdirSync(unpack);
      t0 = now();
      await sh(`ip netns exec ${c.info.LAPTOP_NS} ${kubectl} exec ${pod} -c files -- tar cf - -C /data small | tar xf - -C ${unpack}`);
      raw.exec_tar.push(now() - t0);
      const got = readFileSync(join(unpack, 'small/f0')).length;
      if (got !== 1024) throw new Error(`kubectl exec tar: f0 has ${got} bytes`);
    }
    await rdbg(['quit']);
    const p50 = (k: string): number => percentile(raw[k], 50);
    const mountMs = p50('intercept_mount') - p50('intercept');
    const mib = (ms: number): number => 64 / (ms / 1000);
    const rows: BenchRow[] = [
      { metric: 'time the mount adds to an intercept (ms)', path: 'rdbg --mount', value: mountMs, reference: p50('intercept'), vs: `intercept alone ${p50('intercept').toFixed(0)} ms`, goal: '<= 1000', pass: mountMs <= 1000 },
      { metric: 'read 64 MiB through the mount (MiB/s)', path: 'rdbg --mount', value: mib(p50('read_64mib')), reference: mib(p50('exec_cat')), vs: `${(p50('exec_cat') / p50('read_64mib')).toFixed(2)}x kubectl exec cat`, goal: '>= kubectl exec cat', pass: p50('read_64mib') <= p50('exec_cat') },
      { metric: 'walk and read 1,000 files of 1 KiB (ms)', path: 'rdbg --mount', value: p50('walk_1000'), reference: p50('exec_tar'), vs: `${(p50('exec_tar') / p50('walk_1000')).toFixed(2)}x kubectl exec tar (kubectl cp)`, goal: '<= 2x kubectl exec tar', pass: p50('walk_1000') <= 2 * p50('exec_tar') },
    ];
    const table = markdownTable(rows, 'kubectl');
    const notes = `${REPS} rounds, median; each read on a fresh mount (cold). The pod is on the local cluster; the laptop reaches the manager through the apiserver's port-forward.`;
    process.stdout.write(`\n${table}\n\n${notes}\nraw: ${JSON.stringify(raw)}\n`);
    const out = join(__dirname, '../../bench/results');
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'files.json'), JSON.stringify({ date: new Date().toISOString(), reps: REPS, rows, raw }, null, 2) + '\n');
    writeFileSync(join(out, 'files.md'), `${table}\n\n${notes}\n`);
  } finally {
    await rdbg(['quit'], false).catch(() => undefined);
    await exec('fusermount3', ['-u', '-z', dir], { check: false }).catch(() => undefined);
    await c.kubectl(['delete', 'namespace', NS, '--ignore-not-found', '--wait=false'], { check: false });
    rmSync(home, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`files bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
