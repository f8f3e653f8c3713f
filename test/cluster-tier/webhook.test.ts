// The agent-injection webhook called by the REAL apiserver: WebhookServer
// runs in the node's network namespace on 127.0.0.1 with a certificate made
// here, a MutatingWebhookConfiguration (selecting only this test's namespace)
// points at it, and sample Deployments carrying the marks get the agent.
// Traffic through their Services must reach the app through the agent, for a
// named and for a numeric targetPort; probes keep the pods Ready; unmarked
// pods are untouched; with the webhook down, pods are still created.
//
// The image is localhost/rdbg:<IMAGE_TAG> (or $RDBG_WEBHOOK_IMAGE): rdbg built
// from this tree, with iptables (test/cluster/images.sh). No traffic manager
// runs: the agents keep retrying and forward everything to the app.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import t from 'tap';
import type { InjectSettings } from '../../manager/kube/inject';
import type { Container, Pod } from '../../manager/kube/pod';
import { makeCA, makeServing } from '../helpers/certs';
import { cluster, type Cluster, exec, waitFor } from './cluster-helper';

let IMAGE = '';
let ECHO = '';


const root = t;
let c: Cluster;
let ns = '';
let runner: ChildProcess | undefined;
let runnerLog = '';
const mwc = `rdbg-agent-injector-webhook-helper-${randomBytes(3).toString('hex')}`;
const tlsDir = mkdtempSync(join(tmpdir(), 'rdbg-webhook-tls-'));

function stopRunner(): Promise<void> {
  const r = runner;
  runner = undefined;
  if (!r || r.exitCode !== null || r.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    r.once('close', () => res());
    r.kill('SIGTERM');
    setTimeout(() => r.kill('SIGKILL'), 3000).unref();
  });
}

t.teardown(async () => {
  // Cluster objects first, also when a test failed: a dangling webhook would slow every pod creation.
  if (c) await c.kubectl(['delete', 'mutatingwebhookconfiguration', mwc, '--ignore-not-found'], { check: false });
  await stopRunner();
  rmSync(tlsDir, { recursive: true, force: true });
});

/** Starts the webhook process in the node namespace; resolves with its port. */
async function startRunner(settings: InjectSettings): Promise<number> {
  const script = resolve(__dirname, '../helpers/webhook-runner.js');
  const child = spawn('nsenter', [`--net=/run/netns/${c.info.NODE_NS}`, '--', process.execPath, script, tlsDir, JSON.stringify(settings)], { stdio: ['ignore', 'pipe', 'pipe'] });
  runner = child;
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { runnerLog += s; });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { runnerLog += s; });
  return waitFor('the webhook process to listen', async () => {
    if (child.exitCode !== null) throw new Error(`webhook process exited ${child.exitCode}: ${runnerLog}`);
    const m = /listening (\d+)/.exec(runnerLog);
    return m ? Number(m[1]) : undefined;
  }, 20_000, 100);
}

function marked(name: string, port: string): { labels: Record<string, string>; annotations: Record<string, string> } {
  return {
    labels: { app: name, 'rdbg.dev/inject': 'enabled' },
    annotations: { 'rdbg.dev/agent-port': port, 'rdbg.dev/workload': `Deployment/${name}` },
  };
}

/** A Deployment of echo-http and a Service to targetPort, as JSON manifests. */
function echoApp(name: string, opts: { targetPort: string | number; marks?: boolean; probePort: string | number }): { deployment: string; service: string } {
  const meta = opts.marks ? marked(name, String(opts.targetPort)) : { labels: { app: name }, annotations: {} };
  const app: Container = {
    name: 'app',
    image: ECHO,
    imagePullPolicy: 'Never',
    ports: [{ name: 'http', containerPort: 8080 }],
    env: [
      { name: 'PORT', value: '8080' },
      { name: 'NAME', value: name },
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'GREETING', valueFrom: { configMapKeyRef: { name: 'settings', key: 'greeting' } } },
      { name: 'MEM_MB', valueFrom: { resourceFieldRef: { resource: 'limits.memory', divisor: '1Mi' } } },
    ],
    envFrom: [{ configMapRef: { name: 'settings' }, prefix: 'CFG_' }],
    readinessProbe: { httpGet: { path: '/healthz', port: opts.probePort }, periodSeconds: 1 },
    livenessProbe: { httpGet: { path: '/healthz', port: opts.probePort }, periodSeconds: 2, failureThreshold: 2 },
    resources: { limits: { memory: '96Mi' } },
  };
  const deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, labels: { app: name } },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: name } },
      template: { metadata: meta, spec: { terminationGracePeriodSeconds: 1, containers: [app] } },
    },
  };
  const service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name },
    spec: { selector: { app: name }, ports: [{ name: 'web', port: 80, targetPort: opts.targetPort }] },
  };
  return { deployment: JSON.stringify(deployment), service: JSON.stringify(service) };
}

async function podOf(app: string): Promise<Pod & { status: { podIP: string; containerStatuses: { name: string; ready: boolean; restartCount: number }[] } }> {
  const list = await c.kubectlJson<{ items: (Pod & { metadata: { deletionTimestamp?: string }; status: never })[] }>(['-n', ns, 'get', 'pods', '-l', `app=${app}`]);
  const live = list.items.filter((p) => !p.metadata.deletionTimestamp);
  if (live.length !== 1) throw new Error(`expected one pod of ${app}, got ${live.length}`);
  return live[0];
}

interface Echo { remote: string; pod: string; name: string }
/** The app listens on :: and sees IPv4 callers as ::ffff:a.b.c.d. */
const unmapped = (e: Echo): Echo => ({ ...e, remote: e.remote.replace(/^::ffff:/, '') });
/** One request from the client pod (no marks) with busybox wget. */
async function fetchFrom(client: string, url: string): Promise<Echo> {
  // (busybox's wget -T crashes in these images; the exec's own timeout bounds it)
  const r = await c.execIn(ns, client, ['wget', '-qO-', url], { timeoutMs: 20_000 });
  return unmapped(JSON.parse(r.stdout) as Echo);
}

const agentLogs = async (pod: string): Promise<string> => (await c.kubectl(['-n', ns, 'logs', pod, '-c', 'rdbg-agent'])).stdout;

t.test('the apiserver calls the webhook; marked pods run with the agent', async (t) => {
  c = await cluster();
  IMAGE = process.env.RDBG_WEBHOOK_IMAGE ?? c.image('rdbg');
  ECHO = c.image('echo-http');
  const images = await exec('ctr', ['--address', c.info.CONTAINERD_SOCK, '-n', 'k8s.io', 'images', 'ls', '-q']);
  if (!images.stdout.split('\n').includes(IMAGE)) {
    throw new Error(`image ${IMAGE} is not in the cluster: build it with bash test/cluster/images.sh all rdbg (after make build)`);
  }
  ns = await c.namespace(root, 'webhook-helper'); // lives as long as the file, not this subtest
  const ca = makeCA('rdbg webhook-helper test CA');
  const serving = makeServing(ca, { ips: ['127.0.0.1'] });
  writeFileSync(join(tlsDir, 'tls.crt'), serving.cert);
  writeFileSync(join(tlsDir, 'tls.key'), serving.key);
  const settings: InjectSettings = {
    image: IMAGE,
    managerNamespace: 'rdbg-webhook-helper-none',
    managerAddress: 'rdbg-manager.rdbg-webhook-helper-none:8081',
    agentPortBase: 9900,
    version: 'webhook-test',
    pullPolicy: 'Never',
  };
  const port = await startRunner(settings);
  const config = {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: mwc },
    webhooks: [{
      name: 'inject.webhook-helper.rdbg.dev',
      admissionReviewVersions: ['v1'],
      clientConfig: { url: `https://127.0.0.1:${port}/inject`, caBundle: Buffer.from(ca.cert).toString('base64') },
      rules: [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' }],
      failurePolicy: 'Ignore',
      sideEffects: 'None',
      timeoutSeconds: 5,
      namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': ns } },
      objectSelector: { matchLabels: { 'rdbg.dev/inject': 'enabled' } },
    }],
  };
  await c.kubectl(['apply', '-f', '-'], { input: JSON.stringify(config) });
  await c.apply(ns, JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings' }, data: { greeting: 'hello', color: 'blue' } }));

  // The configuration takes effect within a moment: a server-side dry run goes through the webhook.
  const probePod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'dry', ...marked('dry', 'http') }, spec: { containers: [{ name: 'app', image: ECHO, ports: [{ name: 'http', containerPort: 8080 }] }] } };
  const dry = await waitFor('the apiserver to call the webhook', async () => {
    const r = await c.kubectlJson<Pod>(['-n', ns, 'create', '--dry-run=server', '-f', '-'], { input: JSON.stringify(probePod) });
    return r.spec?.containers?.some((x) => x.name === 'rdbg-agent') ? r : undefined;
  }, 30_000, 500);
  t.same(dry.spec!.containers!.map((x) => x.name), ['app', 'rdbg-agent']);

  const apps = [
    echoApp('named', { targetPort: 'http', marks: true, probePort: 'http' }),
    echoApp('numeric', { targetPort: 8080, marks: true, probePort: 8080 }),
    echoApp('plain', { targetPort: 'http', probePort: 'http' }),
  ];
  // Services first: each container gets the service-link variables of the Services that exist when
  // it starts, and the app and the agent must see the same set.
  await c.apply(ns, apps.map((a) => a.service).join('\n---\n'));
  await c.apply(ns, apps.map((a) => a.deployment).join('\n---\n'));
  const t0 = Date.now();
  await Promise.all(['named', 'numeric', 'plain'].map((d) => c.rollout(ns, d, 180)));
  t.comment(`three Deployments Ready in ${Date.now() - t0} ms`);
});

t.test('named targetPort: the Service reaches the app through the agent', async (t) => {
  const pod = await podOf('named');
  t.same(pod.spec!.containers!.map((x) => x.name), ['app', 'rdbg-agent']);
  t.equal(pod.metadata!.annotations!['rdbg.dev/injected'], 'webhook-test');
  const app = pod.spec!.containers![0];
  t.same(app.ports!.map((p) => [p.name, p.containerPort]), [['rdbg-http', 8080]]);
  const agentNumber = pod.spec!.containers![1].ports![0].containerPort;
  t.same(app.readinessProbe!.httpGet!.port, agentNumber, "the named HTTP probe port was rewritten to the agent's number (it passes probes on, and answers them during a replace)");
  const client = `deploy/plain`;
  const viaService = await fetchFrom(client, `http://named.${ns}.svc.cluster.local/hello`);
  t.equal(viaService.remote, '127.0.0.1', 'the app saw the agent (loopback) as its caller');
  t.equal(viaService.pod, pod.metadata!.name);
  // Control: the app's own port, directly, sees the real caller.
  const plainPod = await podOf('plain');
  const direct = await fetchFrom(client, `http://${pod.status.podIP}:8080/direct`);
  t.equal(direct.remote, plainPod.status.podIP, 'without the agent the app sees the calling pod');
  const agentPort = await fetchFrom(client, `http://${pod.status.podIP}:9900/agent`);
  t.equal(agentPort.remote, '127.0.0.1');
  t.match(await agentLogs(pod.metadata!.name!), /traffic agent listening/);
});

t.test('numeric targetPort: the redirect sends the Service\'s traffic through the agent', async (t) => {
  const pod = await podOf('numeric');
  t.same((pod.spec!.initContainers ?? []).map((x) => x.name), ['rdbg-agent-init']);
  t.same(pod.spec!.containers![0].ports!.map((p) => [p.name, p.containerPort]), [['http', 8080]], 'the app is untouched');
  const viaService = await fetchFrom('deploy/plain', `http://numeric.${ns}.svc.cluster.local/hello`);
  t.equal(viaService.remote, '127.0.0.1', 'the app saw the agent as its caller');
  const direct = await fetchFrom('deploy/plain', `http://${pod.status.podIP}:8080/direct`);
  t.equal(direct.remote, '127.0.0.1', 'even the pod IP and app port lead through the agent');
  // Inside the pod, loopback still reaches the app directly (the agent's own path: no loop).
  const local = unmapped(JSON.parse((await c.kubectl(['-n', ns, 'exec', pod.metadata!.name!, '-c', 'app', '--', 'wget', '-qO-', 'http://127.0.0.1:8080/local'], { timeoutMs: 20_000 })).stdout) as Echo);
  t.equal(local.remote, '127.0.0.1');
});

t.test('probes keep the injected pods Ready, and nothing restarts', async (t) => {
  await new Promise((r) => setTimeout(r, 6000)); // several liveness periods (2 s, failureThreshold 2)
  for (const name of ['named', 'numeric']) {
    const pod = await podOf(name);
    const st = pod.status.containerStatuses;
    t.same(st.map((s) => [s.name, s.ready, s.restartCount]).sort(), [['app', true, 0], ['rdbg-agent', true, 0]], name);
  }
});

t.test('the agent has the app\'s env (ConfigMap, downward API, resource limits) and its token', async (t) => {
  const pod = await podOf('named');
  const env = (await c.kubectl(['-n', ns, 'exec', pod.metadata!.name!, '-c', 'rdbg-agent', '--', 'env'])).stdout;
  const vars = Object.fromEntries(env.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  t.equal(vars.GREETING, 'hello', 'configMapKeyRef');
  t.equal(vars.CFG_color, 'blue', 'envFrom with prefix');
  t.equal(vars.POD_NAME, pod.metadata!.name, 'fieldRef');
  t.equal(vars.MEM_MB, '96', 'resourceFieldRef: the app container\'s limit, not the agent\'s');
  t.equal(vars.RDBG_MANAGER, 'rdbg-manager.rdbg-webhook-helper-none:8081');
  const token = (await c.kubectl(['-n', ns, 'exec', pod.metadata!.name!, '-c', 'rdbg-agent', '--', 'sh', '-c', 'cat "$RDBG_AGENT_TOKEN_FILE"'])).stdout;
  const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()) as { aud: string[]; 'kubernetes.io'?: { pod?: { name: string } } };
  t.same(claims.aud, ['rdbg'], 'audience rdbg');
  t.equal(claims['kubernetes.io']?.pod?.name, pod.metadata!.name, 'bound to the pod');
  // What the agent reports as the app's environment (the function it runs, in its own process env)
  // is exactly the app container's environment, apart from what each image sets for itself.
  const envOf = async (container: string, cmd: string[]): Promise<Record<string, string>> => {
    const out = (await c.kubectl(['-n', ns, 'exec', pod.metadata!.name!, '-c', container, '--', ...cmd])).stdout;
    return Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  };
  // As agent/main.ts computes it: the agent's own variables (RDBG_AGENT_ENV, set by the webhook) left out.
  const script = "const own = require('/app/dist/src/core/config').readConfig('agent', process.env).agentEnv;" +
    " for (const [k, v] of Object.entries(require('/app/dist/agent/traffic-agent').appEnvironment(process.env, own))) console.log(k + '=' + v)";
  const reported = await envOf('rdbg-agent', ['node', '-e', script]);
  const appEnv = await envOf('app', ['env']);
  for (const k of ['PATH', 'HOME']) delete appEnv[k]; // the app image's and the runtime's, not the pod spec's
  t.same(reported, appEnv, 'the reported env equals the app container\'s');
  const id = (await c.kubectl(['-n', ns, 'exec', pod.metadata!.name!, '-c', 'rdbg-agent', '--', 'id', '-u'])).stdout.trim();
  t.equal(id, '65532', 'the agent runs as 65532');
});

t.test('a pod without the marks is untouched', async (t) => {
  const pod = await podOf('plain');
  t.same(pod.spec!.containers!.map((x) => x.name), ['app']);
  t.equal(pod.spec!.initContainers, undefined);
  t.notOk(pod.metadata!.annotations?.['rdbg.dev/injected']);
  t.same(pod.spec!.containers![0].ports!.map((p) => p.name), ['http']);
});

t.test('a port that does not exist: the pod is created without an agent, and the user is warned', async (t) => {
  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'wrong-port', ...marked('wrong-port', 'grpc') }, spec: { containers: [{ name: 'app', image: ECHO, imagePullPolicy: 'Never', ports: [{ name: 'http', containerPort: 8080 }] }] } };
  const r = await c.kubectl(['-n', ns, 'create', '-f', '-'], { input: JSON.stringify(pod) });
  t.match(r.stderr, 'Warning: rdbg: no agent injected into pod wrong-port: no container has a port named "grpc" (ports: http)');
  const created = await c.kubectlJson<Pod>(['-n', ns, 'get', 'pod', 'wrong-port']);
  t.same(created.spec!.containers!.map((x) => x.name), ['app']);
  t.match(runnerLog, /no agent injected/);
});

t.test('failurePolicy Ignore: with the webhook down, marked pods are still created (without agent)', async (t) => {
  await stopRunner();
  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'webhook-down', ...marked('webhook-down', 'http') }, spec: { containers: [{ name: 'app', image: ECHO, imagePullPolicy: 'Never', ports: [{ name: 'http', containerPort: 8080 }] }] } };
  const t0 = Date.now();
  await c.kubectl(['-n', ns, 'create', '-f', '-'], { input: JSON.stringify(pod), timeoutMs: 30_000 });
  const ms = Date.now() - t0;
  t.comment(`created in ${ms} ms with the webhook down`);
  const created = await c.kubectlJson<Pod>(['-n', ns, 'get', 'pod', 'webhook-down']);
  t.same(created.spec!.containers!.map((x) => x.name), ['app']);
  t.ok(ms < 15_000, 'within the webhook timeout, not stuck');
});
