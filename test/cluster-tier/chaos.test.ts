// Chaos on the local cluster, under a steady load from the laptop (curl to a
// Service, curl with an intercept's header that comes back to the laptop,
// redis-cli to a Redis pod): the manager pod deleted, the apiserver, the
// kubelet and containerd restarted, the laptop's link down 30 s, the user
// daemon paused 60 s (RDBG_CHAOS_LONG=1: also 10 min, a laptop asleep), the
// manager paused 20 s. After each: every kind of request works again by
// itself, none fails for 15 s after that, the intercept is back on one
// session, and `rdbg list` and `rdbg status` agree. The failures during each
// event and the recovery times are printed as a table (and written to
// $RDBG_CHAOS_REPORT when set). RDBG_CHAOS_ONLY=REGEX runs the events whose
// names match.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cluster, exec, repoRoot, sampleApp, waitFor, type Cluster, type ExecResult } from './cluster-helper';
import { MANAGER_SELECTOR } from '../../src/kube/manifests';

const RDBG = (): string => join(repoRoot(), 'dist', 'bin', 'rdbg.js');
const MNS = 'rdbg';
const SETTLE_MS = 15_000;
const RECOVER_MS = 120_000;

interface Probe {
  at: number;
  kind: string;
  ok: boolean;
  detail: string;
}

interface Row {
  event: string;
  failed: number;
  recoveryMs: number;
  session: string;
}

/** The load running in the laptop namespace; its lines parsed as they come. */
function startLoad(c: Cluster, host: string, redis: string): { probes: Probe[]; stop: () => void } {
  const probes: Probe[] = [];
  const child = spawn('ip', ['netns', 'exec', c.info.LAPTOP_NS, 'bash', join(repoRoot(), 'test', 'cluster-tier', 'chaos-load.sh'), host, 'x-dev: chaos', redis, '1800'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let buf = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const [at, kind, ok, ...rest] = buf.slice(0, i).split(' ');
      buf = buf.slice(i + 1);
      probes.push({ at: Number(at), kind, ok: ok === 'ok', detail: rest.join(' ') });
    }
  });
  return { probes, stop: () => void child.kill('SIGKILL') };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('chaos: rdbg keeps working through what real clusters and laptops do', async (t) => {
  const c = await cluster();
  const home = mkdtempSync(join(tmpdir(), 'rdbg-chaos-'));
  const rdbg = (args: string[], check = true): Promise<ExecResult> =>
    c.laptop(RDBG(), [...args], { env: { ...process.env, KUBECONFIG: c.info.ADMIN_KUBECONFIG, RDBG_HOME: home }, check, timeoutMs: 300_000 });
  t.teardown(async () => {
    await rdbg(['quit'], false);
    await rdbg(['uninstall', '--all'], false);
    if (!process.env.RDBG_KEEP_LOGS) rmSync(home, { recursive: true, force: true });
  });
  await rdbg(['manager', 'install', '--image', c.image('rdbg')]);
  const ns = await c.namespace(t, 'chaos');
  const echo = JSON.parse(
    // two replicas, so that a restart of one thing never leaves the Service empty
    sampleApp({ name: 'echo', image: c.image('echo-http'), port: 8080, servicePort: 80, replicas: 2, protocolName: 'http' }).split('\n---\n')[0],
  ) as object;
  const echoSvc = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'echo' }, spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } };
  const redis = {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'redis', labels: { app: 'redis' } },
    spec: { containers: [{ name: 'redis', image: `localhost/redis:${c.info.IMAGE_TAG}`, imagePullPolicy: 'Never', ports: [{ containerPort: 6379 }] }] },
  };
  const redisSvc = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'redis' }, spec: { selector: { app: 'redis' }, ports: [{ port: 6379, targetPort: 6379 }] } };
  await c.apply(ns, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [echo, echoSvc, redis, redisSvc] }));
  await c.rollout(ns, 'echo');
  await c.kubectl(['-n', ns, 'wait', '--for=condition=Ready', 'pod/redis', '--timeout=120s']);

  const conn = await rdbg(['connect', '--namespace', ns]);
  t.match(conn.stdout, /Connected to traffic manager/);
  c.laptopSpawn(t, 'env', ['NAME=echo-on-laptop', 'PORT=9191', 'node', join(repoRoot(), 'test', 'cluster', 'apps', 'echo-http.js')]);
  await waitFor('local copy listening', async () => (await c.laptop('curl', ['-s', 'http://127.0.0.1:9191/healthz'], { check: false })).stdout === 'ok\n', 10_000);
  const i = await rdbg(['intercept', 'echo', '--port', '9191:80', '--header', 'x-dev=chaos']);
  t.match(i.stdout, /Intercepting port 8080 of echo/, i.stdout + i.stderr);

  const load = startLoad(c, `echo.${ns}`, `redis.${ns}`);
  t.teardown(load.stop);
  const status = async (): Promise<{ state: string; session_id: string; intercepts: number; pid: number; reconnects: number }> => JSON.parse((await rdbg(['status', '-o', 'json'])).stdout);
  const allOkSince = (from: number): boolean => {
    const kinds = new Set(load.probes.filter((p) => p.at >= from && p.ok).map((p) => p.kind));
    return kinds.size === 3;
  };
  await waitFor('the load succeeds before any event', async () => allOkSince(Date.now() - 1500), 60_000, 500);

  const rows: Row[] = [];
  /** The intercept as the manager has it: ACTIVE and held by the agents of both echo replicas. */
  const bothAgents = async (): Promise<boolean> => {
    try {
      const l = JSON.parse((await rdbg(['list', '-o', 'json'], false)).stdout) as { state: string; agents?: number }[];
      return l.length === 1 && l[0].state === 'ACTIVE' && (l[0].agents ?? 0) >= 2;
    } catch {
      return false;
    }
  };
  /** Runs one event; then waits for every kind of request to succeed, and for 15 s without a failure. */
  const only = process.env.RDBG_CHAOS_ONLY ? new RegExp(process.env.RDBG_CHAOS_ONLY) : undefined;
  const event = async (name: string, run: () => Promise<void>, sessionKept: boolean): Promise<void> => {
    if (only && !only.test(name)) return;
    await t.test(name, async (t) => {
      const before = await status();
      const t0 = Date.now();
      await run();
      const t1 = Date.now();
      let recoveredAt = 0;
      await waitFor(`every kind of request to work after: ${name}`, async () => {
        // recovered: after the last failure, each kind has succeeded, and the intercept is ACTIVE on both
        // replicas' agents (a request that happens to reach the one agent already back says nothing of the other)
        const last = Math.max(t1, ...load.probes.filter((p) => p.at >= t0 && !p.ok).map((p) => p.at));
        if (!allOkSince(last + 1)) {
          // thrown, so that a timeout says which kinds still fail and how
          const failing = ['plain', 'intercepted', 'redis'].map((k) => [k, load.probes.filter((p) => p.kind === k).at(-1)] as const)
            .filter(([, p]) => !p?.ok).map(([k, p]) => `${k}: ${p?.detail ?? 'no request yet'}`);
          throw new Error(failing.length ? `still failing: ${failing.join('; ')}` : 'not every kind has succeeded since the last failure');
        }
        if (!(await bothAgents())) throw new Error(`the intercept is not ACTIVE on both agents: ${(await rdbg(['list', '-o', 'json'], false)).stdout.replace(/\s+/g, ' ')}`);
        const back = Date.now();
        recoveredAt = Math.max(back, ...['plain', 'intercepted', 'redis'].map((k) => load.probes.find((p) => p.at > last && p.kind === k && p.ok)!.at));
        return true;
      }, RECOVER_MS, 250);
      await sleep(SETTLE_MS);
      const after = load.probes.filter((p) => p.at > recoveredAt);
      const failedAfter = after.filter((p) => !p.ok);
      t.same(failedAfter.map((p) => `${p.kind}: ${p.detail}`), [], `no request failed in the ${SETTLE_MS / 1000} s after recovery (${after.length} requests)`);
      const failed = load.probes.filter((p) => p.at >= t0 && p.at <= recoveredAt && !p.ok);
      const st = await status();
      t.equal(st.state, 'CONNECTED');
      const all = JSON.parse((await rdbg(['list', '--all', '-o', 'json'])).stdout) as { session_id: string; state: string; spec: { workload: string } }[];
      const mine = all.filter((x) => x.spec.workload === 'echo');
      t.equal(mine.length, 1, 'one intercept in the manager: no duplicate session holds another');
      t.equal(mine[0]?.session_id, st.session_id, 'held by the current session');
      t.equal(mine[0]?.state, 'ACTIVE');
      const listed = JSON.parse((await rdbg(['list', '-o', 'json'])).stdout) as unknown[];
      t.equal(st.intercepts, listed.length, 'rdbg status counts what rdbg list shows');
      if (sessionKept) t.equal(st.session_id, before.session_id, 'the session was resumed, not replaced');
      else t.ok(st.reconnects - before.reconnects <= 2, `reconnects: ${st.reconnects - before.reconnects}`);
      const row = { event: name, failed: failed.length, recoveryMs: Math.max(0, recoveredAt - t1), session: st.session_id === before.session_id ? 'resumed' : 'new' };
      t.comment(`${name}: ${row.failed} failed requests during the event, recovered ${row.recoveryMs} ms after it ended (session ${row.session})`);
      for (const k of new Set(failed.map((p) => p.kind))) {
        const f = failed.filter((p) => p.kind === k);
        t.comment(`  ${k}: ${f.length} failed, ${f[0].at - t0}..${f[f.length - 1].at - t0} ms after the event began; first: ${f[0].detail}; last: ${f[f.length - 1].detail}`);
      }
      rows.push(row);
    });
  };

  const managerPid = async (): Promise<number> => {
    const pod = await c.kubectlJson<{ items: { status: { containerStatuses?: { containerID: string }[] } }[] }>(['-n', MNS, 'get', 'pods', '-l', MANAGER_SELECTOR, '--field-selector=status.phase=Running']);
    const id = pod.items[0]?.status.containerStatuses?.[0]?.containerID.replace(/^containerd:\/\//, '');
    if (!id) throw new Error('no running manager container');
    const tasks = await exec('ctr', ['--address', c.info.CONTAINERD_SOCK, '-n', 'k8s.io', 'task', 'ls']);
    const line = tasks.stdout.split('\n').find((l) => l.startsWith(id));
    if (!line) throw new Error(`no task for the manager container ${id}`);
    return Number(line.split(/\s+/)[1]);
  };
  const restart = (what: string, downS = 0) => async (): Promise<void> => void (await exec('bash', [join(repoRoot(), 'test', 'cluster', 'restart.sh'), what, String(downS)]));
  const pause = (pid: () => Promise<number>, ms: number) => async (): Promise<void> => {
    const p = await pid();
    process.kill(p, 'SIGSTOP');
    await sleep(ms);
    process.kill(p, 'SIGCONT');
  };
  const userDaemon = async (): Promise<number> => (await status()).pid;

  // The event ends when the old pod is gone (kubectl delete waits for that), not when the delete is accepted.
  await event('the manager pod deleted during traffic', async () => {
    await c.kubectl(['-n', MNS, 'delete', 'pod', '-l', MANAGER_SELECTOR, '--timeout=120s'], { timeoutMs: 130_000 });
  }, false);
  await event('the manager paused 20 s', pause(managerPid, 20_000), true);
  await event('the apiserver restarted (down 5 s)', restart('kube-apiserver', 5), true);
  // A restarted kubelet reports its pods not ready until their probes pass again, and the Services lose
  // their endpoints meanwhile (refused, no route to host, for in-cluster clients too): the event ends
  // when the kubelet has reported every pod of the namespace ready again.
  await event('the kubelet restarted', async () => {
    const since = Date.now() - 1000; // lastTransitionTime has whole seconds
    await restart('kubelet')();
    await waitFor('the pods ready again after the kubelet restart', async () => {
      const pods = await c.kubectlJson<{ items: { status: { conditions?: { type: string; status: string; lastTransitionTime?: string }[] } }[] }>(['-n', ns, 'get', 'pods']);
      return pods.items.every((p) => {
        const ready = p.status.conditions?.find((x) => x.type === 'Ready');
        return ready?.status === 'True' && Date.parse(ready.lastTransitionTime ?? '') >= since;
      });
    }, 30_000, 250).catch(() => undefined); // a kubelet that kept its pods ready: nothing to wait for
  }, true);
  await event('containerd restarted', restart('containerd'), true);
  await event('the laptop\'s link down 30 s', async () => {
    await c.laptop('ip', ['link', 'set', 'cluster0', 'down']);
    await sleep(30_000);
    await c.laptop('ip', ['link', 'set', 'cluster0', 'up']);
  }, false);
  await event('the user daemon paused 60 s (a laptop asleep)', pause(userDaemon, 60_000), false);
  if (process.env.RDBG_CHAOS_LONG) await event('the user daemon paused 10 min (a laptop asleep)', pause(userDaemon, 600_000), false);

  if (process.env.RDBG_KEEP_LOGS) {
    // the pods' logs go with the namespace: keep them beside the daemons' logs
    for (const [file, args] of [['agents.log', ['-n', ns, 'logs', '-l', 'app=echo', '--all-containers', '--prefix', '--timestamps', '--tail=-1']], ['manager.log', ['-n', MNS, 'logs', '-l', MANAGER_SELECTOR, '--all-containers', '--prefix', '--timestamps', '--tail=-1']]] as const) {
      writeFileSync(join(home, file), (await c.kubectl([...args], { check: false })).stdout);
    }
  }
  const table = ['| event | failed requests during it | recovery after it ended (ms) | session |', '|---|---|---|---|',
    ...rows.map((r) => `| ${r.event} | ${r.failed} | ${r.recoveryMs} | ${r.session} |`)].join('\n');
  t.comment(`\n${table}`);
  if (process.env.RDBG_CHAOS_REPORT) writeFileSync(process.env.RDBG_CHAOS_REPORT, `${table}\n`);
});
