// The injector over many pod shapes: each patch is applied (RFC 6902, as the
// apiserver does) and the assertions are about the pod that results.
import t, { type Test } from 'tap';
import { injectPod, isPortName, renamedPort, type InjectSettings } from '../../manager/kube/inject';
import type { Container, EnvVar, Pod } from '../../manager/kube/pod';
import { applyPatch } from '../helpers/json-patch';

const S: InjectSettings = {
  image: 'localhost/rdbg:test',
  managerNamespace: 'rdbg',
  managerAddress: 'rdbg-manager.rdbg:8081',
  agentPortBase: 9900,
  version: '0.1.0',
  pullPolicy: 'IfNotPresent',
};

function pod(containers: Container[], opts: { port?: string; extra?: Partial<NonNullable<Pod['spec']>>; ann?: Record<string, string>; labels?: Record<string, string> } = {}): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: 'echo-7d9f-',
      labels: opts.labels ?? { app: 'echo', 'rdbg.dev/inject': 'enabled' },
      annotations: opts.ann ?? { 'rdbg.dev/agent-port': opts.port ?? 'http', 'rdbg.dev/workload': 'Deployment/echo' },
    },
    spec: { containers, ...(opts.extra ?? {}) },
  };
}

const app = (over: Partial<Container> = {}): Container => ({
  name: 'app',
  image: 'echo:1',
  ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
  ...over,
});

/** Injects and applies; fails the test when the pod is not injected. */
function injected(t: Test, p: Pod, ns = 'shop'): Pod {
  const d = injectPod(p, ns, S);
  if (!d.inject) {
    t.fail(`not injected: ${d.reason}`);
    throw new Error(d.reason);
  }
  return applyPatch(p, d.patch);
}

const containerOf = (p: Pod, name: string): Container => {
  const c = p.spec!.containers!.find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
};
const envOf = (c: Container, name: string): EnvVar[] => (c.env ?? []).filter((e) => e.name === name);
const arg = (c: Container, flag: string): string | undefined => c.args?.[c.args.indexOf(flag) + 1];

t.test('named targetPort: the name moves to the agent, the app keeps its number', async (t) => {
  const out = injected(t, pod([app()]));
  const a = containerOf(out, 'app');
  const agent = containerOf(out, 'rdbg-agent');
  t.same(a.ports, [{ name: 'rdbg-http', containerPort: 8080, protocol: 'TCP' }]);
  t.same(agent.ports, [{ name: 'http', containerPort: 9900, protocol: 'TCP' }]);
  t.same(agent.args, ['agent', 'run', '--workload', 'echo', '--namespace', 'shop', '--app-port', '8080', '--listen-port', '9900']);
  t.equal(agent.image, S.image);
  t.equal(agent.imagePullPolicy, 'IfNotPresent');
  t.equal(out.spec!.initContainers, undefined, 'no init container for a named port');
  t.equal(out.metadata!.annotations!['rdbg.dev/injected'], '0.1.0');
  // Everything the Service can resolve "http" to, across the pod: only the agent's port.
  const owners = out.spec!.containers!.flatMap((c) => (c.ports ?? []).filter((p) => p.name === 'http').map((p) => `${c.name}:${p.containerPort}`));
  t.same(owners, ['rdbg-agent:9900']);
});

t.test('the agent: token volume, own env, restricted security context, small requests, readiness on its port', async (t) => {
  const out = injected(t, pod([app()]));
  const agent = containerOf(out, 'rdbg-agent');
  t.same(out.spec!.volumes, [{
    name: 'rdbg-token',
    projected: { sources: [{ serviceAccountToken: { audience: 'rdbg', expirationSeconds: 3600, path: 'token' } }] },
  }]);
  t.same(agent.volumeMounts, [{ name: 'rdbg-token', mountPath: '/var/run/secrets/rdbg', readOnly: true }]);
  t.same(envOf(agent, 'RDBG_MANAGER'), [{ name: 'RDBG_MANAGER', value: 'rdbg-manager.rdbg:8081' }]);
  t.same(envOf(agent, 'RDBG_AGENT_TOKEN_FILE'), [{ name: 'RDBG_AGENT_TOKEN_FILE', value: '/var/run/secrets/rdbg/token' }]);
  t.same(envOf(agent, 'POD_NAME')[0].valueFrom, { fieldRef: { fieldPath: 'metadata.name' } });
  t.same(envOf(agent, 'POD_IP')[0].valueFrom, { fieldRef: { fieldPath: 'status.podIP' } });
  t.same(agent.securityContext, {
    runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' },
  });
  const req = (agent.resources as { requests: Record<string, string> }).requests;
  t.same(req, { cpu: '10m', memory: '48Mi' });
  t.same(agent.readinessProbe, { tcpSocket: { port: 9900 }, periodSeconds: 1 });
});

t.test('named probes and hooks of the app resolve to numbers after the rename: HTTP probes the agent\'s, the rest the app\'s', async (t) => {
  const out = injected(t, pod([app({
    ports: [{ name: 'http', containerPort: 8080 }, { name: 'metrics', containerPort: 9090 }],
    readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 1 },
    livenessProbe: { tcpSocket: { port: 'http' } },
    startupProbe: { httpGet: { path: '/m', port: 'metrics' } },
    lifecycle: { preStop: { httpGet: { path: '/drain', port: 'http' } } },
  })]));
  const a = containerOf(out, 'app');
  t.same(a.readinessProbe, { httpGet: { path: '/ready', port: 9900 }, periodSeconds: 1 }, 'HTTP: through the agent, which answers it during a replace');
  t.same(a.livenessProbe, { tcpSocket: { port: 8080 } }, 'TCP: the app\'s own socket');
  const https = containerOf(injected(t, pod([app({ livenessProbe: { httpGet: { path: '/l', port: 'http', scheme: 'HTTPS' } } })])), 'app');
  t.same(https.livenessProbe, { httpGet: { path: '/l', port: 8080, scheme: 'HTTPS' } }, 'HTTPS: the app (the agent does not speak TLS)');
  t.same(a.startupProbe, { httpGet: { path: '/m', port: 'metrics' } }, 'another named port still exists: untouched');
  t.same(a.lifecycle, { preStop: { httpGet: { path: '/drain', port: 8080 } } });
  // Every named port a probe of the app uses must exist among the app's own ports (the kubelet's rule).
  const names = new Set((a.ports ?? []).map((p) => p.name));
  for (const pr of [a.readinessProbe, a.livenessProbe, a.startupProbe]) {
    const port = pr?.httpGet?.port ?? pr?.tcpSocket?.port;
    if (typeof port === 'string') t.ok(names.has(port), `probe port ${port} resolves`);
  }
});

t.test('port names: 15 characters at most, no trailing dash', async (t) => {
  t.equal(renamedPort('http'), 'rdbg-http');
  t.equal(renamedPort('web-frontend'), 'rdbg-web-fronte');
  t.equal(renamedPort('admin-api-port'), 'rdbg-admin-api');
  for (const n of ['http', 'web-frontend', 'admin-api-port', 'abcdefghijklmno', 'a1']) t.ok(isPortName(renamedPort(n)), renamedPort(n));
  const out = injected(t, pod([app({ ports: [{ name: 'web-frontend', containerPort: 3000 }] })], { port: 'web-frontend' }));
  t.same(containerOf(out, 'app').ports, [{ name: 'rdbg-web-fronte', containerPort: 3000 }]);
  t.same(containerOf(out, 'rdbg-agent').ports, [{ name: 'web-frontend', containerPort: 9900, protocol: 'TCP' }]);
});

t.test('numeric targetPort: an init container redirects the port to the agent', async (t) => {
  const existingInit: Container = { name: 'migrate', image: 'm:1' };
  const out = injected(t, pod([app()], { port: '8080', extra: { initContainers: [existingInit] } }));
  const init = out.spec!.initContainers!;
  t.same(init.map((c) => c.name), ['rdbg-agent-init', 'migrate'], 'the redirect is in place before anything else runs');
  const i = init[0];
  t.same(i.command!.slice(0, 2), ['/bin/sh', '-c']);
  const script = i.command![2];
  t.match(script, /^\/usr\/sbin\/iptables -t nat -C PREROUTING (.+) 2>\/dev\/null \|\| \/usr\/sbin\/iptables -t nat -A PREROUTING \1$/);
  t.match(script, '-p tcp --dport 8080 ! -i lo');
  t.match(script, '-j REDIRECT --to-ports 9900');
  t.same(i.securityContext, {
    runAsNonRoot: false, runAsUser: 0, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'], add: ['NET_ADMIN'] }, seccompProfile: { type: 'RuntimeDefault' },
  });
  t.same(containerOf(out, 'app').ports, [{ name: 'http', containerPort: 8080, protocol: 'TCP' }], 'app ports unchanged');
  const agent = containerOf(out, 'rdbg-agent');
  t.same(agent.ports, [{ name: 'rdbg-agent', containerPort: 9900, protocol: 'TCP' }]);
  t.equal(arg(agent, '--app-port'), '8080');
  t.equal(arg(agent, '--listen-port'), '9900');
});

t.test('numeric port no container declares: the only container owns it; with several, no agent', async (t) => {
  const one = injected(t, pod([app({ ports: undefined })], { port: '5000' }));
  t.equal(arg(containerOf(one, 'rdbg-agent'), '--app-port'), '5000');
  const d = injectPod(pod([app({ ports: undefined }), { name: 'side', image: 's' }], { port: '5000' }), 'shop', S);
  t.equal(d.inject, false);
  if (!d.inject) {
    t.ok(d.warn);
    t.match(d.reason, /not declared by any container/);
  }
});

t.test('the agent port skips ports the pod already uses', async (t) => {
  const out = injected(t, pod([app({ ports: [{ name: 'http', containerPort: 8080 }, { name: 'x', containerPort: 9900 }] }), { name: 'side', image: 's', ports: [{ containerPort: 9901 }] }]));
  const agent = containerOf(out, 'rdbg-agent');
  t.same(agent.ports![0].containerPort, 9902);
  t.equal(arg(agent, '--listen-port'), '9902');
});

t.test('the port the annotation names does not exist: no injection, a warning saying why', async (t) => {
  const p = pod([app()], { port: 'grpc' });
  const d = injectPod(p, 'shop', S);
  t.equal(d.inject, false);
  if (!d.inject) {
    t.ok(d.warn, 'the user must hear about it');
    t.match(d.reason, 'no container has a port named "grpc" (ports: http)');
  }
});

t.test('already injected: no second agent (idempotent)', async (t) => {
  const once = injected(t, pod([app()]));
  const again = injectPod(once, 'shop', S);
  t.equal(again.inject, false);
  if (!again.inject) t.notOk(again.warn, 'silent');
  t.equal(once.spec!.containers!.filter((c) => c.name === 'rdbg-agent').length, 1);
  // A pod with the agent but without our annotation (e.g. copied by hand) is also left alone.
  const hand = pod([app(), { name: 'rdbg-agent', image: 'x' }]);
  t.equal(injectPod(hand, 'shop', S).inject, false);
});

t.test('pods without the marks are untouched, without a warning', async (t) => {
  const d = injectPod(pod([app()], { labels: { app: 'echo' } }), 'shop', S);
  t.same(d, { inject: false, reason: 'label rdbg.dev/inject=enabled is absent', warn: false });
  const noAnn = injectPod(pod([app()], { ann: {} }), 'shop', S);
  t.ok(!noAnn.inject && noAnn.warn && /agent-port is missing/.test(noAnn.reason));
  const noWl = injectPod(pod([app()], { ann: { 'rdbg.dev/agent-port': 'http' } }), 'shop', S);
  t.ok(!noWl.inject && noWl.warn && /rdbg.dev\/workload/.test(noWl.reason));
});

t.test('several containers: the one owning the port; its env, not the others\'', async (t) => {
  const side: Container = { name: 'proxy', image: 'envoy', ports: [{ name: 'admin', containerPort: 15000 }], env: [{ name: 'SIDE', value: '1' }] };
  const web = app({ name: 'web', env: [{ name: 'WEB', value: '2' }] });
  const out = injected(t, pod([side, web]));
  t.same(containerOf(out, 'web').ports, [{ name: 'rdbg-http', containerPort: 8080, protocol: 'TCP' }]);
  t.same(containerOf(out, 'proxy').ports, side.ports, 'the other container is untouched');
  const agent = containerOf(out, 'rdbg-agent');
  t.same(envOf(agent, 'WEB'), [{ name: 'WEB', value: '2' }]);
  t.same(envOf(agent, 'SIDE'), []);
  t.same(out.spec!.containers!.map((c) => c.name), ['proxy', 'web', 'rdbg-agent']);
});

t.test('env and envFrom are copied so every value resolves as in the app', async (t) => {
  const env: EnvVar[] = [
    { name: 'LITERAL', value: 'x' },
    { name: 'FROM_CM', valueFrom: { configMapKeyRef: { name: 'cfg', key: 'k' } } },
    { name: 'FROM_SECRET', valueFrom: { secretKeyRef: { name: 'sec', key: 'password', optional: true } } },
    { name: 'MY_NS', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    { name: 'MEM', valueFrom: { resourceFieldRef: { resource: 'limits.memory', divisor: '1Mi' } } },
    { name: 'CPU_OTHER', valueFrom: { resourceFieldRef: { containerName: 'side', resource: 'requests.cpu' } } },
    { name: 'URL', value: 'http://$(MY_NS).svc' },
  ];
  const envFrom = [{ configMapRef: { name: 'cfg' } }, { prefix: 'S_', secretRef: { name: 'sec', optional: true } }];
  const out = injected(t, pod([app({ env, envFrom })]));
  const agent = containerOf(out, 'rdbg-agent');
  const copied = agent.env!.slice(0, env.length);
  t.same(copied.map((e) => e.name), env.map((e) => e.name), 'same order: $(VAR) references still see what precedes them');
  t.same(envOf(agent, 'FROM_CM'), [env[1]]);
  t.same(envOf(agent, 'FROM_SECRET'), [env[2]]);
  t.same(envOf(agent, 'MY_NS'), [env[3]]);
  t.same(envOf(agent, 'MEM')[0].valueFrom, { resourceFieldRef: { resource: 'limits.memory', divisor: '1Mi', containerName: 'app' } }, 'still the app\'s limit, not the agent\'s');
  t.same(envOf(agent, 'CPU_OTHER'), [env[5]]);
  t.same(agent.envFrom, envFrom);
  t.same(containerOf(out, 'app').env, env, 'the app\'s own env is not modified');
});

t.test('rdbg\'s own variables win a clash; the agent is told which are not the app\'s', async (t) => {
  const out = injected(t, pod([app({ env: [{ name: 'POD_NAME', value: 'mine' }, { name: 'RDBG_MANAGER', value: 'x' }, { name: 'PATH', value: '/opt/bin' }] })]));
  const agent = containerOf(out, 'rdbg-agent');
  t.same(envOf(agent, 'POD_NAME'), [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }]);
  t.same(envOf(agent, 'RDBG_MANAGER'), [{ name: 'RDBG_MANAGER', value: 'rdbg-manager.rdbg:8081' }]);
  t.same(envOf(agent, 'PATH'), [{ name: 'PATH', value: '/opt/bin' }]);
  const list = envOf(agent, 'RDBG_AGENT_ENV')[0].value!.split(',');
  t.same(list.sort(), ['HOME', 'NODE_ENV', 'POD_IP'], 'POD_NAME and PATH are the app\'s too; POD_IP, HOME, NODE_ENV are only the agent\'s');
});

t.test('pods the agent cannot serve are left alone with a warning', async (t) => {
  const udp = injectPod(pod([app({ ports: [{ name: 'dns', containerPort: 53, protocol: 'UDP' }] })], { port: 'dns' }), 'shop', S);
  t.ok(!udp.inject && udp.warn && /TCP ports only/.test(udp.reason), 'UDP');
  const host = injectPod(pod([app()], { extra: { hostNetwork: true } }), 'shop', S);
  t.ok(!host.inject && host.warn && /host network/.test(host.reason), 'hostNetwork');
  const bad = injectPod(pod([app()], { port: '70000' }), 'shop', S);
  t.ok(!bad.inject && bad.warn, 'out-of-range number');
  const dup = injectPod(pod([app(), { name: 'b', image: 'b', ports: [{ containerPort: 8080 }] }], { port: '8080' }), 'shop', S);
  t.ok(!dup.inject && dup.warn && /several containers/.test(dup.reason), 'port declared twice');
});

t.test('existing volumes are kept and the token volume appended', async (t) => {
  const out = injected(t, pod([app()], { extra: { volumes: [{ name: 'data', emptyDir: {} }] } }));
  t.same(out.spec!.volumes!.map((v) => v.name), ['data', 'rdbg-token']);
});

t.test('annotation keys are escaped in the patch (rdbg.dev/injected)', async (t) => {
  const d = injectPod(pod([app()]), 'shop', S);
  t.ok(d.inject && d.patch.some((o) => o.path === '/metadata/annotations/rdbg.dev~1injected'));
});

t.test("one process namespace for the pod, and the agent runs as the app's user", async (t) => {
  const plain = injected(t, pod([app()]));
  t.equal(plain.spec!.shareProcessNamespace, true, 'the agent sees the app\'s processes (replace)');
  t.match(containerOf(plain, 'rdbg-agent').securityContext, { runAsUser: 65532, runAsNonRoot: true, capabilities: { drop: ['ALL'] } }, 'no user in the pod: the agent\'s own');
  const hostPid = injectPod(pod([app()], { extra: { hostPID: true } }), 'shop', S);
  t.ok(hostPid.inject && !applyPatch(pod([app()], { extra: { hostPID: true } }), hostPid.inject ? hostPid.patch : []).spec!.shareProcessNamespace,
    'hostPID: no shareProcessNamespace (the apiserver refuses both)');
  const byPod = injected(t, pod([app()], { extra: { securityContext: { runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000 } } }));
  t.match(containerOf(byPod, 'rdbg-agent').securityContext, { runAsUser: 1000, runAsGroup: 3000, runAsNonRoot: true, capabilities: { drop: ['ALL'] }, allowPrivilegeEscalation: false },
    "the pod's user");
  const byContainer = injected(t, pod([app({ securityContext: { runAsUser: 1001 } })], { extra: { securityContext: { runAsUser: 1000 } } }));
  t.match(containerOf(byContainer, 'rdbg-agent').securityContext, { runAsUser: 1001, runAsGroup: 1001 }, "the container's user wins");
  const root = injected(t, pod([app({ securityContext: { runAsUser: 0, capabilities: { drop: ['ALL'], add: ['NET_BIND_SERVICE'] } } })]));
  const rc = containerOf(root, 'rdbg-agent').securityContext!;
  t.match(rc, { runAsUser: 0, runAsNonRoot: false, capabilities: { drop: ['ALL'], add: ['NET_BIND_SERVICE'] }, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true },
    "root: the app's own capabilities");
  const rootDefault = injected(t, pod([app({ securityContext: { runAsUser: 0 } })]));
  t.notOk('capabilities' in containerOf(rootDefault, 'rdbg-agent').securityContext!, 'root with the runtime\'s capabilities: the agent gets the same');
});

t.test("the app's volumes, for the agent under /rdbg/app at the app's paths", async (t) => {
  const out = injected(t, pod([app({
    volumeMounts: [
      { name: 'config', mountPath: '/etc/config', readOnly: true },
      { name: 'kube-api-access-x1', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
      { name: 'scratch', mountPath: '/data/' },
      { name: 'config', mountPath: '/etc/app.yaml', subPath: 'app.yaml', readOnly: true },
    ],
  })]));
  t.same(containerOf(out, 'rdbg-agent').volumeMounts, [
    { name: 'rdbg-token', mountPath: '/var/run/secrets/rdbg', readOnly: true },
    { name: 'config', mountPath: '/rdbg/app/etc/config', readOnly: true },
    { name: 'kube-api-access-x1', mountPath: '/rdbg/app/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
    { name: 'scratch', mountPath: '/rdbg/app/data' },
    { name: 'config', mountPath: '/rdbg/app/etc/app.yaml', subPath: 'app.yaml', readOnly: true },
  ], 'read-only where the app\'s are; subPath kept');
  t.same(containerOf(out, 'app').volumeMounts!.length, 4, 'the app\'s own mounts untouched');
});
