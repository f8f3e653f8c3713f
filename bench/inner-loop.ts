/**
 * The developer's inner loop on the local cluster, step by step, each timed
 * BENCH_LOOP_REPS times (default 10) and reported as median and p95:
 *
 *   cli_version / cli_status / cli_list   a fresh CLI process, start to exit
 *   connect         `rdbg connect` (port-forward) -> first successful request
 *   intercept       `rdbg intercept --header`, agent already in -> first
 *                   request a caller pod sends through the Service that
 *                   reaches the laptop
 *   leave           `rdbg leave` -> the last request that still reached the
 *                   laptop (the caller sends one every 10 ms)
 *   restart         the local process stops and listens again on its port ->
 *                   first intercepted request it gets, with no rdbg command
 *   inject          first intercept of a 2-replica Deployment (agent injected,
 *                   pods rolled) -> first diverted request
 *   far_intercept   `intercept` with the apiserver BENCH_FAR_DELAY_MS (default
 *                   20) away each way (bench/kube-env.ts startDelayRelay);
 *                   its extra time over `intercept`, divided by one round
 *                   trip, is the number of sequential apiserver round trips.
 *
 * Runs in the laptop namespace of test/cluster/up.sh's cluster; installs the
 * manager unless one is there, and undoes everything else it changes.
 * Writes bench/results/inner-loop.{md,json}.
 *
 *   node dist/bench/inner-loop.js   (BENCH_LOOP_REPS=10 BENCH_INJECT_REPS=10 BENCH_FAR_DELAY_MS=20)
 */
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Cluster, exec, readClusterEnv } from '../test/cluster-tier/cluster-helper';
import { CALLER_SOURCE, ECHO_PORT, SERVER_SOURCE, oneRequest, percentile } from './kube-load';
import { Rdbg, Undo, inLaptopNetns, openNodeForward, removeLeftovers, startDelayRelay } from './kube-env';
import type { BenchRow } from './row';

const REPS = Number(process.env.BENCH_LOOP_REPS ?? 10);
const INJECT_REPS = Number(process.env.BENCH_INJECT_REPS ?? REPS);
const FAR_DELAY_MS = Number(process.env.BENCH_FAR_DELAY_MS ?? 20);
const MNS = process.env.BENCH_MANAGER_NAMESPACE ?? 'rdbg';
const TARGET = 'loop-target';
const REPLICAS = 2;

const now = (): number => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function manifests(ns: string, serverImage: string, appImage: string, callerUrl: string): string {
  const server = {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'loop-server', namespace: ns },
    spec: {
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'server', image: serverImage, imagePullPolicy: 'Never', command: ['/usr/bin/node', '-e', SERVER_SOURCE], readinessProbe: { tcpSocket: { port: ECHO_PORT }, periodSeconds: 1 } }],
    },
  };
  const target = {
    apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: TARGET, namespace: ns, labels: { app: TARGET } },
    spec: {
      replicas: REPLICAS, selector: { matchLabels: { app: TARGET } },
      template: {
        metadata: { labels: { app: TARGET } },
        spec: {
          terminationGracePeriodSeconds: 1,
          containers: [{
            name: TARGET, image: appImage, imagePullPolicy: 'Never', ports: [{ name: 'http', containerPort: 8080 }],
            env: [{ name: 'PORT', value: '8080' }, { name: 'NAME', value: TARGET }],
            readinessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 1 },
          }],
        },
      },
    },
  };
  const service = { apiVersion: 'v1', kind: 'Service', metadata: { name: TARGET, namespace: ns }, spec: { selector: { app: TARGET }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } };
  const caller = {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'loop-caller', namespace: ns },
    spec: { terminationGracePeriodSeconds: 1, containers: [{ name: 'caller', image: serverImage, imagePullPolicy: 'Never', command: ['/usr/bin/node', '-e', CALLER_SOURCE], env: [{ name: 'URL', value: callerUrl }, { name: 'EVERY_MS', value: '10' }] }] },
  };
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [server, target, service, caller] });
}

/** The laptop's copy of the service: notes when each diverted request arrives; can stop and listen again on its port. */
class LocalCopy {
  private server?: http.Server;
  private waiter?: (t: number) => void;
  last = 0;
  port = 0;

  async listen(): Promise<number> {
    const server = http.createServer((_req, res) => {
      const t = now();
      this.last = t;
      res.end('laptop\n');
      this.waiter?.(t);
      this.waiter = undefined;
    });
    server.keepAliveTimeout = 100;
    await new Promise<void>((r) => server.listen(this.port, '127.0.0.1', r));
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return this.port;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }

  /** Resolves with the time of the next request that arrives (now() clock). */
  next(timeoutMs = 240_000): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no diverted request within ${timeoutMs} ms`)), timeoutMs);
      this.waiter = (t) => {
        clearTimeout(timer);
        resolve(t);
      };
    });
  }
}

async function main(): Promise<void> {
  const info = readClusterEnv();
  inLaptopNetns(info);
  const c = new Cluster(info);
  const undo = new Undo();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stderr.write(`inner-loop bench: ${sig}, cleaning up\n`);
      void undo.run().then(() => process.exit(130));
    });
  }
  const raw: Record<string, number[]> = {};
  const note = (k: string, v: number): void => void (raw[k] ??= []).push(v);
  const log = (s: string): void => void process.stderr.write(`inner-loop bench: ${s}\n`);
  const timed = async (k: string, fn: () => Promise<unknown>): Promise<void> => {
    const t0 = now();
    await fn();
    note(k, now() - t0);
  };
  // Node's own start, the floor of every CLI row. NODE_EXTRA_CA_CERTS makes each Node start parse that
  // bundle (some CI images set it): measured both ways, and the steps timed without it, as on a laptop.
  const nodeStart = async (env: NodeJS.ProcessEnv): Promise<number> => {
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = now();
      await exec(process.execPath, ['-e', '0'], { env });
      times.push(now() - t0);
    }
    return percentile(times, 50);
  };
  const extraCa = process.env.NODE_EXTRA_CA_CERTS;
  const bare = { ...process.env, NODE_EXTRA_CA_CERTS: undefined };
  let startNote = `Node's own start (node -e 0): ${Math.round(await nodeStart(bare))} ms.`;
  if (extraCa) {
    startNote += ` NODE_EXTRA_CA_CERTS (${extraCa}) is set here and makes it ${Math.round(await nodeStart(process.env))} ms; the steps ran without it.`;
    delete process.env.NODE_EXTRA_CA_CERTS;
  }
  try {
    await removeLeftovers(c);
    const image = process.env.BENCH_IMAGE ?? c.image('rdbg');
    const rdbg = new Rdbg(info.ADMIN_KUBECONFIG);
    undo.push('remove the rdbg home', () => rdbg.remove());
    undo.push('rdbg quit', () => rdbg.run(['quit'], false, 60_000));
    const ns = `bench-loop-${randomBytes(3).toString('hex')}`;
    await c.kubectl(['create', 'namespace', ns]);
    undo.push(`delete namespace ${ns}`, () => c.kubectl(['delete', 'namespace', ns, '--wait=false', '--ignore-not-found']));
    const had = (await c.kubectl(['-n', MNS, 'get', 'deployment', 'rdbg-manager'], { check: false })).code === 0;
    if (had) log(`using the manager already installed in namespace ${MNS} (left installed)`);
    else {
      log(`installing the manager in namespace ${MNS} (${image})`);
      undo.push(`rdbg uninstall --all --namespace ${MNS}`, () => rdbg.run(['uninstall', '--all', '--namespace', MNS, '--agent-namespace', ns], true, 300_000));
      await rdbg.run(['manager', 'install', '--namespace', MNS, '--image', image]);
    }
    await c.apply(ns, manifests(ns, c.image('tcp-echo'), c.image('echo-http'), `http://${TARGET}.${ns}/`));
    await c.kubectl(['-n', ns, 'wait', '--for=condition=Ready', 'pod/loop-server', 'pod/loop-caller', '--timeout=120s'], { timeoutMs: 130_000 });
    await c.rollout(ns, TARGET);
    const serverIp = (await c.kubectlJson<{ status: { podIP: string } }>(['-n', ns, 'get', 'pod', 'loop-server'])).status.podIP;
    await openNodeForward(c, serverIp, undo);
    const connectArgs = ['--namespace', ns, '--manager-namespace', MNS];

    // connect -> first successful request, over port-forward.
    for (let i = 0; i < REPS; i++) {
      log(`connect ${i + 1}/${REPS}`);
      const t0 = now();
      let failed: unknown;
      const cli = rdbg.run(['connect', ...connectArgs], true, 120_000).then(() => note('connect_cli', now() - t0), (err: unknown) => (failed = err));
      for (;;) {
        try {
          await oneRequest(serverIp, ECHO_PORT, 2000);
          break;
        } catch {
          if (failed) throw failed;
          if (now() - t0 > 120_000) throw new Error(`no request to ${serverIp}:${ECHO_PORT} succeeded within 120 s of rdbg connect`);
          await sleep(10);
        }
      }
      note('connect', now() - t0);
      await cli;
      if (failed) throw failed;
      if (i < REPS - 1) await rdbg.run(['quit']);
    }

    // A fresh CLI process, start to exit, while connected.
    for (let i = 0; i < REPS; i++) {
      await timed('cli_version', () => rdbg.run(['version']));
      await timed('cli_status', () => rdbg.run(['status']));
      await timed('cli_list', () => rdbg.run(['list']));
    }

    const local = new LocalCopy();
    await local.listen();
    undo.push('close the local copy', () => local.close());
    const intercept = (r: Rdbg): Promise<unknown> => r.run(['intercept', TARGET, '-n', ns, '--port', `${local.port}:80`, '--header', 'x-dev=bench']);
    const leave = (r: Rdbg): Promise<unknown> => r.run(['leave', TARGET, '-n', ns]);
    /** ms from `start` to the first diverted request; notes the CLI's own time as `${k}_cli`. */
    const toFirst = async (k: string, start: () => Promise<unknown>): Promise<void> => {
      const t0 = now();
      const first = local.next();
      await start();
      note(`${k}_cli`, now() - t0);
      note(k, (await first) - t0);
    };

    /** The intercept CLI returns once the first pod's agent has it: the rest of the rollout, old pods gone. */
    const settled = async (withAgent: boolean): Promise<void> => {
      await c.rollout(ns, TARGET);
      for (const t0 = now(); now() - t0 < 120_000; await sleep(200)) {
        const pods = await c.kubectlJson<{ items: { spec: { containers: { name: string }[] } }[] }>(['-n', ns, 'get', 'pods', '-l', `app=${TARGET}`]);
        if (pods.items.length === REPLICAS && pods.items.every((p) => p.spec.containers.some((x) => x.name === 'rdbg-agent') === withAgent)) return;
      }
      throw new Error(`the pods of ${TARGET} did not settle ${withAgent ? 'with' : 'without'} the agent within 120 s`);
    };

    // First intercept with injection: the agent goes in, both replicas roll.
    for (let i = 0; i < INJECT_REPS; i++) {
      if (i > 0) {
        await settled(true);
        await leave(rdbg);
        await rdbg.run(['uninstall', TARGET, '-n', ns]);
        await settled(false);
        await sleep(1000);
      }
      log(`intercept with injection ${i + 1}/${INJECT_REPS}`);
      await toFirst('inject', () => intercept(rdbg));
    }
    await settled(true);
    await leave(rdbg);

    // Intercept (agent in), the local process restarting, and leave, in turns.
    for (let i = 0; i < REPS; i++) {
      log(`intercept, restart, leave ${i + 1}/${REPS}`);
      await sleep(500); // requests diverted before the leave are done by now
      await toFirst('intercept', () => intercept(rdbg));
      await local.close();
      await sleep(300); // a few requests fail meanwhile (502 from the agent)
      const first = local.next();
      await local.listen();
      const listening = now();
      note('restart', (await first) - listening);
      const t0 = now();
      await leave(rdbg);
      note('leave_cli', now() - t0);
      await sleep(300);
      note('leave', Math.max(0, local.last - t0));
    }
    await rdbg.run(['quit']);

    // The same switch with the apiserver far away.
    if (FAR_DELAY_MS > 0) {
      const api = new URL(info.APISERVER_URL);
      const relay = await startDelayRelay({ host: api.hostname, port: Number(api.port || 443) }, FAR_DELAY_MS, undo);
      const admin = readFileSync(info.ADMIN_KUBECONFIG, 'utf8');
      const farConfig = join(rdbg.home, 'far.kubeconfig');
      writeFileSync(farConfig, admin.replace(`server: ${info.APISERVER_URL}`, `server: https://127.0.0.1:${relay}`), { mode: 0o600 });
      const far = new Rdbg(farConfig);
      undo.push('remove the far rdbg home', () => far.remove());
      undo.push('rdbg quit (far)', () => far.run(['quit'], false, 60_000));
      await far.run(['connect', ...connectArgs]);
      for (let i = 0; i < REPS; i++) {
        log(`intercept, apiserver ${FAR_DELAY_MS} ms away ${i + 1}/${REPS}`);
        await toFirst('far_intercept', () => intercept(far));
        await leave(far);
        await sleep(500);
      }
      await far.run(['quit']);
    }
  } finally {
    await undo.run();
  }

  const p50 = (k: string): number => percentile(raw[k] ?? [], 50);
  const p95 = (k: string): number => percentile(raw[k] ?? [], 95);
  const rows: Array<BenchRow & { p95: number }> = [];
  const row = (metric: string, k: string, goal50: number, goal95: number | undefined, vs: string): void => {
    if (!raw[k]) return;
    rows.push({ metric, path: 'rdbg port-forward', value: p50(k), p95: p95(k), reference: 0, vs, goal: `p50 <= ${goal50}${goal95 ? `, p95 <= ${goal95}` : ''}`, pass: p50(k) <= goal50 && (!goal95 || p95(k) <= goal95) });
  };
  const cli = (k: string): string => `the CLI returned at ${Math.round(p50(`${k}_cli`))} ms (p50)`;
  row('intercept, agent already in -> first diverted request (ms)', 'intercept', 100, 200, cli('intercept'));
  row(`first intercept, injection into ${REPLICAS} replicas -> first diverted request (ms)`, 'inject', 2000, undefined, cli('inject'));
  row('leave -> the last request that reached the laptop (ms)', 'leave', 100, undefined, cli('leave'));
  row('connect -> first successful request (ms)', 'connect', 500, undefined, cli('connect'));
  row('the local process listens again -> its first intercepted request (ms)', 'restart', 100, undefined, 'no rdbg command');
  row('`rdbg version`, start to exit (ms)', 'cli_version', 150, undefined, '');
  row('`rdbg status`, start to exit (ms)', 'cli_status', 150, undefined, '');
  row('`rdbg list`, start to exit (ms)', 'cli_list', 150, undefined, '');
  if (raw.far_intercept) {
    const trips = (p50('far_intercept') - p50('intercept')) / (2 * FAR_DELAY_MS);
    rows.push({ metric: `intercept, agent in, apiserver ${FAR_DELAY_MS} ms away each way (ms)`, path: 'rdbg port-forward', value: p50('far_intercept'), p95: p95('far_intercept'), reference: p50('intercept'), vs: `+${Math.round(p50('far_intercept') - p50('intercept'))} ms: ${trips.toFixed(1)} sequential round trips`, goal: '<= 3 round trips', pass: trips <= 3 });
  }
  const fmt = (n: number): string => n.toFixed(0);
  const table = [
    '| step | p50 | p95 | notes | goal | met |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.metric} | ${fmt(r.value)} | ${fmt(r.p95)} | ${r.vs} | ${r.goal} | ${r.pass ? 'yes' : 'NO'} |`),
  ].join('\n');
  const notes = `${REPS} runs of each step (${INJECT_REPS} injections); a caller pod sends a request with the header through the Service every 10 ms, so a step that ends with a request is measured to within 10 ms. ${startNote}`;
  process.stdout.write(`\n${table}\n\n${notes}\nraw: ${JSON.stringify(raw)}\n`);
  const dir = join(__dirname, '../../bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'inner-loop.json'), JSON.stringify({ date: new Date().toISOString(), reps: REPS, rows, raw }, null, 2) + '\n');
  writeFileSync(join(dir, 'inner-loop.md'), `${table}\n\n${notes}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`inner-loop bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
