/**
 * The Kubernetes part of `make bench`, on the local test cluster
 * (test/cluster), everything from its laptop namespace (the bench re-executes
 * itself there), in one run:
 *
 *   kubectl-pf   kubectl port-forward pod/bench-server, client to 127.0.0.1
 *   rdbg-pf      rdbg connect (TUN, data plane over port-forward), client to the pod IP
 *   direct       no rdbg: the pod's /32 routed via the node, which forwards it
 *                (FORWARD rules for that pod only, ahead of the isolation rules)
 *   rdbg-direct  rdbg connect --kubernetes --manager <manager pod IP>:8081: the
 *                session over port-forward, the data plane straight to the pod
 *                IP:8082 (the manager's /32 routed like `direct`, and kept out
 *                of the TUN with --never-proxy: the route pins cover only the
 *                control address and the apiserver)
 *   kubectl-pf-far, rdbg-pf-far   the two port-forward paths again, with the
 *                apiserver BENCH_FAR_DELAY_MS (default 5) away each way: a
 *                laptop and a cluster that are not one machine (see
 *                startDelayRelay; 0 leaves them out). 500 round trips each.
 *
 * Per path: a download (pod -> laptop, byte count checked) and 64-byte
 * ping-pongs on one connection, each after an unmeasured warm-up (32 MiB,
 * 500 round trips); alternating rounds, medians. Plus the time
 * from `rdbg connect` to the first successful request (each round connects
 * anew), and from `rdbg intercept` to the first request diverted to the
 * laptop: with the agent already in, and the first one (injection + rollout).
 *
 * The manager is installed (--image localhost/rdbg:<IMAGE_TAG>) unless one is
 * already in the manager namespace, and uninstalled again if it was not.
 * Everything else it creates (namespace, routes, FORWARD rules, daemons,
 * children) is undone at the end, also on failure or SIGINT/SIGTERM; routes and
 * rules are tagged, so a run killed outright is cleaned up by the next one.
 * Writes bench/results/kube.{md,json}.
 *
 *   node dist/bench/kube.js   (BENCH_ROUNDS=3 BENCH_BULK_MIB=256 BENCH_PINGS=2000
 *                              BENCH_MANAGER_NAMESPACE=rdbg BENCH_IMAGE=...)
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Cluster, readClusterEnv, type ExecResult } from '../test/cluster-tier/cluster-helper';
import { CALLER_SOURCE, DOWNLOAD_PORT, ECHO_PORT, SERVER_SOURCE, download, oneRequest, percentile, pingPong } from './kube-load';
import { Rdbg, Undo, inLaptopNetns, openNodeForward, removeLeftovers, routePod, startDelayRelay, stop } from './kube-env';
import { signedPercent, type BenchRow } from './row';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BULK_BYTES = Number(process.env.BENCH_BULK_MIB ?? 256) * 1024 * 1024;
const PINGS = Number(process.env.BENCH_PINGS ?? 2000);
const MNS = process.env.BENCH_MANAGER_NAMESPACE ?? 'rdbg';
const WARMUP_BYTES = 32 * 1024 * 1024;
const WARMUP_PINGS = 500;
/** One way, laptop <-> apiserver, for the "far" paths (0: none); they ping less, each round trip being that much longer. */
const FAR_DELAY_MS = Number(process.env.BENCH_FAR_DELAY_MS ?? 5);
const FAR_PINGS = 500;
const INJECT_REPS = 2;
const AGENT_IN_REPS = 3;
const TARGET = 'bench-target';

const median = (xs: number[]): number => percentile(xs, 50);
const now = (): number => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function manifests(ns: string, serverImage: string, appImage: string): string {
  const server = {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'bench-server', namespace: ns, labels: { app: 'bench-server' } },
    spec: {
      terminationGracePeriodSeconds: 1,
      containers: [{
        name: 'server', image: serverImage, imagePullPolicy: 'Never', command: ['/usr/bin/node', '-e', SERVER_SOURCE],
        ports: [{ containerPort: ECHO_PORT }, { containerPort: DOWNLOAD_PORT }],
        readinessProbe: { tcpSocket: { port: DOWNLOAD_PORT }, periodSeconds: 1 },
      }],
    },
  };
  const target = {
    apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: TARGET, namespace: ns, labels: { app: TARGET } },
    spec: {
      replicas: 1, selector: { matchLabels: { app: TARGET } },
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
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [server, target, service] });
}

function callerManifest(ns: string, image: string, url: string): string {
  return JSON.stringify({
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'bench-caller', namespace: ns },
    spec: { terminationGracePeriodSeconds: 1, containers: [{ name: 'caller', image, imagePullPolicy: 'Never', command: ['/usr/bin/node', '-e', CALLER_SOURCE], env: [{ name: 'URL', value: url }, { name: 'EVERY_MS', value: '10' }] }] },
  });
}

/** kubectl port-forward to both bench ports; resolves with the local ports once it listens. */
function kubectlForward(c: Cluster, ns: string, undo: Undo, kubeconfig = c.info.ADMIN_KUBECONFIG): Promise<{ echo: number; download: number }> {
  const child = spawn(c.info.KUBECTL, ['--kubeconfig', kubeconfig, '-n', ns, 'port-forward', 'pod/bench-server', `:${ECHO_PORT}`, `:${DOWNLOAD_PORT}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  undo.push('stop kubectl port-forward', () => stop(child));
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kubectl port-forward: not listening after 30 s: ${out}`)), 30_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      const port = (remote: number): number => Number(new RegExp(`Forwarding from 127\\.0\\.0\\.1:(\\d+) -> ${remote}`).exec(out)?.[1]);
      if (port(ECHO_PORT) && port(DOWNLOAD_PORT)) { clearTimeout(timer); resolve({ echo: port(ECHO_PORT), download: port(DOWNLOAD_PORT) }); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`kubectl port-forward exited (${code}): ${out}`)); });
  });
}

/**
 * `rdbg connect ARGS`, timed to the first successful request to host's echo
 * port (polled every 20 ms while connect runs: before the TUN's routes exist
 * the laptop has no route and a try fails at once).
 */
async function connectTimed(rdbg: Rdbg, args: string[], host: string): Promise<{ firstMs: number; cliMs: number }> {
  const t0 = now();
  let cliMs = 0;
  let failure: unknown;
  const cli = rdbg.run(['connect', ...args], true, 120_000).then(() => { cliMs = now() - t0; }, (err: unknown) => { failure = err; });
  for (;;) {
    try {
      await oneRequest(host, ECHO_PORT, 2000);
      break;
    } catch {
      if (failure) throw failure;
      if (now() - t0 > 120_000) throw new Error(`rdbg connect ${args.join(' ')}: no request to ${host}:${ECHO_PORT} succeeded within 120 s`);
      await sleep(20);
    }
  }
  const firstMs = now() - t0;
  await cli;
  if (failure) throw failure;
  return { firstMs, cliMs };
}

/** The laptop end of the intercept: notes when each diverted request arrives. */
class LocalCopy {
  private waiter?: (t: number) => void;
  readonly server = http.createServer((req, res) => {
    const t = now();
    res.end('laptop\n');
    this.waiter?.(t);
    this.waiter = undefined;
  });

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as AddressInfo).port;
  }

  /** Runs `start`: ms from its call to the first diverted request after it, and to its return. */
  async timeTo(start: () => Promise<ExecResult>, timeoutMs = 240_000): Promise<{ firstMs: number; cliMs: number }> {
    const t0 = now();
    const first = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no diverted request within ${timeoutMs} ms`)), timeoutMs);
      this.waiter = (t) => { clearTimeout(timer); resolve(t - t0); };
    });
    const [firstMs, cliMs] = await Promise.all([first, start().then(() => now() - t0)]);
    return { firstMs, cliMs };
  }
}

interface Path {
  name: 'kubectl-pf' | 'rdbg-pf' | 'direct' | 'rdbg-direct' | 'kubectl-pf-far' | 'rdbg-pf-far';
  far?: boolean;
  host: string;
  echo: number;
  download: number;
  enter(): Promise<void>;
  leave(): Promise<void>;
}

async function main(): Promise<void> {
  const info = readClusterEnv();
  inLaptopNetns(info);
  const c = new Cluster(info);
  const undo = new Undo();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stderr.write(`kube bench: ${sig}, cleaning up\n`);
      void undo.run().then(() => process.exit(130));
    });
  }
  const raw: Record<string, number[]> = {};
  const note = (k: string, v: number): void => void (raw[k] ??= []).push(v);
  const log = (s: string): void => void process.stderr.write(`kube bench: ${s}\n`);
  try {
    await removeLeftovers(c);
    const image = process.env.BENCH_IMAGE ?? c.image('rdbg');
    const rdbg = new Rdbg(info.ADMIN_KUBECONFIG);
    undo.push('remove the rdbg home', () => rdbg.remove());
    undo.push('rdbg quit', () => rdbg.run(['quit'], false, 60_000));

    const ns = `bench-kube-${randomBytes(3).toString('hex')}`;
    await c.kubectl(['create', 'namespace', ns]);
    undo.push(`delete namespace ${ns}`, () => c.kubectl(['delete', 'namespace', ns, '--wait=false', '--ignore-not-found']));

    const had = (await c.kubectl(['-n', MNS, 'get', 'deployment', 'rdbg-manager'], { check: false })).code === 0;
    if (had) log(`using the manager already installed in namespace ${MNS} (left installed)`);
    else {
      log(`installing the manager in namespace ${MNS} (${image})`);
      undo.push(`rdbg uninstall --all --namespace ${MNS}`, () => rdbg.run(['uninstall', '--all', '--namespace', MNS, '--agent-namespace', ns], true, 300_000));
      await rdbg.run(['manager', 'install', '--namespace', MNS, '--image', image]);
    }

    await c.apply(ns, manifests(ns, c.image('tcp-echo'), c.image('echo-http')));
    await c.kubectl(['-n', ns, 'wait', '--for=condition=Ready', 'pod/bench-server', '--timeout=120s'], { timeoutMs: 130_000 });
    await c.rollout(ns, TARGET);
    const podIp = (await c.kubectlJson<{ status: { podIP: string } }>(['-n', ns, 'get', 'pod', 'bench-server'])).status.podIP;
    const managers = await c.kubectlJson<{ items: Array<{ status: { podIP?: string; phase: string } }> }>(['-n', MNS, 'get', 'pods', '-l', 'app.kubernetes.io/component=manager']);
    const managerIp = managers.items.find((p) => p.status.phase === 'Running' && p.status.podIP)?.status.podIP;
    if (!managerIp) throw new Error(`no running manager pod in namespace ${MNS}`);
    log(`bench server ${podIp}, manager ${managerIp}`);

    await openNodeForward(c, podIp, undo);
    await openNodeForward(c, managerIp, undo);
    const kubectl = await kubectlForward(c, ns, undo);

    const connectArgs = ['--namespace', ns, '--manager-namespace', MNS];
    // The same two port-forward paths, with the apiserver FAR_DELAY_MS away each way (see startDelayRelay).
    const farPaths = async (): Promise<Path[]> => {
      if (!FAR_DELAY_MS) return [];
      const api = new URL(info.APISERVER_URL);
      const relay = await startDelayRelay({ host: api.hostname, port: Number(api.port || 443) }, FAR_DELAY_MS, undo);
      const admin = readFileSync(info.ADMIN_KUBECONFIG, 'utf8');
      const far = admin.replace(`server: ${info.APISERVER_URL}`, `server: https://127.0.0.1:${relay}`);
      if (far === admin) throw new Error(`${info.ADMIN_KUBECONFIG}: no "server: ${info.APISERVER_URL}" line to point at the delay relay`);
      const rdbgFar = new Rdbg(join(rdbg.home, 'far.kubeconfig'));
      writeFileSync(join(rdbg.home, 'far.kubeconfig'), far, { mode: 0o600 });
      undo.push('remove the far rdbg home', () => rdbgFar.remove());
      undo.push('rdbg quit (far)', () => rdbgFar.run(['quit'], false, 60_000));
      const kubectlFar = await kubectlForward(c, ns, undo, join(rdbg.home, 'far.kubeconfig'));
      log(`the far paths reach the apiserver through a relay that holds each chunk ${FAR_DELAY_MS} ms each way`);
      return [
        { name: 'kubectl-pf-far', far: true, host: '127.0.0.1', echo: kubectlFar.echo, download: kubectlFar.download, enter: async () => {}, leave: async () => {} },
        {
          name: 'rdbg-pf-far', far: true, host: podIp, echo: ECHO_PORT, download: DOWNLOAD_PORT,
          enter: async () => {
            const t = await connectTimed(rdbgFar, connectArgs, podIp);
            note('connect_first_rdbg-pf-far', t.firstMs);
            note('connect_cli_rdbg-pf-far', t.cliMs);
          },
          leave: async () => void (await rdbgFar.run(['quit'])),
        },
      ];
    };
    let unroute: (() => Promise<void>) | undefined;
    const paths: Path[] = [
      { name: 'kubectl-pf', host: '127.0.0.1', echo: kubectl.echo, download: kubectl.download, enter: async () => {}, leave: async () => {} },
      {
        name: 'rdbg-pf', host: podIp, echo: ECHO_PORT, download: DOWNLOAD_PORT,
        enter: async () => {
          const t = await connectTimed(rdbg, connectArgs, podIp);
          note('connect_first_rdbg-pf', t.firstMs);
          note('connect_cli_rdbg-pf', t.cliMs);
        },
        leave: async () => void (await rdbg.run(['quit'])),
      },
      ...(await farPaths()),
      {
        name: 'direct', host: podIp, echo: ECHO_PORT, download: DOWNLOAD_PORT,
        enter: async () => { unroute = await routePod(c, podIp, undo); },
        leave: async () => unroute?.(),
      },
      {
        name: 'rdbg-direct', host: podIp, echo: ECHO_PORT, download: DOWNLOAD_PORT,
        enter: async () => {
          unroute = await routePod(c, managerIp, undo);
          const t = await connectTimed(rdbg, [...connectArgs, '--kubernetes', '--manager', `${managerIp}:8081`, '--never-proxy', `${managerIp}/32`], podIp);
          note('connect_first_rdbg-direct', t.firstMs);
          note('connect_cli_rdbg-direct', t.cliMs);
          const st = JSON.parse((await rdbg.run(['status', '-o', 'json'])).stdout) as { transport?: string };
          if (!st.transport?.includes(`direct at ${managerIp}:8082`)) throw new Error(`rdbg-direct: the session does not use the direct transport: ${st.transport}`);
        },
        leave: async () => {
          await rdbg.run(['quit']);
          await unroute?.();
        },
      },
    ];

    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? paths : [...paths].reverse();
      for (const p of order) {
        log(`round ${r + 1}/${ROUNDS}: ${p.name}`);
        await p.enter();
        try {
          // Unmeasured first: a freshly started daemon runs its first flows while V8 compiles
          // the data path, and a developer's daemon runs for hours. Every path gets the same.
          await download(p.host, p.download, WARMUP_BYTES);
          await pingPong(p.host, p.echo, p.far ? 100 : WARMUP_PINGS, 0);
          note(`bulk_${p.name}`, await download(p.host, p.download, BULK_BYTES));
          const rtt = await pingPong(p.host, p.echo, p.far ? FAR_PINGS : PINGS);
          note(`p50_${p.name}`, percentile(rtt, 50));
          note(`p99_${p.name}`, percentile(rtt, 99));
        } finally {
          await p.leave();
        }
      }
    }

    // Intercepts: a caller pod sends a request with the header every 10 ms through the Service.
    log('intercepts');
    const local = new LocalCopy();
    const localPort = await local.listen();
    undo.push('close the local copy', () => new Promise((r) => local.server.close(r)));
    const clusterIp = (await c.kubectlJson<{ spec: { clusterIP: string } }>(['-n', ns, 'get', 'svc', TARGET])).spec.clusterIP;
    await c.apply(ns, callerManifest(ns, c.image('tcp-echo'), `http://${clusterIp}/`));
    await c.kubectl(['-n', ns, 'wait', '--for=condition=Ready', 'pod/bench-caller', '--timeout=120s'], { timeoutMs: 130_000 });
    await rdbg.run(['connect', ...connectArgs]);
    const intercept = (): Promise<ExecResult> => rdbg.run(['intercept', TARGET, '-n', ns, '--port', `${localPort}:80`, '--header', 'x-dev=bench']);
    for (let i = 0; i < INJECT_REPS; i++) {
      if (i > 0) {
        await rdbg.run(['leave', TARGET, '-n', ns]);
        await rdbg.run(['uninstall', TARGET, '-n', ns]);
        await c.rollout(ns, TARGET);
        await sleep(2000);
      }
      log(`intercept with injection ${i + 1}/${INJECT_REPS}`);
      const t = await local.timeTo(intercept);
      note('intercept_inject', t.firstMs);
      note('intercept_inject_cli', t.cliMs);
    }
    for (let i = 0; i < AGENT_IN_REPS; i++) {
      await rdbg.run(['leave', TARGET, '-n', ns]);
      await sleep(2000); // requests diverted before the leave are done by now
      log(`intercept, agent in ${i + 1}/${AGENT_IN_REPS}`);
      const t = await local.timeTo(intercept);
      note('intercept_agent_in', t.firstMs);
      note('intercept_agent_in_cli', t.cliMs);
    }
    await rdbg.run(['leave', TARGET, '-n', ns]);
    await rdbg.run(['quit']);
  } finally {
    await undo.run();
  }

  const m = (k: string): number => median(raw[k]);
  const pct = (a: number, b: number): string => `${Math.round((a / b) * 100)}%`;
  const extra = (a: number, b: number): string => `${signedPercent(a / b)} (${a >= b ? '+' : ''}${Math.round(a - b)} us)`;
  const mib = BULK_BYTES >> 20;
  const rows: BenchRow[] = [];
  const far = `apiserver ${FAR_DELAY_MS} ms each way`;
  const compared = [
    ['rdbg-pf', 'kubectl-pf', 'rdbg port-forward', 'kubectl port-forward'],
    ['rdbg-direct', 'direct', 'rdbg direct transport', 'direct pod access'],
    ...(raw['p50_rdbg-pf-far'] ? [['rdbg-pf-far', 'kubectl-pf-far', 'rdbg port-forward', `kubectl port-forward, ${far}`] as const] : []),
  ] as const;
  for (const [path, ref, label, refLabel] of compared) {
    const pf = path !== 'rdbg-direct';
    rows.push({ metric: `bulk download, ${mib} MiB (MB/s)`, path: `${label} vs ${refLabel}`, value: m(`bulk_${path}`), reference: m(`bulk_${ref}`), vs: pct(m(`bulk_${path}`), m(`bulk_${ref}`)), goal: pf ? '>= 90%' : '>= 20%', pass: m(`bulk_${path}`) >= (pf ? 0.9 : 0.2) * m(`bulk_${ref}`) });
    rows.push({ metric: '64-byte round trip, median (us)', path: `${label} vs ${refLabel}`, value: m(`p50_${path}`), reference: m(`p50_${ref}`), vs: extra(m(`p50_${path}`), m(`p50_${ref}`)), goal: pf ? '<= +10%' : '< +200 us', pass: pf ? m(`p50_${path}`) <= 1.1 * m(`p50_${ref}`) : m(`p50_${path}`) - m(`p50_${ref}`) < 200 });
    rows.push({ metric: '64-byte round trip, p99 (us)', path: `${label} vs ${refLabel}`, value: m(`p99_${path}`), reference: m(`p99_${ref}`), vs: extra(m(`p99_${path}`), m(`p99_${ref}`)), goal: pf ? '<= +10%' : 'report', pass: pf ? m(`p99_${path}`) <= 1.1 * m(`p99_${ref}`) : true });
  }
  for (const [path, label] of [['rdbg-pf', 'rdbg port-forward'], ['rdbg-direct', 'rdbg direct transport'], ...(raw['connect_first_rdbg-pf-far'] ? [['rdbg-pf-far', `rdbg port-forward, ${far}`] as const] : [])] as const) {
    rows.push({ metric: 'rdbg connect -> first successful request (ms)', path: label, value: m(`connect_first_${path}`), reference: 0, vs: `connect returned at ${Math.round(m(`connect_cli_${path}`))} ms`, goal: 'report', pass: true });
  }
  rows.push({ metric: 'rdbg intercept -> first diverted request, agent already in (ms)', path: 'rdbg port-forward', value: m('intercept_agent_in'), reference: 0, vs: `each: ${raw.intercept_agent_in.map(Math.round).join(', ')}; the CLI returned at ${Math.round(m('intercept_agent_in_cli'))}`, goal: 'report', pass: true });
  rows.push({ metric: 'first rdbg intercept -> first diverted request, with injection and rollout (ms)', path: 'rdbg port-forward', value: m('intercept_inject'), reference: 0, vs: `each: ${raw.intercept_inject.map(Math.round).join(', ')}; the CLI returned at ${Math.round(m('intercept_inject_cli'))}`, goal: 'report', pass: true });

  const fmt = (n: number): string => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
  const table = [
    '| metric | path | rdbg | reference | rdbg vs reference | goal | met |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.metric} | ${r.path} | ${fmt(r.value)} | ${r.reference ? fmt(r.reference) : '-'} | ${r.vs} | ${r.goal} | ${r.pass ? 'yes' : 'NO'} |`),
  ].join('\n');
  const notes = `Medians of ${ROUNDS} alternating rounds (${mib} MiB downloads, ${PINGS} round trips each); rdbg connects anew each round, and every path is warmed up first (a 32 MiB download and 500 round trips, unmeasured; 100 on the far paths, which measure ${FAR_PINGS}). Intercept times: a caller pod sends a request with the header through the Service every 10 ms.`;
  process.stdout.write(`\n${table}\n\n${notes}\nraw: ${JSON.stringify(raw)}\n`);
  const dir = join(__dirname, '../../bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'kube.json'), JSON.stringify({ date: new Date().toISOString(), rounds: ROUNDS, bulkBytes: BULK_BYTES, pings: PINGS, rows, raw }, null, 2) + '\n');
  writeFileSync(join(dir, 'kube.md'), `${table}\n\n${notes}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`kube bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
