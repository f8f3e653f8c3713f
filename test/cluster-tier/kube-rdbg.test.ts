// rdbg on the real cluster, as a developer uses it from the laptop namespace:
// the manager installed with `rdbg manager install`, `rdbg connect` through
// the apiserver's port-forward (TUN + DNS), curl/dig/redis-cli by Service
// name, pod IP and cluster IP, header intercepts across 3 replicas, a
// StatefulSet behind a numeric targetPort, RBAC for users and pods, and
// recovery after the manager pod is deleted.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cluster, exec, repoRoot, waitFor, type Cluster, type ExecResult, type TestLike } from './cluster-helper';
import { PROTOCOL, VERSION } from '../../src/core/version';
import { MANAGER_SELECTOR } from '../../src/kube/manifests';
import { claimAnnotation } from '../../src/kube/marks';

const RDBG = (): string => join(repoRoot(), 'dist', 'bin', 'rdbg.js');
const MNS = 'rdbg';

interface Laptop {
  rdbg(args: string[], opts?: { kubeconfig?: string; check?: boolean; timeoutMs?: number; env?: NodeJS.ProcessEnv }): Promise<ExecResult>;
  home: string;
}

function laptop(c: Cluster, t: TestLike, kubeconfig = c.info.ADMIN_KUBECONFIG): Laptop {
  const home = mkdtempSync(join(tmpdir(), 'rdbg-kube-'));
  const env = (kc: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ ...process.env, KUBECONFIG: kc, RDBG_HOME: home, ...extra });
  const l: Laptop = {
    home,
    rdbg: (args, opts = {}) => c.laptop(RDBG(), [...args], { env: env(opts.kubeconfig ?? kubeconfig, opts.env), check: opts.check, timeoutMs: opts.timeoutMs ?? 300_000 }),
  };
  t.teardown(async () => {
    await l.rdbg(['quit'], { check: false });
    if (process.env.RDBG_KEEP_LOGS) return;
    rmSync(home, { recursive: true, force: true });
  });
  return l;
}

function deployment(name: string, replicas: number, port: { name?: string; number: number }, env: Record<string, string> = {}): object {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, labels: { app: name } },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          terminationGracePeriodSeconds: 2,
          containers: [{
            name,
            image: 'IMAGE',
            imagePullPolicy: 'Never',
            ports: [{ ...(port.name ? { name: port.name } : {}), containerPort: port.number }],
            env: [
              ...Object.entries({ PORT: String(port.number), NAME: name, ...env }).map(([n, value]) => ({ name: n, value })),
              { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            ],
            readinessProbe: { httpGet: { path: '/healthz', port: port.name ?? port.number }, periodSeconds: 1 },
          }],
        },
      },
    },
  };
}

function service(name: string, port: number, targetPort: string | number, extra: object = {}): object {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name }, spec: { selector: { app: name }, ports: [{ name: 'http', port, targetPort }], ...extra } };
}

function list(...objs: object[]): string {
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs });
}

/** A request from inside the cluster (a pod of the namespace), as a caller of the service would make it. */
async function fromPod(c: Cluster, ns: string, url: string, headers: Record<string, string> = {}): Promise<{ name: string; pod: string }> {
  const h = Object.entries(headers).map(([k, v]) => `--header=${k}: ${v}`);
  // (busybox wget's -T crashes in these images; kubectl exec is bounded by the helper's timeout)
  const r = await c.execIn(ns, 'deploy/caller', ['wget', '-qO-', ...h, url], { timeoutMs: 20_000 });
  return JSON.parse(r.stdout) as { name: string; pod: string };
}

t.test('rdbg on Kubernetes', async (t) => {
  const c = await cluster();
  const image = c.image('rdbg');
  const admin = laptop(c, t);

  // The manager, installed as an admin would.
  const install = await admin.rdbg(['manager', 'install', '--image', image]);
  t.match(install.stdout + install.stderr, /ready|installed/i, 'install reports the manager ready');
  t.teardown(async () => {
    const u = await admin.rdbg(['uninstall', '--all'], { check: false });
    if (u.code !== 0) t.comment(`uninstall --all: ${u.stderr}`);
  });

  const ns = await c.namespace(t, 'kube-rdbg');
  const echoImg = c.image('echo-http');
  const text = list(
    deployment('echo', 3, { name: 'http', number: 8080 }, { GREETING: 'from-the-cluster', SECRET_ISH: 'pod-env' }),
    service('echo', 80, 'http'),
    deployment('caller', 1, { name: 'http', number: 8080 }),
    {
      apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'store' },
      spec: {
        serviceName: 'store', replicas: 1, selector: { matchLabels: { app: 'store' } },
        template: { metadata: { labels: { app: 'store' } }, spec: { terminationGracePeriodSeconds: 2, containers: [{ name: 'store', image: 'IMAGE', imagePullPolicy: 'Never', env: [{ name: 'PORT', value: '8080' }, { name: 'NAME', value: 'store' }] }] } },
      },
    },
    service('store', 80, 8080),
    {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'redis', labels: { app: 'redis' } },
      spec: { containers: [{ name: 'redis', image: `localhost/redis:${c.info.IMAGE_TAG}`, imagePullPolicy: 'Never', ports: [{ containerPort: 6379 }] }] },
    },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'redis' }, spec: { selector: { app: 'redis' }, ports: [{ port: 6379, targetPort: 6379 }] } },
    {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'slow', labels: { app: 'slow' } },
      spec: { terminationGracePeriodSeconds: 1, containers: [{ name: 'slow', image: c.image('tcp-echo'), imagePullPolicy: 'Never', env: [{ name: 'ANSWER_AFTER_FIN_MS', value: '2000' }] }] },
    },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'slow' }, spec: { selector: { app: 'slow' }, ports: [{ port: 9000, targetPort: 9000 }] } },
  ).replace(/"IMAGE"/g, JSON.stringify(echoImg));
  await c.apply(ns, text);
  for (const d of ['echo', 'caller']) await c.rollout(ns, d);
  await c.kubectl(['-n', ns, 'rollout', 'status', 'statefulset/store', '--timeout=120s']);
  await c.kubectl(['-n', ns, 'wait', '--for=condition=Ready', 'pod/redis', '--timeout=120s']);

  const connect = await admin.rdbg(['connect', '--namespace', ns]);
  t.match(connect.stdout, /Connected to traffic manager .* in context/, connect.stdout);

  await t.test('status shows the Kubernetes transport and the discovered subnets', async (t) => {
    const st = JSON.parse((await admin.rdbg(['status', '-o', 'json'])).stdout);
    t.equal(st.state, 'CONNECTED');
    t.ok(st.kube_context, 'context named');
    t.match(st.transport, /port-forward/);
    t.same(st.cluster.service_subnets, [c.info.SERVICE_CIDR], 'service CIDR discovered by the manager');
    t.ok(st.cluster.pod_subnets.some((s: string) => s === c.info.NODE_POD_CIDR || s === c.info.CLUSTER_CIDR), `pod subnets ${st.cluster.pod_subnets}`);
    t.equal(st.root?.tun_device ? 'tun' : 'none', 'tun', 'TUN device up');
  });

  await t.test('a new service range in the cluster is routed without reconnecting', async (t) => {
    const extra = { apiVersion: 'networking.k8s.io/v1', kind: 'ServiceCIDR', metadata: { name: 'rdbg-test-extra' }, spec: { cidrs: ['10.97.0.0/24'] } };
    await c.kubectl(['apply', '-f', '-'], { input: JSON.stringify(extra) });
    t.teardown(() => c.kubectl(['delete', 'servicecidr', 'rdbg-test-extra', '--ignore-not-found', '--wait=false'], { check: false }));
    const routes = async (): Promise<string[]> => (JSON.parse((await admin.rdbg(['status', '-o', 'json'])).stdout).root?.routes ?? []).map((r: { cidr: string }) => r.cidr);
    t.ok(await waitFor('the new range routed', async () => (await routes()).includes('10.97.0.0/24'), 60_000, 1000), 'routed into the TUN');
    await c.kubectl(['delete', 'servicecidr', 'rdbg-test-extra', '--wait=true', '--timeout=60s']);
    t.ok(await waitFor('the range unrouted', async () => !(await routes()).includes('10.97.0.0/24'), 60_000, 1000), 'and removed when it is gone');
    t.ok((await routes()).includes(c.info.SERVICE_CIDR), 'the original range stays');
  });

  await t.test('curl, dig and redis-cli by name, cluster IP and pod IP', async (t) => {
    for (const host of ['echo', `echo.${ns}`, `echo.${ns}.svc.cluster.local`]) {
      const r = await c.laptop('curl', ['-sS', '--max-time', '10', `http://${host}/by-name`]);
      t.equal(JSON.parse(r.stdout).name, 'echo', `curl http://${host}/`);
    }
    const svc = await c.kubectlJson<{ spec: { clusterIP: string } }>(['-n', ns, 'get', 'svc', 'echo']);
    const byIp = await c.laptop('curl', ['-sS', '--max-time', '10', `http://${svc.spec.clusterIP}/by-ip`]);
    t.equal(JSON.parse(byIp.stdout).name, 'echo', 'by cluster IP');
    const pods = await c.kubectlJson<{ items: { status: { podIP: string } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=echo']);
    const pod = await c.laptop('curl', ['-sS', '--max-time', '10', `http://${pods.items[0].status.podIP}:8080/by-pod-ip`]);
    t.equal(JSON.parse(pod.stdout).name, 'echo', 'by pod IP');
    const dig = await c.laptop('dig', ['+short', '+time=3', `echo.${ns}.svc.cluster.local`]);
    t.equal(dig.stdout.trim(), svc.spec.clusterIP, 'dig A of the full name');
    const digShort = await c.laptop('dig', ['+short', '+time=3', '+search', 'echo']);
    t.equal(digShort.stdout.trim(), svc.spec.clusterIP, 'dig of the short name through the search path');
    const set = await c.laptop('redis-cli', ['-h', 'redis', 'SET', 'rdbg-key', 'through-the-tunnel']);
    t.equal(set.stdout.trim(), 'OK');
    const get = await c.laptop('redis-cli', ['-h', `redis.${ns}`, 'GET', 'rdbg-key']);
    t.equal(get.stdout.trim(), 'through-the-tunnel', 'redis-cli against the Redis pod');
    // Over port-forward, TCP flows are HTTP/2 streams.
    const st = JSON.parse((await admin.rdbg(['status', '-o', 'json'])).stdout);
    t.match(st.transport, /data plane over port-forward \(HTTP\/2\)/, st.transport);
  });

  await t.test('half-close over port-forward: an answer 2 s after the client\'s FIN arrives whole', async (t) => {
    // containerd ends a forwarded connection about 1 s after a FIN comes through it. On HTTP/2 the
    // FIN is the stream's end, which must not end the pod's side of the forwarded connection. Three times.
    await c.kubectl(['-n', ns, 'wait', '--for=condition=Ready', 'pod/slow', '--timeout=60s']);
    const script = "const s=require('net').connect(9000,'slow',()=>s.end('x'.repeat(200000)));let d='';s.on('data',c=>d+=c);s.on('end',()=>console.log(JSON.stringify(d)));s.on('error',e=>console.log(e.code))";
    const tries = async (how: string): Promise<void> => {
      for (let i = 0; i < 3; i++) {
        const r = await c.laptop('node', ['-e', script], { check: false });
        t.equal(r.stdout.trim(), JSON.stringify('got 200000 bytes\n'), `${how}, try ${i + 1}: ${r.stderr}`);
      }
    };
    await tries('HTTP/2');
  });

  await t.test('the direct transport: the session over port-forward, TCP flows straight to the manager pod', async (t) => {
    // A laptop that can reach pod addresses: a route to the manager's pod through the node, which
    // otherwise isolates the laptop link (test/cluster/up.sh), and forwarding for that one pod.
    const mgr = await c.kubectlJson<{ items: { status: { podIP?: string } }[] }>(['-n', MNS, 'get', 'pods', '-l', MANAGER_SELECTOR]);
    const ip = mgr.items.map((p) => p.status.podIP).find((a) => a)!;
    const laptopIp = c.info.LINK_LAPTOP_IP;
    const rules = [
      ['FORWARD', '-i', 'laptop0', '-o', 'cni0', '-s', `${laptopIp}/32`, '-d', `${ip}/32`, '-j', 'ACCEPT'],
      ['FORWARD', '-i', 'cni0', '-o', 'laptop0', '-s', `${ip}/32`, '-d', `${laptopIp}/32`, '-j', 'ACCEPT'],
    ];
    const route = [`${ip}/32`, 'via', c.info.LINK_NODE_IP];
    try {
      for (const r of rules) await c.node('iptables', ['-w', '-I', r[0], '1', ...r.slice(1)]);
      await c.laptop('ip', ['route', 'add', ...route]);
      await admin.rdbg(['quit']);
      const r = await admin.rdbg(['connect', '--namespace', ns, '--kubernetes', '--manager', `${ip}:8081`, '--never-proxy', `${ip}/32`]);
      t.match(r.stdout, /Connected/, r.stdout + r.stderr);
      const st = JSON.parse((await admin.rdbg(['status', '-o', 'json'])).stdout);
      t.match(st.transport, new RegExp(`direct at ${ip.replace(/\./g, '\\.')}:8082 \\(raw TCP flows\\)`), st.transport);
      const body = 'x'.repeat(256 * 1024);
      const post = await c.laptop('curl', ['-sS', '--max-time', '20', '--data-binary', '@-', `http://echo.${ns}/direct`], { input: body });
      t.equal(JSON.parse(post.stdout).body.length, body.length, 'a 256 KiB request and its echo through the direct transport');
      const pods = await c.kubectlJson<{ items: { status: { podIP: string } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=echo']);
      const t0 = Date.now();
      const refused = await c.laptop('curl', ['-sS', '--max-time', '10', `http://${pods.items[0].status.podIP}:8081/`], { check: false });
      t.equal(refused.code, 7, `a closed port in the cluster is refused on the laptop: ${refused.stderr}`);
      t.ok(Date.now() - t0 < 5000, 'at once');
    } finally {
      await admin.rdbg(['quit'], { check: false });
      await c.laptop('ip', ['route', 'del', ...route], { check: false });
      for (const r of rules) await c.node('iptables', ['-w', '-D', ...r], { check: false });
      // back to the plain port-forward session for what follows
      await admin.rdbg(['connect', '--namespace', ns]);
    }
  });

  await t.test('header intercept across 3 replicas; the rest still reaches the pods', async (t) => {
    // The local copy: same program, another name, on port 9091.
    c.laptopSpawn(t, 'env', ['NAME=echo-on-laptop', 'PORT=9091', 'node', join(repoRoot(), 'test', 'cluster', 'apps', 'echo-http.js')]);
    await waitFor('local copy listening', async () => (await c.laptop('curl', ['-s', 'http://127.0.0.1:9091/healthz'], { check: false })).stdout === 'ok\n', 10_000);
    const envFile = join(admin.home, 'echo.env');
    const r = await admin.rdbg(['intercept', 'echo', '--port', '9091:80', '--header', 'x-dev=me', '--env-file', envFile]);
    t.match(r.stdout, /Intercepting port 8080 of echo/, r.stdout + r.stderr);
    // The CLI returns once the first pod with the agent has taken it; the other replicas follow as they roll.
    t.match(r.stdout, /; [1-3] agent\(s\) ready/, 'at least one agent took it when intercept returned');
    await waitFor('all three agents take the intercept', async () => {
      const list = JSON.parse((await admin.rdbg(['list', '-o', 'json'])).stdout) as { spec: { workload: string }; agents: number }[];
      return list.find((i) => i.spec.workload === 'echo')?.agents === 3;
    }, 120_000);
    await waitFor('the old pods gone', async () => {
      const all = await c.kubectlJson<{ items: { spec: { containers: { name: string }[] } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=echo']);
      return all.items.length === 3 && all.items.every((p) => p.spec.containers.some((x) => x.name === 'rdbg-agent'));
    }, 120_000);
    const env = (await c.laptop('cat', [envFile])).stdout;
    t.match(env, /^GREETING=from-the-cluster$/m, 'the pod\'s environment in --env-file');
    const pods = await c.kubectlJson<{ items: { metadata: { name: string }; status: { podIP: string }; spec: { containers: { name: string }[] } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=echo']);
    t.equal(pods.items.length, 3);
    for (const p of pods.items) t.ok(p.spec.containers.some((x) => x.name === 'rdbg-agent'), `${p.metadata.name} carries the agent`);
    // Every replica honours the intercept: ask each pod's agent directly (the port the Service's "http" now names).
    for (const p of pods.items) {
      const hit = await fromPod(c, ns, `http://${p.status.podIP}:9900/direct`, { 'x-dev': 'me' });
      t.equal(hit.name, 'echo-on-laptop', `${p.metadata.name}: with the header -> laptop`);
      const miss = await fromPod(c, ns, `http://${p.status.podIP}:9900/direct`);
      t.equal(miss.name, 'echo', `${p.metadata.name}: without it -> the app`);
    }
    const viaSvc = await fromPod(c, ns, 'http://echo/', { 'x-dev': 'me' });
    t.equal(viaSvc.name, 'echo-on-laptop', 'through the Service with the header');
    const other = await fromPod(c, ns, 'http://echo/', { 'x-dev': 'someone-else' });
    t.equal(other.name, 'echo', 'another header value reaches the cluster');

    // Switching intercepts off and on again restarts no pod.
    const before = pods.items.map((p) => p.metadata.name).sort();
    await admin.rdbg(['leave', 'echo']);
    t.equal((await fromPod(c, ns, 'http://echo/', { 'x-dev': 'me' })).name, 'echo', 'after leave the header reaches the cluster');
    await admin.rdbg(['intercept', 'echo', '--port', '9091:80', '--header', 'x-dev=me']);
    t.equal((await fromPod(c, ns, 'http://echo/', { 'x-dev': 'me' })).name, 'echo-on-laptop', 'intercepted again');
    const after = (await c.kubectlJson<{ items: { metadata: { name: string } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=echo'])).items.map((p) => p.metadata.name).sort();
    t.same(after, before, 'no pod restarted');
    await admin.rdbg(['leave', 'echo']);
  });

  await t.test('the inner loop: active when intercept returns, back at once on leave, a restarted local process reached with no command', async (t) => {
    const echoApp = join(repoRoot(), 'test', 'cluster', 'apps', 'echo-http.js');
    const localUp = (): Promise<unknown> => waitFor('local copy listening', async () => (await c.laptop('curl', ['-s', 'http://127.0.0.1:9092/healthz'], { check: false })).stdout === 'ok\n', 10_000);
    const pods = (await c.kubectlJson<{ items: { metadata: { name: string }; status: { podIP: string } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=echo'])).items;
    // Every replica, asked once each, right after the command: no retry hides a replica that has not taken the change.
    const everyPod = async (): Promise<string[]> => Promise.all(pods.map(async (p) => (await fromPod(c, ns, `http://${p.status.podIP}:9900/loop`, { 'x-dev': 'loop' })).name));
    let local = c.laptopSpawn(t, 'env', ['NAME=echo-v1', 'PORT=9092', 'node', echoApp]);
    await localUp();
    for (let round = 1; round <= 2; round++) {
      await admin.rdbg(['intercept', 'echo', '--port', '9092:80', '--header', 'x-dev=loop']);
      t.same(await everyPod(), pods.map(() => 'echo-v1'), `round ${round}: every replica diverts as soon as intercept returns`);
      await admin.rdbg(['leave', 'echo']);
      t.same(await everyPod(), pods.map(() => 'echo'), `round ${round}: every replica serves the header itself as soon as leave returns`);
    }
    await admin.rdbg(['intercept', 'echo', '--port', '9092:80', '--header', 'x-dev=loop']);
    // The developer restarts the local process (an edit, a debugger restart): nothing to tell rdbg.
    local.kill('SIGKILL');
    await new Promise((r) => local.once('close', r));
    local = c.laptopSpawn(t, 'env', ['NAME=echo-v2', 'PORT=9092', 'node', echoApp]);
    await localUp();
    t.same(await everyPod(), pods.map(() => 'echo-v2'), 'the restarted process gets the next request of every replica');
    await admin.rdbg(['leave', 'echo']);

    // The claim stays for the session (the next switch writes nothing) and goes with it.
    const session = JSON.parse((await admin.rdbg(['status', '-o', 'json'])).stdout).session_id as string;
    const claim = claimAnnotation(session);
    const annotations = async (): Promise<Record<string, string>> =>
      (await c.kubectlJson<{ metadata: { annotations?: Record<string, string> } }>(['-n', ns, 'get', 'deploy', 'echo'])).metadata.annotations ?? {};
    t.equal((await annotations())[claim.key], claim.value, 'after leave the workload still carries this session\'s claim');
    await admin.rdbg(['quit']);
    t.notOk(claim.key in (await annotations()), 'quit takes the claim off');
    await admin.rdbg(['connect', '--namespace', ns]);
  });

  await t.test('a switch finds its workload from a watch; a Service that moves to another workload is followed at once', async (t) => {
    const logFile = join(admin.home, 'daemon.log');
    const logFrom = (await fsp.readFile(logFile, 'utf8')).length;
    const targets = async (): Promise<string[]> =>
      (await fsp.readFile(logFile, 'utf8')).slice(logFrom).split('\n').filter((l) => l.includes('"intercept target"')).map((l) => (JSON.parse(l) as { from: string }).from);
    // The first switch of the session reads (and writes the claim, a change), the next reads again; after that, the watch answers.
    for (let i = 0; i < 4; i++) {
      const r = await admin.rdbg(['intercept', 'echo', '--port', '9092:80', '--header', 'x-dev=watch']);
      t.match(r.stdout, /Intercepting port 8080 of echo\./, r.stdout);
      await admin.rdbg(['leave', 'echo']);
    }
    t.equal((await targets()).slice(-1)[0], 'watch', `a later switch needs no apiserver read (${(await targets()).join(', ')})`);

    // The Service now selects another Deployment: the next intercept of its name must find that one, not the watched answer.
    await c.apply(ns, list(deployment('echo-next', 1, { name: 'http', number: 8080 })).replace(/"IMAGE"/g, JSON.stringify(echoImg)));
    await c.rollout(ns, 'echo-next');
    t.teardown(async () => {
      await c.kubectl(['-n', ns, 'patch', 'service', 'echo', '-p', JSON.stringify({ spec: { selector: { app: 'echo' } } })], { check: false });
      await c.kubectl(['-n', ns, 'delete', 'deployment', 'echo-next', '--wait=false'], { check: false });
    });
    await c.kubectl(['-n', ns, 'patch', 'service', 'echo', '-p', JSON.stringify({ spec: { selector: { app: 'echo-next' } } })]);
    const moved = await admin.rdbg(['intercept', 'echo', '--port', '9092:80', '--header', 'x-dev=watch'], { timeoutMs: 180_000 });
    t.match(moved.stdout, /Intercepting port 8080 of echo-next\./, `the intercept follows the Service: ${moved.stdout}${moved.stderr}`);
    const held = JSON.parse((await admin.rdbg(['list', '-o', 'json'])).stdout) as { spec: { workload: string } }[];
    t.same(held.map((i) => i.spec.workload), ['echo-next'], 'and nothing is left on the workload it served before');
    t.equal((await targets()).slice(-1)[0], 'apiserver', 'read from the apiserver, as the watch reported the change');
    await admin.rdbg(['leave', 'echo-next']);
    await admin.rdbg(['uninstall', 'echo-next', '-n', ns]);
    await c.kubectl(['-n', ns, 'patch', 'service', 'echo', '-p', JSON.stringify({ spec: { selector: { app: 'echo' } } })]);
    const back = await admin.rdbg(['intercept', 'echo', '--port', '9092:80', '--header', 'x-dev=watch']);
    t.match(back.stdout, /Intercepting port 8080 of echo\./, 'and back');
    await admin.rdbg(['leave', 'echo']);
  });

  await t.test('rdbg gather-logs: the daemons\', the manager\'s and the agents\' logs in one archive', async (t) => {
    const out = join(admin.home, 'bug.tar.gz');
    const r = await admin.rdbg(['gather-logs', '-o', out]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, `Wrote ${out}`);
    const x = mkdtempSync(join(tmpdir(), 'rdbg-gathered-'));
    t.teardown(() => rmSync(x, { recursive: true, force: true }));
    await c.laptop('tar', ['-xzf', out, '-C', x]); // the system's tar reads it
    const files = (await c.laptop('find', [x, '-type', 'f'])).stdout.split('\n').filter(Boolean).map((f) => f.slice(x.length + 1));
    const index = JSON.parse(readFileSync(join(x, 'index.json'), 'utf8')) as { files: string[]; missing: { what: string }[] };
    t.same(files.filter((f) => f !== 'index.json').sort(), [...index.files].sort(), 'index.json lists what is there');
    t.ok(files.includes('laptop/daemon.log'), "the user daemon's log");
    t.ok(files.includes('laptop/status.json'), 'the session');
    const manager = files.find((f) => new RegExp(`^cluster/${MNS}/rdbg-manager-[^/]+/manager\\.log$`).test(f));
    t.ok(manager, `the manager's log (${files.join(', ')})`);
    t.match(readFileSync(join(x, manager!), 'utf8'), /traffic manager listening/);
    const agents = files.filter((f) => new RegExp(`^cluster/${ns}/echo-[^/]+/rdbg-agent\\.log$`).test(f));
    t.ok(agents.length >= 3, `every echo pod's agent (${agents.length})`);
    t.match(readFileSync(join(x, agents[0]), 'utf8'), /linked to the traffic manager/);
    t.notMatch(readFileSync(join(x, 'laptop/intercepts.json'), 'utf8'), /SECRET_ISH|pod-env/, "no pod's environment");
    // A user who may not read the manager's namespace still gets an archive, told what is missing.
    const user = laptop(c, t, c.info.USER_KUBECONFIG);
    const u = await user.rdbg(['gather-logs', '-o', join(user.home, 'u.tar.gz')], { check: false });
    t.equal(u.code, 0, u.stderr);
    t.match(u.stdout, /not included: .*the manager's pods in namespace rdbg/);
  });

  await t.test('replace: every request to the laptop, the app stopped, and back as it was on leave and after a crash', async (t) => {
    // A worker that writes a line every 200 ms while it runs, as a queue consumer would consume.
    const worker = deployment('worker', 2, { name: 'http', number: 8080 }, { TICK: '200' }) as { spec: { template: { spec: Record<string, unknown> } } };
    worker.spec.template.spec.securityContext = { runAsUser: 1000, runAsGroup: 1000 };
    await c.apply(ns, list(worker, service('worker', 80, 'http')).replace(/"IMAGE"/g, JSON.stringify(echoImg)));
    await c.rollout(ns, 'worker');
    c.laptopSpawn(t, 'env', ['NAME=worker-on-laptop', 'PORT=9096', 'node', join(repoRoot(), 'test', 'cluster', 'apps', 'echo-http.js')]);
    // The agent goes in with a header intercept first: the replace itself restarts nothing.
    await admin.rdbg(['intercept', 'worker', '--port', '9096:80', '--header', 'x-dev=first']);
    await admin.rdbg(['leave', 'worker']);
    await waitFor('both worker pods with the agent', async () => {
      const all = await c.kubectlJson<{ items: { metadata: { deletionTimestamp?: string }; spec: { containers: { name: string }[] } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=worker']);
      return all.items.length === 2 && all.items.every((p) => !p.metadata.deletionTimestamp && p.spec.containers.some((x) => x.name === 'rdbg-agent'));
    }, 120_000);
    const podNames = async (): Promise<string[]> =>
      (await c.kubectlJson<{ items: { metadata: { name: string } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=worker'])).items.map((p) => p.metadata.name).sort();
    const template = async (): Promise<string> => JSON.stringify((await c.kubectlJson<{ spec: { template: unknown } }>(['-n', ns, 'get', 'deploy', 'worker', '-o', 'json'])).spec.template);
    const pods = await podNames();
    const t0 = await template();
    const ticks = async (pod: string): Promise<number> => {
      const r = await c.kubectl(['-n', ns, 'logs', pod, '-c', 'worker'], { check: false });
      return r.stdout.split('\n').filter((l) => l.startsWith('tick ')).length;
    };
    /** Whether every worker pod writes within `ms`. */
    const writing = async (ms: number): Promise<boolean[]> => {
      const a = await Promise.all(pods.map(ticks));
      await new Promise((r) => setTimeout(r, ms));
      const b = await Promise.all(pods.map(ticks));
      return b.map((n, i) => n > a[i]);
    };
    t.same(await writing(1500), [true, true], 'before: both pods write');

    const r = await admin.rdbg(['replace', 'worker', '--port', '9096:80']);
    t.match(r.stdout, /Replacing port 8080 of worker\..* \(all traffic, app stopped \(replace\)\)/, r.stdout + r.stderr);
    await new Promise((res) => setTimeout(res, 500)); // lines already written before the stop may still arrive
    t.same(await writing(2500), [false, false], 'replaced: neither app writes');
    for (let i = 0; i < 4; i++) t.equal((await fromPod(c, ns, 'http://worker/')).name, 'worker-on-laptop', `request ${i + 1} without any header -> the laptop`);
    const ready = await c.kubectlJson<{ items: { status: { conditions: { type: string; status: string }[] } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=worker']);
    await new Promise((res) => setTimeout(res, 3000)); // several readiness periods of the stopped app
    const still = await c.kubectlJson<{ items: { status: { conditions: { type: string; status: string }[] } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=worker']);
    t.ok([...ready.items, ...still.items].every((p) => p.status.conditions.some((x) => x.type === 'Ready' && x.status === 'True')),
      'the pods stay Ready (the agent answers the kubelet\'s probes for the stopped app)');
    t.same(await podNames(), pods, 'the pods stay');
    t.equal(await template(), t0, 'the pod template is not changed');

    // An app whose user the pod does not name (echo: the image's root) cannot be stopped by the agent: refused, and it keeps running.
    const rootApp = await admin.rdbg(['replace', 'echo', '--port', '9091:80'], { check: false });
    t.not(rootApp.code, 0, 'replace of an app the agent may not stop fails');
    t.match(rootApp.stderr, /cannot replace echo in namespace .*: pod echo-\S+: the app runs as uid 0 and the agent as uid 65532, .*set runAsUser: 0/, rootApp.stderr);
    t.notOk((JSON.parse((await admin.rdbg(['list', '-o', 'json'])).stdout) as { spec: { workload: string } }[]).some((i) => i.spec.workload === 'echo'), 'no half replace is left');
    t.equal((await fromPod(c, ns, 'http://echo/')).name, 'echo', 'echo still answers from its pods');

    // A second developer is refused, with the holder named.
    const other = laptop(c, t);
    await other.rdbg(['connect', '--socks', '1085']);
    const refused = await other.rdbg(['replace', 'worker', '-n', ns, '--port', '9097:80'], { check: false });
    t.not(refused.code, 0);
    t.match(refused.stderr, /worker in namespace .* is replaced by \S+@\S+/, refused.stderr);

    await admin.rdbg(['leave', 'worker']);
    t.same(await writing(1500), [true, true], 'after leave: both apps write again');
    t.equal((await fromPod(c, ns, 'http://worker/')).name, 'worker', 'requests reach the pods again');
    t.equal(await template(), t0, 'the template is as before');
    t.same(await podNames(), pods, 'the same pods');

    // A laptop that dies while replacing: the manager ends its replace when the lease runs out.
    c.laptopSpawn(t, 'env', ['NAME=worker-on-other-laptop', 'PORT=9097', 'node', join(repoRoot(), 'test', 'cluster', 'apps', 'echo-http.js')]);
    const r2 = await other.rdbg(['replace', 'worker', '-n', ns, '--port', '9097:80']);
    t.match(r2.stdout, /Replacing/, 'the other developer replaces now');
    await new Promise((res) => setTimeout(res, 500));
    t.same(await writing(1500), [false, false], 'stopped again');
    t.equal((await fromPod(c, ns, 'http://worker/')).name, 'worker-on-other-laptop', 'requests reach the other laptop');
    const pid = Number(readFileSync(join(other.home, 'daemon.pid'), 'utf8'));
    process.kill(pid, 'SIGKILL');
    const back = await waitFor('the apps write again after the lease expired', async () => ((await writing(1000)).every(Boolean) ? true : undefined), 60_000, 500);
    t.ok(back, 'after kill -9 of the replacing daemon: both apps write again');
    t.equal((await fromPod(c, ns, 'http://worker/')).name, 'worker', 'and answer the requests');
    t.equal(await template(), t0, 'the template is as before');
    t.same(await podNames(), pods, 'the same pods, never restarted');
  });

  await t.test('intercept --mount: the pod\'s ConfigMap, Secret, token and emptyDir on the laptop, gone after leave and after kill -9', async (t) => {
    const config = 'greeting: from the ConfigMap\nlimits:\n  rps: 40\n';
    const objs = list(
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'files-config' }, data: { 'app.yaml': config } },
      { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'files-secret' }, stringData: { password: 's3cr3t-from-the-secret' } },
      (() => {
        const d = deployment('files', 1, { name: 'http', number: 8080 }) as { spec: { template: { spec: { securityContext?: object; volumes?: object[]; containers: { volumeMounts?: object[] }[] } } } };
        const pod = d.spec.template.spec;
        pod.securityContext = { runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000 };
        pod.volumes = [{ name: 'config', configMap: { name: 'files-config' } }, { name: 'secret', secret: { secretName: 'files-secret' } }, { name: 'scratch', emptyDir: {} }];
        pod.containers[0].volumeMounts = [{ name: 'config', mountPath: '/etc/config', readOnly: true }, { name: 'secret', mountPath: '/etc/secret', readOnly: true }, { name: 'scratch', mountPath: '/data' }];
        return d;
      })(),
      service('files', 80, 'http'),
    );
    await c.apply(ns, objs.replace(/"IMAGE"/g, JSON.stringify(echoImg)));
    await c.rollout(ns, 'files');
    // This laptop runs in the laptop's network namespace but the host's mount namespace (nsenter --net), so the
    // test sees the mount as a developer's shell would; it connects with --socks, which changes nothing of the host.
    const home = mkdtempSync(join(tmpdir(), 'rdbg-mount-'));
    const dir = join(home, 'pod');
    const env = { ...process.env, KUBECONFIG: c.info.ADMIN_KUBECONFIG, RDBG_HOME: home };
    const dev = (args: string[], check = true): Promise<ExecResult> =>
      exec('nsenter', [`--net=/run/netns/${c.info.LAPTOP_NS}`, RDBG(), ...args], { env, check, timeoutMs: 180_000 });
    const mounted = (): boolean => readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === dir);
    t.teardown(async () => {
      await dev(['quit'], false);
      exec('fusermount3', ['-u', '-z', dir], { check: false }).catch(() => undefined);
      rmSync(home, { recursive: true, force: true });
    });
    await dev(['connect', '--socks', '1088', '-n', ns]);
    const inPod = async (path: string): Promise<string> => (await c.execIn(ns, 'deploy/files', ['cat', path], { timeoutMs: 20_000 })).stdout;

    const t0 = Date.now();
    const r = await dev(['intercept', 'files', '--port', '9099:80', '--header', 'x-dev=files', '--mount', dir]);
    const mountS = (Date.now() - t0) / 1000;
    t.match(r.stdout, new RegExp(`The files of pod files-\\S+ are mounted at ${dir}`), r.stdout + r.stderr);
    t.ok(mounted(), 'mounted when intercept returns');
    t.equal(await fsp.readFile(join(dir, 'etc/config/app.yaml'), 'utf8'), await inPod('/etc/config/app.yaml'), 'the ConfigMap key, byte for byte');
    t.equal(await fsp.readFile(join(dir, 'etc/config/app.yaml'), 'utf8'), config);
    t.equal(await fsp.readFile(join(dir, 'etc/secret/password'), 'utf8'), 's3cr3t-from-the-secret', 'the Secret');
    const sa = '/var/run/secrets/kubernetes.io/serviceaccount';
    t.equal(await fsp.readFile(join(dir, sa, 'token'), 'utf8'), await inPod(`${sa}/token`), 'the service-account token');
    t.equal(await fsp.readFile(join(dir, sa, 'namespace'), 'utf8'), ns, 'and its namespace file');
    await fsp.writeFile(join(dir, 'data/from-laptop.txt'), 'written on the laptop\n');
    t.equal(await inPod('/data/from-laptop.txt'), 'written on the laptop\n', 'a file the laptop writes to the emptyDir, read back inside the pod');
    t.equal(await fsp.writeFile(join(dir, 'etc/config/app.yaml'), 'x').then(() => 'written', (e: NodeJS.ErrnoException) => e.code), 'EACCES',
      'the read-only ConfigMap stays read-only');
    t.notOk((await fsp.readdir(join(dir, 'var/run/secrets'))).includes('rdbg'), "the agent's own token is not in the tree");
    t.comment(`intercept --mount returned in ${mountS.toFixed(2)} s`);
    await dev(['leave', 'files']);
    t.notOk(mounted(), 'leave unmounts');

    // With a command: the mount point in RDBG_ROOT, unmounted when it ends.
    const cmd = await dev(['intercept', 'files', '--port', '9099:80', '--header', 'x-dev=files', '--mount', dir, '--', 'sh', '-c', 'cat "$RDBG_ROOT/etc/secret/password"']);
    t.match(cmd.stdout, /s3cr3t-from-the-secret/, 'the command reads the pod\'s files under $RDBG_ROOT');
    t.notOk(mounted(), 'unmounted when the command ended');

    // --copy-files: a snapshot, no FUSE.
    const copy = join(home, 'copy');
    await dev(['intercept', 'files', '--port', '9099:80', '--header', 'x-dev=files', '--copy-files', copy]);
    t.equal(readFileSync(join(copy, 'etc/config/app.yaml'), 'utf8'), config, '--copy-files: the ConfigMap key');
    t.equal(readFileSync(join(copy, 'data/from-laptop.txt'), 'utf8'), 'written on the laptop\n', 'and the emptyDir');
    await dev(['leave', 'files']);

    // kill -9 of the user daemon while mounted: nothing stays mounted.
    await dev(['intercept', 'files', '--port', '9099:80', '--header', 'x-dev=files', '--mount', dir]);
    t.ok(mounted(), 'mounted again');
    process.kill(Number(readFileSync(join(home, 'daemon.pid'), 'utf8')), 'SIGKILL');
    const gone = await waitFor('the mount gone after kill -9', async () => !mounted(), 15_000, 100).catch(() => false);
    t.ok(gone, 'after kill -9 of the daemon the mount goes by itself');
    // kill -9 of the daemon and of sshfs too (an OOM killer, pkill -9): the mount is left dead; the journal has it.
    await dev(['connect', '--socks', '1088', '-n', ns]);
    // (a new session: the dead one's intercept holds its header until its lease runs out)
    await dev(['intercept', 'files', '--port', '9099:80', '--header', 'x-dev=files-again', '--mount', dir]);
    t.ok(mounted(), 'mounted once more');
    const helpers = (await exec('pgrep', ['-f', `rdbg-mount|sshfs -f .* ${dir}`], { check: false })).stdout.trim().split('\n').filter(Boolean).map(Number);
    t.ok(helpers.length >= 1, `sshfs and its shell: ${helpers.join(', ')}`);
    for (const pid of [Number(readFileSync(join(home, 'daemon.pid'), 'utf8')), ...helpers]) process.kill(pid, 'SIGKILL');
    await new Promise((res) => setTimeout(res, 500));
    t.ok(mounted(), 'a dead mount is left behind');
    const q = await dev(['quit'], false);
    t.equal(q.code, 0, q.stderr);
    t.match(q.stdout, new RegExp(`unmounted the pod files left at ${dir}`), q.stdout);
    t.notOk(mounted(), 'quit after the crash unmounts it (the journal)');
  });

  await t.test('a StatefulSet behind a numeric targetPort', async (t) => {
    c.laptopSpawn(t, 'env', ['NAME=store-on-laptop', 'PORT=9092', 'node', join(repoRoot(), 'test', 'cluster', 'apps', 'echo-http.js')]);
    await waitFor('local copy listening', async () => (await c.laptop('curl', ['-s', 'http://127.0.0.1:9092/healthz'], { check: false })).stdout === 'ok\n', 10_000);
    const r = await admin.rdbg(['intercept', 'store', '--port', '9092:80', '--header', 'x-dev=me']);
    t.match(r.stdout, /Intercepting port 8080 of store/, r.stdout + r.stderr);
    t.equal((await fromPod(c, ns, 'http://store/', { 'x-dev': 'me' })).name, 'store-on-laptop', 'with the header -> laptop');
    t.equal((await fromPod(c, ns, 'http://store/')).name, 'store', 'without -> the StatefulSet pod');
    await admin.rdbg(['leave', 'store']);
  });

  await t.test('the manager pod deleted mid-session: rdbg recovers by itself', async (t) => {
    c.laptopSpawn(t, 'env', ['NAME=echo-on-laptop', 'PORT=9093', 'node', join(repoRoot(), 'test', 'cluster', 'apps', 'echo-http.js')]);
    await waitFor('local copy listening', async () => (await c.laptop('curl', ['-s', 'http://127.0.0.1:9093/healthz'], { check: false })).stdout === 'ok\n', 10_000);
    await admin.rdbg(['intercept', 'echo', '--port', '9093:80', '--header', 'x-dev=me']);
    const st0 = JSON.parse((await admin.rdbg(['status', '-o', 'json'])).stdout);
    await c.kubectl(['-n', MNS, 'delete', 'pod', '-l', 'app.kubernetes.io/component=manager', '--wait=false']);
    const deletedAt = Date.now();
    await waitFor('a new session', async () => {
      const st = JSON.parse((await admin.rdbg(['status', '-o', 'json'])).stdout);
      return st.state === 'CONNECTED' && st.session_id !== st0.session_id && st.reconnects > st0.reconnects;
    }, 120_000, 1000);
    const curl = await waitFor('curl by name again', async () => {
      const r = await c.laptop('curl', ['-sS', '--max-time', '5', 'http://echo/after-restart'], { check: false });
      return r.code === 0 && JSON.parse(r.stdout).name === 'echo' ? r : undefined;
    }, 60_000, 1000);
    t.ok(curl, 'the cluster is reachable again');
    const back = await waitFor('the intercept restored on the new manager', async () => {
      const hit = await fromPod(c, ns, 'http://echo/', { 'x-dev': 'me' });
      return hit.name === 'echo-on-laptop' ? hit : undefined;
    }, 90_000, 1000);
    t.ok(back, 'the intercept works again without any command');
    // The connections that led to the old pod never see a FIN; the new session must not be
    // torn down when they stop answering pings (10 s + 15 s after the restart).
    const after = JSON.parse((await admin.rdbg(['status', '-o', 'json'])).stdout);
    await new Promise((r) => setTimeout(r, Math.max(0, 30_000 - (Date.now() - deletedAt))));
    const later = JSON.parse((await admin.rdbg(['status', '-o', 'json'])).stdout);
    t.same([later.state, later.session_id, later.reconnects], ['CONNECTED', after.session_id, after.reconnects], 'one reconnect, and the session it made lasts');
    await admin.rdbg(['leave', 'echo']);
  });

  await t.test('RBAC: a user granted with --grant-user passes doctor and intercepts, only where granted', async (t) => {
    const user = laptop(c, t, c.info.USER_KUBECONFIG);
    const denied = await user.rdbg(['connect', '--socks', '1081'], { check: false });
    t.not(denied.code, 0, 'no rights in the manager namespace: connect refused');
    t.match(denied.stderr, /forbidden|may not|rights/i, denied.stderr);
    const before = await user.rdbg(['doctor', '-n', ns], { check: false });
    t.match(before.stdout, /FAIL +rbac +you may not patch deployments\.apps in .*\n.*--grant-user USER --grant-namespace /, 'doctor names the grant that fixes it');
    // The admin grants the user rdbg-developer in the test namespace (the user's own namespace is another).
    const grant = await admin.rdbg(['manager', 'install', '--image', image, '--grant-user', c.info.USER_NAME, '--grant-namespace', ns]);
    t.match(grant.stdout, new RegExp(`rdbg-developer granted to user ${c.info.USER_NAME} in namespace ${ns}`), grant.stdout);
    t.teardown(async () => {
      await c.kubectl(['delete', 'rolebinding', '-A', '-l', `rdbg.dev/developer-grant=${MNS}`, '--ignore-not-found'], { check: false });
    });
    const doctor = await user.rdbg(['doctor', '-n', ns, '-o', 'json'], { check: false });
    const checks = (JSON.parse(doctor.stdout) as { checks: { area: string; verdict: string; detail: string }[] }).checks;
    const bad = checks.filter((x) => x.verdict === 'fail' || (x.area === 'rbac' && x.verdict === 'warn' && !/webhook configuration/.test(x.detail)));
    t.same(bad, [], 'doctor: every right a developer needs, nothing fails');
    t.equal(doctor.code, 0, 'doctor exits 0');
    t.ok(checks.some((x) => x.area === 'webhook' && x.verdict === 'ok'), 'the webhook dry run runs as the user');
    const ok = await user.rdbg(['connect', '--socks', '1081', '--namespace', ns]);
    t.match(ok.stdout, /Connected/, 'connect allowed');
    c.laptopSpawn(t, 'env', ['NAME=echo-on-user-laptop', 'PORT=9094', 'node', join(repoRoot(), 'test', 'cluster', 'apps', 'echo-http.js')]);
    const ic = await user.rdbg(['intercept', 'echo', '--port', '9094:80', '--header', 'x-dev=granted'], { check: false });
    t.equal(ic.code, 0, ic.stderr);
    // (when this test injects the agent itself, intercept returns with the first pod ready; the others follow)
    const hit = await waitFor('the user\'s intercept on every pod', async () => {
      const names = await Promise.all([1, 2, 3, 4].map(() => fromPod(c, ns, 'http://echo/', { 'x-dev': 'granted' }).then((r) => r.name)));
      return names.every((n) => n === 'echo-on-user-laptop') ? names : undefined;
    }, 120_000, 1000);
    t.ok(hit, "the user's intercept reaches the user's laptop");
    t.equal((await fromPod(c, ns, 'http://echo/')).name, 'echo', 'the rest still reaches the pods');
    await user.rdbg(['leave', 'echo']);
    // Not granted elsewhere: the user's intercept of a workload in another namespace is refused.
    const other = await c.namespace(t, 'kube-rdbg-other');
    await c.apply(other, list(deployment('echo', 1, { name: 'http', number: 8080 }), service('echo', 80, 'http')).replace(/"IMAGE"/g, JSON.stringify(echoImg)));
    const refused = await user.rdbg(['intercept', 'echo', '-n', other, '--port', '9095:80', '--header', 'x-dev=u'], { check: false });
    t.not(refused.code, 0);
    t.match(refused.stderr, /forbidden|may not|permission/i, refused.stderr);
    await user.rdbg(['quit']);
  });

  await t.test('an exec credential plugin; a missing manager is named with its fix', async (t) => {
    // A kubeconfig whose user is an exec plugin (as with cloud CLIs): the plugin prints the admin's
    // client certificate as an ExecCredential, and rdbg must run it to reach the cluster.
    const adminCfg = (await c.laptop('cat', [c.info.ADMIN_KUBECONFIG])).stdout;
    const field = (name: string): string => new RegExp(`${name}: (\\S+)`).exec(adminCfg)![1];
    const dir = mkdtempSync(join(tmpdir(), 'rdbg-exec-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const plugin = join(dir, 'credential-plugin.sh');
    const cred = { apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: {
      clientCertificateData: Buffer.from(field('client-certificate-data'), 'base64').toString(),
      clientKeyData: Buffer.from(field('client-key-data'), 'base64').toString() } };
    writeFileSync(plugin, `#!/bin/sh\necho ran >> ${dir}/plugin-ran\ncat <<'EOF'\n${JSON.stringify(cred)}\nEOF\n`, { mode: 0o755 });
    const execCfg = join(dir, 'exec.kubeconfig');
    writeFileSync(execCfg, JSON.stringify({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'exec',
      clusters: [{ name: 'c', cluster: { server: c.info.APISERVER_URL, 'certificate-authority-data': field('certificate-authority-data') } }],
      users: [{ name: 'u', user: { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: plugin, interactiveMode: 'Never' } } }],
      contexts: [{ name: 'exec', context: { cluster: 'c', user: 'u', namespace: ns } }],
    }));
    const viaExec = laptop(c, t, execCfg);
    const r = await viaExec.rdbg(['connect', '--socks', '1083']);
    t.match(r.stdout, /Connected to traffic manager .* in context exec/, r.stdout + r.stderr);
    const curl = await c.laptop('curl', ['-sS', '--max-time', '10', '--socks5-hostname', '127.0.0.1:1083', 'http://echo/via-exec-plugin']);
    t.equal(JSON.parse(curl.stdout).name, 'echo', 'the cluster through a session opened with exec credentials');
    t.ok((await c.laptop('cat', [join(dir, 'plugin-ran')])).stdout.includes('ran'), 'the plugin ran');
    await viaExec.rdbg(['quit']);
    const missing = await viaExec.rdbg(['connect', '--socks', '1083', '--manager-namespace', 'no-such-rdbg'], { check: false });
    t.not(missing.code, 0);
    t.match(missing.stderr, /no traffic manager in namespace no-such-rdbg/, missing.stderr);
    t.match(missing.stderr, /rdbg manager install --namespace no-such-rdbg/, 'the command that fixes it');
  });

  await t.test('a pod without rights cannot use the manager', async (t) => {
    const script = `
      const grpc = require('@grpc/grpc-js'); const loader = require('@grpc/proto-loader');
      const def = loader.loadSync('rdbg/v1/manager.proto', { includeDirs: ['/app/proto'], keepCase: true, longs: Number, defaults: true });
      const M = grpc.loadPackageDefinition(def).rdbg.v1.Manager;
      const m = new M('rdbg-manager.${MNS}:8081', grpc.credentials.createInsecure());
      const out = {};
      m.Arrive({ client_version: '${VERSION}', protocol: ${PROTOCOL}, user: 'intruder' }, { deadline: Date.now() + 8000 }, (e) => {
        out.arrive = e ? e.code + ' ' + e.details : 'ACCEPTED';
        m.AgentArrive({ version: '${VERSION}', protocol: ${PROTOCOL}, workload: 'echo', namespace: '${ns}', pod_name: 'x', token: 'not-a-token' }, { deadline: Date.now() + 8000 }, (e2) => {
          out.agent = e2 ? e2.code + ' ' + e2.details : 'ACCEPTED';
          console.log(JSON.stringify(out)); process.exit(0);
        });
      });`;
    await c.kubectl(['-n', ns, 'run', 'intruder', `--image=${image}`, '--image-pull-policy=Never', '--restart=Never', '--command', '--', 'node', '-e', script]);
    const logs = await waitFor('the intruder finished', async () => {
      const r = await c.kubectl(['-n', ns, 'logs', 'intruder'], { check: false });
      return r.stdout.includes('{') ? r.stdout : undefined;
    }, 90_000, 1000);
    const out = JSON.parse(logs.trim().split('\n').pop()!);
    t.match(out.arrive, /^7 /, `Arrive from a pod: PERMISSION_DENIED (${out.arrive})`);
    t.match(out.agent, /^(16|7) /, `AgentArrive with a bogus token: refused (${out.agent})`);
  });

  await t.test('kubectl rdbg, completion from the cluster, doctor -o json', async (t) => {
    // kubectl finds the plugin on PATH as krew installs it: kubectl-rdbg and kubectl_complete-rdbg.
    const bin = mkdtempSync(join(tmpdir(), 'rdbg-plugin-'));
    t.teardown(() => rmSync(bin, { recursive: true, force: true }));
    for (const name of ['kubectl-rdbg', 'kubectl_complete-rdbg']) symlinkSync(RDBG(), join(bin, name));
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, KUBECONFIG: c.info.ADMIN_KUBECONFIG, RDBG_HOME: admin.home };
    const kubectl = (args: string[]) => c.laptop(c.info.KUBECTL, args, { env, check: false });
    const v = await kubectl(['rdbg', 'version', '-o', 'json']);
    t.equal(v.code, 0, v.stderr);
    t.match(JSON.parse(v.stdout), { client_version: VERSION, protocol: PROTOCOL, manager_version: VERSION }, 'kubectl rdbg version: this rdbg and the manager it is connected to');
    t.match((await kubectl(['plugin', 'list'])).stdout, /kubectl-rdbg/, 'kubectl plugin list names it');
    // kubectl's own completion hands "kubectl rdbg ..." to kubectl_complete-rdbg.
    const words = async (args: string[]) => (await kubectl(['__complete', 'rdbg', ...args])).stdout.split('\n').filter((l) => l && !l.startsWith(':') && !l.startsWith('Completion ended'));
    t.same(await words(['inter']), ['intercept'], 'commands');
    t.same(await words(['intercept', '-n', ns, 'ec']), ['echo'], "Services of the namespace typed with -n");
    const deploys = (await c.kubectlJson<{ items: { metadata: { name: string } }[] }>(['-n', ns, 'get', 'deploy'])).items.map((d) => `deploy/${d.metadata.name}`).sort();
    t.ok(deploys.includes('deploy/echo') && deploys.includes('deploy/caller'));
    t.same((await words(['intercept', '-n', ns, 'deploy/'])).sort(), deploys, 'KIND/NAME once a / is typed: every Deployment of the namespace');
    t.ok((await words(['connect', '-n', 'kube-s'])).includes('kube-system'), 'namespaces from the cluster');
    t.same(await words(['connect', '--context', '']), ['rdbg-admin@rdbg-test'], 'contexts from the kubeconfig');
    // rdbg's own bash completion, through the same __complete, asks the cluster too.
    const script = join(bin, 'rdbg.bash');
    writeFileSync(script, (await admin.rdbg(['completion', 'bash'])).stdout);
    const bash = await c.laptop('bash', ['-c', `source ${script}; COMP_WORDS=(${RDBG()} intercept -n ${ns} st); COMP_CWORD=4; _rdbg; echo "\${COMPREPLY[@]}"`], { env, check: false });
    t.equal(bash.stdout.trim(), 'store', 'bash: a Service name from the cluster');
    // The manager's metrics port, as a Prometheus in the cluster scrapes it (the pod network, from the node).
    const mgr = await c.kubectlJson<{ items: { metadata: { annotations: Record<string, string> }; status: { podIP?: string } }[] }>(['-n', MNS, 'get', 'pods', '-l', MANAGER_SELECTOR]);
    const pod = mgr.items.find((p) => p.status.podIP)!;
    t.match((await c.laptop('curl', ['-sS', '--max-time', '10', `http://echo.${ns}/`])).stdout, /"name":"echo"/, 'a flow through the manager');
    t.equal(pod.metadata.annotations['prometheus.io/port'], '9090');
    const scraped = await c.node('curl', ['-sS', '--max-time', '10', `http://${pod.status.podIP}:9090/metrics`], { check: false });
    t.match(scraped.stdout, /^rdbg_manager_sessions [1-9]/m, 'the manager counts the sessions');
    t.match(scraped.stdout, /^rdbg_manager_flows_opened_total [1-9]/m, 'and the flows it dialled');
    const doc = await admin.rdbg(['doctor', '-n', ns, '-o', 'json'], { check: false });
    t.equal(doc.code, 0, doc.stderr);
    const report = JSON.parse(doc.stdout) as { ok: boolean; checks: { area: string; verdict: string; detail: string }[] };
    t.equal(report.ok, true);
    t.ok(report.checks.some((ch) => ch.area === 'webhook' && ch.verdict === 'ok'), 'the checks, by area and verdict');
  });

  await t.test('rdbg doctor: what would fail, before anything changes', async (t) => {
    const ok = await admin.rdbg(['doctor', '-n', ns], { check: false });
    t.equal(ok.code, 0, ok.stdout);
    t.match(ok.stdout, /ok +webhook +a pod marked for injection \(named port\) gets the agent/, 'the apiserver reaches the webhook (dry run)');
    t.match(ok.stdout, /ok +dns +cluster DNS through the manager: kubernetes\.default\.svc\.cluster\.local -> 10\.96\.0\.1/);
    t.match(ok.stdout, /Nothing in the way/);
    const strict = await c.namespace(t, 'doctor-psa');
    await c.kubectl(['label', 'ns', strict, 'pod-security.kubernetes.io/enforce=restricted']);
    const psa = await admin.rdbg(['doctor', '-n', strict], { check: false });
    t.match(psa.stdout, /ok +webhook +a pod marked for injection \(named port\) gets the agent .*enforce: restricted/, 'the agent passes the restricted profile');
    t.match(psa.stdout, /WARN +pod security .*numeric port.*NET_ADMIN/, 'a numeric targetPort needs NET_ADMIN, which restricted rejects');
    const user = laptop(c, t, c.info.USER_KUBECONFIG);
    const denied = await user.rdbg(['doctor', '-n', ns], { check: false });
    t.equal(denied.code, 1, 'the namespace-scoped user: exit 1');
    t.match(denied.stdout, /FAIL +rbac +you may not create pods\/portforward in rdbg/);
    t.match(denied.stdout, /FAIL +rbac +you may not patch deployments\.apps in /);
    t.match(denied.stdout, /problem\(s\) would make rdbg fail here/);
  });

  await t.test('rdbg uninstall WORKLOAD restores the pod template exactly', async (t) => {
    const st = await c.kubectlJson<{ spec: { template: object } }>(['-n', ns, 'get', 'deploy', 'echo']);
    t.ok(JSON.stringify(st.spec.template).includes('rdbg.dev/inject'), 'marked before');
    await admin.rdbg(['uninstall', 'echo', '-n', ns]);
    const after = await c.kubectlJson<{ spec: { template: { metadata: { labels: object; annotations?: object } } }; metadata: { annotations?: Record<string, string> } }>(['-n', ns, 'get', 'deploy', 'echo']);
    t.same(after.spec.template.metadata.labels, { app: 'echo' }, 'labels as before');
    t.notOk(after.spec.template.metadata.annotations, 'no annotations left on the template');
    t.notOk(Object.keys(after.metadata.annotations ?? {}).some((k) => k.startsWith('rdbg.dev/')), 'no claims left');
    const pods = await c.kubectlJson<{ items: { spec: { containers: { name: string }[] } }[] }>(['-n', ns, 'get', 'pods', '-l', 'app=echo']);
    t.ok(pods.items.every((p) => p.spec.containers.every((x) => x.name !== 'rdbg-agent')), 'pods run without the agent');
  });
});
