// rdbg manager install / upgrade and rdbg uninstall --all against the real
// cluster: install then uninstall leaves every object of every listable
// resource as it was; a second install changes nothing; upgrade renews the
// certificate and rolls the manager; uninstall restores marked workloads.
//
// The image is $RDBG_INSTALL_IMAGE (default localhost/rdbg:<IMAGE_TAG>), built
// by `RDBG_IMAGE_TAG=... test/cluster/images.sh sync rdbg`.
/* eslint-disable @typescript-eslint/no-explicit-any -- kubectl's JSON, walked generically */
import { randomBytes, X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import t from 'tap';
import { cluster, exec, repoRoot, sampleApp, waitFor, type Cluster } from './cluster-helper';

const SYSTEM_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

function rdbg(c: Cluster, args: string[], check = true): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return c.laptop(join(repoRoot(), 'dist/bin/rdbg.js'), [...args, '--kubeconfig', c.info.ADMIN_KUBECONFIG],
    { timeoutMs: 240_000, check });
}

type Obj = { apiVersion: string; kind: string; metadata: Record<string, any>; [k: string]: any };
const keyOf = (o: Obj): string => `${o.apiVersion} ${o.kind} ${o.metadata.namespace ?? '-'} ${o.metadata.name}`;

/** Every object of every resource that can be listed, in all namespaces, with the admin kubeconfig. */
async function snapshot(c: Cluster): Promise<Map<string, Obj>> {
  const res = (await c.kubectl(['api-resources', '--verbs=list', '-o', 'name'])).stdout.trim().split('\n');
  const r = await c.kubectl(['get', res.join(','), '-A', '-o', 'json'], { timeoutMs: 120_000 });
  const items = (JSON.parse(r.stdout) as { items: Obj[] }).items;
  return new Map(items.map((o) => [keyOf(o), o]));
}

/**
 * The differences between two snapshots that install + uninstall could have
 * caused. Left out, each for a reason:
 * - Events (v1 and events.k8s.io): a record of what happened, written by every
 *   controller and the kubelet; they expire by themselves (1 h).
 * - Leases: heartbeats of the kubelet, the apiserver and leader election, renewed every few seconds.
 * - Endpoints and EndpointSlices outside our namespaces: they follow pods of other Services.
 * - The Node's status (kubelet heartbeats, image list) and the apiserver's own
 *   status writes on FlowSchemas, PriorityLevelConfigurations and APIServices:
 *   only .status, resourceVersion and managedFields are ignored there.
 * - Other sessions' work: the cluster is shared, so objects in namespaces that are
 *   neither ours nor a system namespace, those Namespace objects, and cluster-scoped
 *   objects that mention none of our namespaces (our cluster-scoped objects all carry
 *   the namespace in their name or their references) change without us.
 * Everything else must be identical down to the resourceVersion.
 */
function relevantDiff(before: Map<string, Obj>, after: Map<string, Obj>, ours: (text: string) => boolean): string[] {
  const statusOnly = new Set(['Node', 'FlowSchema', 'PriorityLevelConfiguration', 'APIService']);
  const skip = (o: Obj): boolean => {
    const ns = o.metadata.namespace as string | undefined;
    if (o.kind === 'Event' || o.kind === 'Lease') return true;
    if ((o.kind === 'Endpoints' || o.kind === 'EndpointSlice') && !ours(ns ?? '')) return true;
    if (ns) return !ours(ns) && !SYSTEM_NAMESPACES.includes(ns);
    if (o.kind === 'Namespace') return !ours(o.metadata.name) && !SYSTEM_NAMESPACES.includes(o.metadata.name);
    if (statusOnly.has(o.kind)) return false;
    return !ours(JSON.stringify(o));
  };
  const strip = (o: Obj): string => {
    if (!statusOnly.has(o.kind)) return o.metadata.resourceVersion as string;
    const { status: _s, ...rest } = o;
    const { resourceVersion: _r, managedFields: _m, ...meta } = o.metadata;
    return JSON.stringify({ ...rest, metadata: meta });
  };
  const out: string[] = [];
  for (const [k, o] of before) {
    const n = after.get(k);
    if (skip(o) && (!n || skip(n))) continue;
    if (!n) out.push(`gone: ${k}`);
    else if (strip(o) !== strip(n)) out.push(`changed: ${k}`);
  }
  for (const [k, n] of after) if (!before.has(k) && !skip(n)) out.push(`new: ${k}`);
  return out;
}

const imageOf = (c: Cluster): string => process.env.RDBG_INSTALL_IMAGE ?? c.image('rdbg');

t.test('install, install again, upgrade, uninstall --all twice: the cluster is as before', async (t) => {
  const c = await cluster();
  const ns = `rdbg-install-${randomBytes(3).toString('hex')}`;
  const dryNs = `${ns}-dry`;
  const ours = (text: string): boolean => text.includes(ns);
  t.teardown(async () => {
    // a failed run must not leave cluster-scoped objects behind
    await rdbg(c, ['uninstall', '--all', '--namespace', ns, '--agent-namespace', ns], false);
  });

  const before = await snapshot(c);

  // --dry-run: manifests on stdout, nothing in the cluster
  const dry = await rdbg(c, ['manager', 'install', '--dry-run', '-o', 'yaml', '--namespace', dryNs, '--image', imageOf(c)]);
  for (const kind of ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'Secret', 'Service', 'Deployment', 'MutatingWebhookConfiguration']) {
    t.match(dry.stdout, new RegExp(`^kind: ${kind}$`, 'm'), `dry-run prints the ${kind}`);
  }
  const dryGone = await c.kubectl(['get', 'namespace', dryNs], { check: false });
  t.not(dryGone.code, 0, 'dry-run created no namespace');

  // install
  let t0 = Date.now();
  const inst = await rdbg(c, ['manager', 'install', '--namespace', ns, '--image', imageOf(c), '--grant-user', 'alice@example.com']);
  const installS = (Date.now() - t0) / 1000;
  t.match(inst.stdout, /rdbg manager installed/);
  t.match(inst.stdout, /rdbg-developer granted to user alice@example\.com in every namespace/);
  t.match(inst.stderr, /rolled out \(1\/1 available\)/, 'progress lines while waiting for the rollout');
  const dep = await c.kubectlJson<any>(['-n', ns, 'get', 'deployment', 'rdbg-manager']);
  t.equal(dep.status.readyReplicas, 1, 'the manager is ready when install returns');
  const ns1 = await c.kubectlJson<any>(['get', 'namespace', ns]);
  t.equal(ns1.metadata.annotations['rdbg.dev/created-namespace'], 'true');

  // the manager runs as uid 65532 and can read its files and the TLS secret
  const id = await c.execIn(ns, 'deploy/rdbg-manager', ['sh', '-c', 'id -u; cat /var/run/rdbg/tls/tls.crt /var/run/rdbg/tls/tls.key >/dev/null && echo readable']);
  t.match(id.stdout, /^65532\nreadable/, 'non-root, TLS files readable');

  // the live webhook configuration
  const mwc = await c.kubectlJson<any>(['get', 'mutatingwebhookconfiguration', `rdbg-agent-injector-${ns}`]);
  const wh = mwc.webhooks[0];
  t.equal(wh.failurePolicy, 'Ignore');
  t.equal(wh.sideEffects, 'None');
  t.same(wh.namespaceSelector.matchExpressions, [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', ns] }]);
  const secret = await c.kubectlJson<any>(['-n', ns, 'get', 'secret', 'rdbg-webhook-tls']);
  t.equal(wh.clientConfig.caBundle, secret.data['ca.crt'], 'caBundle = the Secret\'s ca.crt');

  // least privilege: ask the apiserver what the manager's ServiceAccount may do
  const sa = `system:serviceaccount:${ns}:rdbg-manager`;
  const can = async (verb: string, res: string): Promise<string> =>
    (await c.kubectl(['auth', 'can-i', verb, res, '-A', '--as', sa], { check: false })).stdout.trim();
  t.equal(await can('create', 'pods'), 'no', 'cannot create pods');
  t.equal(await can('patch', 'deployments.apps'), 'no', 'cannot patch deployments');
  t.equal(await can('get', 'secrets'), 'no', 'cannot read secrets');
  t.equal(await can('delete', 'pods'), 'no', 'cannot delete pods');
  t.equal(await can('watch', 'pods'), 'yes', 'watches pods');
  t.equal(await can('list', 'endpointslices.discovery.k8s.io'), 'yes', 'lists endpointslices');
  t.equal(await can('create', 'tokenreviews.authentication.k8s.io'), 'yes', 'reviews agent tokens');

  // the granted developer (cluster-wide): what doctor checks, and no secrets, exec or RBAC
  const as = async (verb: string, res: string, where: string[]): Promise<string> =>
    (await c.kubectl(['auth', 'can-i', verb, res, ...where, '--as', 'alice@example.com'], { check: false })).stdout.trim();
  t.equal(await as('patch', 'deployments.apps', ['-n', 'default']), 'yes', 'alice patches deployments anywhere');
  t.equal(await as('create', 'pods', ['--subresource=portforward', '-n', ns]), 'yes', 'alice port-forwards to the manager');
  t.equal(await as('get', 'secrets', ['-n', 'default']), 'no', 'alice reads no secret');
  t.equal(await as('create', 'pods', ['--subresource=exec', '-n', 'default']), 'no', 'alice execs into no pod');
  t.equal(await as('create', 'pods', ['--subresource=portforward', '-n', 'default']), 'no', 'nor port-forwards to any pod but the manager');
  t.equal(await as('create', 'rolebindings.rbac.authorization.k8s.io', ['-n', 'default']), 'no', 'alice grants nothing');

  // install again: nothing changes, the manager does not restart
  const ids = async (): Promise<Map<string, string>> => {
    const s = await snapshot(c);
    return new Map([...s].filter(([k, o]) => k.includes(ns) && o.kind !== 'Event' && o.kind !== 'Lease').map(([k, o]) => [k, o.metadata.resourceVersion]));
  };
  const rv1 = await ids();
  // the comparison sees what install made: it can fail
  const during = relevantDiff(before, await snapshot(c), ours);
  for (const k of [`new: rbac.authorization.k8s.io/v1 ClusterRole - rdbg-manager-${ns}`, `new: v1 Namespace - ${ns}`,
    `new: admissionregistration.k8s.io/v1 MutatingWebhookConfiguration - rdbg-agent-injector-${ns}`, `new: apps/v1 Deployment ${ns} rdbg-manager`]) {
    t.ok(during.includes(k), `the snapshot comparison sees ${k}`);
  }
  t.ok(during.some((d) => / IPAddress - /.test(d)), 'and the Service\'s ClusterIP allocation (an IPAddress object)');
  const podBefore = (await c.kubectlJson<any>(['-n', ns, 'get', 'pods', '-l', 'app.kubernetes.io/component=manager'])).items.map((p: any) => p.metadata.name);
  const again = await rdbg(c, ['manager', 'install', '--namespace', ns, '--image', imageOf(c)]);
  t.notMatch(again.stderr, /created|configured/, 'second install creates and configures nothing');
  t.same(await ids(), rv1, 'second install: every object keeps its resourceVersion');
  const podAgain = (await c.kubectlJson<any>(['-n', ns, 'get', 'pods', '-l', 'app.kubernetes.io/component=manager'])).items.map((p: any) => p.metadata.name);
  t.same(podAgain, podBefore, 'same manager pod');

  // upgrade: a new certificate everywhere, and a new manager pod that serves it
  t0 = Date.now();
  await rdbg(c, ['manager', 'upgrade', '--namespace', ns]);
  const upgradeS = (Date.now() - t0) / 1000;
  const secret2 = await c.kubectlJson<any>(['-n', ns, 'get', 'secret', 'rdbg-webhook-tls']);
  t.not(secret2.data['tls.crt'], secret.data['tls.crt'], 'new tls.crt');
  t.not(secret2.data['ca.crt'], secret.data['ca.crt'], 'new CA');
  const crt2 = new X509Certificate(Buffer.from(secret2.data['tls.crt'], 'base64'));
  t.ok(crt2.verify(new X509Certificate(Buffer.from(secret2.data['ca.crt'], 'base64')).publicKey), 'new cert signed by the new CA');
  const mwc2 = await c.kubectlJson<any>(['get', 'mutatingwebhookconfiguration', `rdbg-agent-injector-${ns}`]);
  t.equal(mwc2.webhooks[0].clientConfig.caBundle, secret2.data['ca.crt'], 'the webhook trusts the new CA');
  // (the old pod may still be terminating: rolled out means the new one is ready)
  const pods2 = (await c.kubectlJson<any>(['-n', ns, 'get', 'pods', '-l', 'app.kubernetes.io/component=manager'])).items
    .filter((p: any) => !p.metadata.deletionTimestamp);
  t.equal(pods2.length, 1, 'one live manager pod after the rollout');
  t.ok(pods2[0].status.conditions.some((x: any) => x.type === 'Ready' && x.status === 'True'), 'and it is ready');
  t.notOk(podBefore.includes(pods2[0].metadata.name), 'the manager was rolled');
  const served = await c.execIn(ns, pods2[0].metadata.name, ['cat', '/var/run/rdbg/tls/tls.crt']);
  t.equal(served.stdout, Buffer.from(secret2.data['tls.crt'], 'base64').toString(), 'the new pod mounts the new certificate');

  // uninstall --all, twice
  t0 = Date.now();
  const un = await rdbg(c, ['uninstall', '--all', '--namespace', ns, '--agent-namespace', ns]);
  const uninstallS = (Date.now() - t0) / 1000;
  t.match(un.stdout, /12 manager object\(s\)/, 'the manager\'s objects, the developer roles and alice\'s two bindings');
  const un2 = await rdbg(c, ['uninstall', '--all', '--namespace', ns, '--agent-namespace', ns]);
  t.equal(un2.code, 0);
  t.match(un2.stdout, /Nothing to remove/);

  const after = await snapshot(c);
  const diff = relevantDiff(before, after, (text) => ours(text));
  t.same(diff, [], `install + upgrade + uninstall left no trace (${before.size} objects before, ${after.size} after, whole cluster)`);
  t.comment(`timings: install ${installS.toFixed(1)} s, upgrade ${upgradeS.toFixed(1)} s, uninstall ${uninstallS.toFixed(1)} s`);
});

t.test('uninstall --all takes rdbg\'s marks off a workload: the template is as before', async (t) => {
  const c = await cluster();
  const ns = await c.namespace(t, 'install-marks');
  await c.apply(ns, sampleApp({ name: 'web', image: c.image('echo-http'), port: 8080, protocolName: 'http' }));
  await c.rollout(ns, 'web');
  const original = await c.kubectlJson<any>(['-n', ns, 'get', 'deployment', 'web']);

  // the marks as the CLI sets them (docs/kubernetes.md, "Injection" and "Intercept permission")
  const claim = 'a'.repeat(64);
  await c.kubectl(['-n', ns, 'patch', 'deployment', 'web', '--type', 'merge', '-p', JSON.stringify({
    metadata: { annotations: { [`rdbg.dev/claim-${claim.slice(0, 12)}`]: claim } },
    spec: { template: { metadata: { labels: { 'rdbg.dev/inject': 'enabled' }, annotations: { 'rdbg.dev/agent-port': 'http', 'rdbg.dev/workload': 'Deployment/web' } } } },
  })]);
  const marked = await c.kubectlJson<any>(['-n', ns, 'get', 'deployment', 'web']);
  t.equal(marked.spec.template.metadata.labels['rdbg.dev/inject'], 'enabled');

  // no manager in this namespace: uninstall still removes the marks
  const un = await rdbg(c, ['uninstall', '--all', '--namespace', `${ns}-none`, '--agent-namespace', ns]);
  t.match(un.stderr, new RegExp(`Deployment/${ns}/web: rdbg marks removed`));
  t.match(un.stdout, /Removed rdbg marks from 1 workload/);
  const restored = await c.kubectlJson<any>(['-n', ns, 'get', 'deployment', 'web']);
  t.same(restored.spec.template, original.spec.template, 'pod template exactly as before');
  const annotations = Object.keys(restored.metadata.annotations ?? {});
  t.same(annotations.filter((k) => k.startsWith('rdbg.dev/')), [], 'no claim annotations left');
  t.same(annotations.sort(), Object.keys(original.metadata.annotations ?? {}).sort(), 'the workload\'s other annotations untouched');

  // the Deployment goes back to its original ReplicaSet's pods
  await c.rollout(ns, 'web');
  await waitFor('pods without the rdbg label', async () => {
    const pods = (await c.kubectlJson<any>(['-n', ns, 'get', 'pods', '-l', 'app=web'])).items;
    return pods.length > 0 && pods.every((p: any) => !p.metadata.labels['rdbg.dev/inject']);
  });
  const again = await rdbg(c, ['uninstall', '--all', '--namespace', `${ns}-none`, '--agent-namespace', ns]);
  t.match(again.stdout, /Nothing to remove/, 'a second uninstall finds nothing');
});

t.test('the Helm chart installs a working manager that rdbg uninstall --all removes', async (t) => {
  const c = await cluster();
  const ns = `rdbg-install-helm-${randomBytes(3).toString('hex')}`;
  const helm = (await exec('bash', [join(repoRoot(), 'scripts/helm.sh')], { timeoutMs: 900_000 })).stdout.trim().split('\n').pop()!;
  const image = imageOf(c);
  const h = (args: string[]): ReturnType<Cluster['laptop']> =>
    c.laptop(helm, ['--kubeconfig', c.info.ADMIN_KUBECONFIG, ...args], { timeoutMs: 180_000 });
  t.teardown(async () => {
    await c.laptop(helm, ['--kubeconfig', c.info.ADMIN_KUBECONFIG, 'uninstall', 'rdbg', '-n', ns], { check: false });
    await c.kubectl(['delete', 'namespace', ns, '--wait=false', '--ignore-not-found'], { check: false });
  });
  await h(['install', 'rdbg', join(repoRoot(), 'charts/rdbg'), '-n', ns, '--create-namespace', '--wait', '--timeout', '120s',
    '--set', `image.repository=${image.slice(0, image.lastIndexOf(':'))}`, '--set', `image.tag=${image.slice(image.lastIndexOf(':') + 1)}`]);
  const dep = await c.kubectlJson<any>(['-n', ns, 'get', 'deployment', 'rdbg-manager']);
  t.equal(dep.status.readyReplicas, 1, 'helm install: the manager is ready');
  const secret = await c.kubectlJson<any>(['-n', ns, 'get', 'secret', 'rdbg-webhook-tls']);
  const mwc = await c.kubectlJson<any>(['get', 'mutatingwebhookconfiguration', `rdbg-agent-injector-${ns}`]);
  t.equal(mwc.webhooks[0].clientConfig.caBundle, secret.data['ca.crt'], 'helm: caBundle = the Secret\'s ca.crt');

  const un = await rdbg(c, ['uninstall', '--all', '--namespace', ns, '--agent-namespace', ns]);
  t.match(un.stdout, /9 manager object\(s\)/, 'all but the namespace, which helm made');
  const left = await c.kubectl(['get', `clusterrole/rdbg-manager-${ns}`, `clusterrolebinding/rdbg-manager-${ns}`,
    `mutatingwebhookconfiguration/rdbg-agent-injector-${ns}`, '--ignore-not-found', '-o', 'name']);
  t.equal(left.stdout.trim(), '', 'no cluster-scoped objects left');
  t.equal((await c.kubectl(['get', 'namespace', ns], { check: false })).code, 0, 'the namespace rdbg did not create stays');
});
