// The objects of `rdbg manager install` (docs/kubernetes.md, "Objects"), the
// webhook certificate, the patch that removes rdbg's marks, and the Helm
// chart rendering the same objects as `--dry-run`.
/* eslint-disable @typescript-eslint/no-explicit-any -- the tests walk rendered Kubernetes objects of any shape */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { loadAllYaml } from '@kubernetes/client-node';
import { generateWebhookTls, reusableTls } from '../../src/kube/certs';
import {
  CONNECT_RULES, DEVELOPER_RULES, MANAGER_RULES, grantName, objectRef, renderObjects, tlsChecksum, type InstallOptions, type KubeObject,
} from '../../src/kube/manifests';
import { RIGHTS } from '../../src/cli/commands/doctor';
import { unmarkPatch, type MarkedWorkload } from '../../src/kube/marks';
import { VERSION } from '../../src/core/version';

const root = join(__dirname, '..', '..', '..');
const tls = generateWebhookTls('rdbg-install');
const opts = (o: Partial<InstallOptions> = {}): InstallOptions => ({
  namespace: 'rdbg-install', image: 'localhost/rdbg:install', version: VERSION, pullPolicy: 'IfNotPresent', tls, withNamespace: true, ...o,
});
const byKind = (objs: KubeObject[], kind: string): KubeObject & Record<string, any> => objs.find((o) => o.kind === kind) as never;

t.test('every object, with its name, labels and namespace', async (t) => {
  const objs = renderObjects(opts());
  t.same(objs.map(objectRef), [
    'Namespace/rdbg-install',
    'ServiceAccount/rdbg-install/rdbg-manager',
    'ClusterRole/rdbg-manager-rdbg-install',
    'ClusterRoleBinding/rdbg-manager-rdbg-install',
    'Secret/rdbg-install/rdbg-webhook-tls',
    'Service/rdbg-install/rdbg-manager',
    'ClusterRole/rdbg-developer-rdbg-install',
    'Role/rdbg-install/rdbg-developer',
    'Deployment/rdbg-install/rdbg-manager',
    'MutatingWebhookConfiguration/rdbg-agent-injector-rdbg-install',
  ], 'cluster-scoped names carry the namespace when it is not "rdbg"; the webhook comes last');
  for (const o of objs) {
    t.same(o.metadata.labels, { 'app.kubernetes.io/name': 'rdbg', 'app.kubernetes.io/managed-by': 'rdbg', 'app.kubernetes.io/version': VERSION }, objectRef(o));
  }
  t.equal(byKind(objs, 'Namespace').metadata.annotations!['rdbg.dev/created-namespace'], 'true');
  const plain = renderObjects(opts({ namespace: 'rdbg', withNamespace: false }));
  t.same(plain.filter((o) => !o.metadata.namespace).map((o) => o.metadata.name), ['rdbg-manager', 'rdbg-manager', 'rdbg-developer', 'rdbg-agent-injector'],
    'the default namespace keeps the plain names; no Namespace object for one that existed before');
});

t.test('RBAC: read-only plus token and access reviews, nothing else', async (t) => {
  const objs = renderObjects(opts());
  const role = byKind(objs, 'ClusterRole');
  t.equal(role.metadata.name, 'rdbg-manager-rdbg-install');
  t.same(role.rules, MANAGER_RULES);
  for (const r of role.rules as typeof MANAGER_RULES) {
    const reviews = r.resources.every((x) => x === 'tokenreviews' || x === 'subjectaccessreviews');
    t.same(r.verbs, reviews ? ['create'] : ['get', 'list', 'watch'], r.resources.join(','));
    t.notOk(r.resources.includes('secrets') || r.resources.includes('*'), 'no secrets, no wildcards');
  }
  const binding = byKind(objs, 'ClusterRoleBinding');
  t.same(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'rdbg-manager-rdbg-install' });
  t.same(binding.subjects, [{ kind: 'ServiceAccount', name: 'rdbg-manager', namespace: 'rdbg-install' }]);
});

type Rule = { apiGroups: string[]; resources: string[]; verbs: string[] };
const allows = (rules: Rule[], a: { verb?: string; group?: string; resource?: string; subresource?: string }): boolean =>
  rules.some((r) => r.apiGroups.includes(a.group ?? '') && r.verbs.includes(a.verb!) && r.resources.includes(a.subresource ? `${a.resource}/${a.subresource}` : a.resource!));

t.test("developers' rights: what doctor checks, and nothing that lets them take the manager over", async (t) => {
  for (const r of RIGHTS) {
    if (r.attrs.resource === 'mutatingwebhookconfigurations') continue; // an admin's right, not a developer's
    const rules = r.ns === 'mns' ? CONNECT_RULES : DEVELOPER_RULES;
    t.ok(allows(rules, r.attrs), `${r.ns === 'mns' ? 'Role (manager namespace)' : 'ClusterRole'} grants what doctor checks: ${r.why}`);
  }
  for (const r of CONNECT_RULES) {
    t.notOk(r.verbs.some((v) => ['patch', 'update', 'delete', 'deletecollection'].includes(v)) || (r.verbs.includes('create') && r.resources.some((x) => x !== 'pods/portforward')),
      `the manager's namespace: no write but port-forward (${r.resources.join(',')})`);
  }
  for (const r of [...CONNECT_RULES, ...DEVELOPER_RULES]) {
    t.notOk(r.resources.some((x) => ['secrets', '*', 'pods/exec', 'roles', 'rolebindings'].includes(x)), `no secrets, exec, RBAC or wildcards (${r.resources.join(',')})`);
  }
  const objs = renderObjects(opts({ grants: { users: ['alice@example.com'], groups: ['devs'], namespaces: ['team-a', 'team-b'] } }));
  const a = grantName('User', 'alice@example.com');
  const d = grantName('Group', 'devs');
  t.match(a, /^rdbg-developer-user-[0-9a-f]{10}$/);
  t.same(objs.filter((o) => /Role/.test(o.kind)).map(objectRef), [
    'ClusterRole/rdbg-manager-rdbg-install', 'ClusterRoleBinding/rdbg-manager-rdbg-install',
    'ClusterRole/rdbg-developer-rdbg-install', 'Role/rdbg-install/rdbg-developer',
    `RoleBinding/rdbg-install/${a}`, `RoleBinding/team-a/${a}`, `RoleBinding/team-b/${a}`,
    `RoleBinding/rdbg-install/${d}`, `RoleBinding/team-a/${d}`, `RoleBinding/team-b/${d}`,
  ], 'the roles, then per subject: connect in the manager namespace, the ClusterRole in each chosen namespace');
  const teamA = objs.find((o) => objectRef(o) === `RoleBinding/team-a/${a}`) as any;
  t.same(teamA.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'rdbg-developer-rdbg-install' });
  t.same(teamA.subjects, [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'alice@example.com' }]);
  t.equal(teamA.metadata.labels['rdbg.dev/developer-grant'], 'rdbg-install', 'labelled with the manager namespace (uninstall --all finds it)');
  const connect = objs.find((o) => objectRef(o) === `RoleBinding/rdbg-install/${d}`) as any;
  t.same(connect.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'rdbg-developer' });
  const wide = renderObjects(opts({ grants: { users: ['alice@example.com'], groups: [], namespaces: [] } }));
  t.same(wide.filter((o) => /Binding/.test(o.kind) && o.metadata.name.startsWith('rdbg-developer')).map(objectRef),
    [`RoleBinding/rdbg-install/${a}`, `ClusterRoleBinding/${a}-rdbg-install`], 'no namespace: cluster-wide');
  t.notOk(renderObjects(opts()).some((o) => /Binding/.test(o.kind) && o.metadata.name.startsWith('rdbg-developer')), 'no grant, no binding');
});

t.test('the Deployment: restricted pod security, TLS mounted, ready on 8081', async (t) => {
  const d = byKind(renderObjects(opts()), 'Deployment');
  const pod = d.spec.template.spec;
  const c = pod.containers[0];
  t.equal(d.spec.replicas, 1);
  t.equal(c.image, 'localhost/rdbg:install');
  t.same(c.args, ['manager', 'serve', '--kubernetes', '--metrics-listen', '0.0.0.0:9090']);
  t.match(d.spec.template.metadata.annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9090' }, 'Prometheus finds the metrics port');
  t.same(pod.securityContext, {
    runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' },
    // the one sysctl is on Kubernetes' "safe" list, which Pod Security's baseline and restricted profiles allow
    sysctls: [{ name: 'net.ipv4.ip_local_port_range', value: '1024 65535' }],
  });
  t.same(c.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
  t.same(c.readinessProbe.tcpSocket, { port: 8081 });
  t.same(c.volumeMounts[0], { name: 'tls', mountPath: '/var/run/rdbg/tls', readOnly: true });
  t.equal(pod.volumes[0].secret.secretName, 'rdbg-webhook-tls');
  t.equal(d.spec.template.metadata.annotations['rdbg.dev/tls-checksum'], tlsChecksum(tls.tlsCrt), 'a new certificate rolls the manager');
  t.same(d.spec.selector.matchLabels, { 'app.kubernetes.io/name': 'rdbg', 'app.kubernetes.io/component': 'manager' }, 'the selector has no version in it');
  const svc = byKind(renderObjects(opts()), 'Service');
  t.same(svc.spec.ports.map((p: { name: string; port: number; targetPort: number }) => [p.name, p.port, p.targetPort]),
    [['grpc', 8081, 8081], ['data', 8082, 8082], ['webhook', 443, 8443], ['metrics', 9090, 9090]]);
});

t.test('the webhook: Ignore, no side effects, pods CREATE, never kube-system or the manager namespace', async (t) => {
  const w = byKind(renderObjects(opts()), 'MutatingWebhookConfiguration').webhooks[0];
  t.equal(w.failurePolicy, 'Ignore');
  t.equal(w.sideEffects, 'None');
  t.equal(w.timeoutSeconds, 5);
  t.same(w.rules, [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }]);
  t.same(w.objectSelector, { matchLabels: { 'rdbg.dev/inject': 'enabled' } });
  t.same(w.namespaceSelector.matchExpressions, [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', 'rdbg-install'] }]);
  t.same(w.clientConfig.service, { name: 'rdbg-manager', namespace: 'rdbg-install', path: '/inject', port: 443 });
  t.equal(Buffer.from(w.clientConfig.caBundle, 'base64').toString(), tls.caCrt, 'caBundle is ca.crt');
});

t.test('the certificate: signed by the CA, both Service names, one year', async (t) => {
  const ca = new X509Certificate(tls.caCrt);
  const cert = new X509Certificate(tls.tlsCrt);
  t.ok(ca.ca, 'the CA is a CA');
  t.notOk(cert.ca);
  t.ok(cert.verify(ca.publicKey), 'signed by the CA');
  t.equal(cert.subjectAltName, 'DNS:rdbg-manager.rdbg-install.svc, DNS:rdbg-manager.rdbg-install.svc.cluster.local');
  const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
  t.ok(days > 364 && days <= 365, `valid ${days.toFixed(1)} days`);
  t.match(cert.keyUsage ?? [], ['1.3.6.1.5.5.7.3.1'], 'serverAuth');
  t.ok(reusableTls(tls, 'rdbg-install'), 'a repeated install keeps it');
  t.notOk(reusableTls(tls, 'other'), 'not for another namespace');
  t.notOk(reusableTls(tls, 'rdbg-install', new Date(Date.now() + 340 * 86_400_000)), 'not when it expires within 30 days');
  t.notOk(reusableTls({ ...tls, tlsKey: generateWebhookTls('rdbg-install').tlsKey }, 'rdbg-install'), 'not with a key of another certificate');
  t.not(generateWebhookTls('rdbg-install').caCrt, tls.caCrt, 'every call makes a new CA');
});

/** Applies RFC 6902 test/remove operations (all unmarkPatch emits) to a copy. */
function applyPatch<T>(doc: T, ops: ReturnType<typeof unmarkPatch>): T {
  const out = structuredClone(doc) as Record<string, any>;
  for (const op of ops) {
    const keys = op.path.split('/').slice(1).map((k) => k.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = keys.pop()!;
    const parent = keys.reduce((o, k) => o[k], out);
    if (op.op === 'test') { if (parent[last] !== op.value) throw new Error(`test failed at ${op.path}`); continue; }
    if (!(last in parent)) throw new Error(`remove: no ${op.path}`);
    delete parent[last];
  }
  return out as T;
}

t.test('removing the marks restores the template exactly', async (t) => {
  const before: MarkedWorkload = {
    kind: 'Deployment',
    metadata: { name: 'web', namespace: 'n', resourceVersion: '42', annotations: { 'deployment.kubernetes.io/revision': '2', 'team': 'a' } },
    spec: { template: { metadata: { labels: { app: 'web' }, annotations: { 'prometheus.io/scrape': 'true' } } } },
  };
  const marked = structuredClone(before);
  marked.spec!.template!.metadata!.labels!['rdbg.dev/inject'] = 'enabled';
  Object.assign(marked.spec!.template!.metadata!.annotations!, { 'rdbg.dev/agent-port': 'http', 'rdbg.dev/workload': 'Deployment/web' });
  Object.assign(marked.metadata!.annotations!, { 'rdbg.dev/claim-0123456789ab': 'f'.repeat(64), 'rdbg.dev/claim-ba9876543210': 'e'.repeat(64) });
  const ops = unmarkPatch(marked);
  t.same(ops[0], { op: 'test', path: '/metadata/resourceVersion', value: '42' }, 'guarded by the resourceVersion');
  t.same(applyPatch(marked, ops), before);

  // a template that had no annotations before gets none back (not an empty map)
  const bare: MarkedWorkload = { kind: 'StatefulSet', metadata: { resourceVersion: '7' }, spec: { template: { metadata: { labels: { app: 'db' } } } } };
  const bareMarked = structuredClone(bare);
  bareMarked.spec!.template!.metadata!.labels!['rdbg.dev/inject'] = 'enabled';
  bareMarked.spec!.template!.metadata!.annotations = { 'rdbg.dev/agent-port': '5432', 'rdbg.dev/workload': 'StatefulSet/db' };
  t.same(applyPatch(bareMarked, unmarkPatch(bareMarked)), bare);

  t.same(unmarkPatch(before), [], 'nothing to remove on an unmarked workload');
  const other = structuredClone(before);
  other.spec!.template!.metadata!.labels!['rdbg.dev/inject'] = 'disabled';
  t.same(unmarkPatch(other), [], 'a label value rdbg never sets is not rdbg\'s mark');
});

// The chart and --dry-run must describe the same objects. Helm is built from
// the Go module proxy by scripts/helm.sh (cached; the first build takes minutes).
t.test('helm template renders the same objects as --dry-run', { timeout: 900_000 }, async (t) => {
  const helm = execFileSync('bash', [join(root, 'scripts/helm.sh')], { encoding: 'utf8', timeout: 880_000 }).trim().split('\n').pop()!;
  const ns = 'rdbg-install-helm';
  const rendered = execFileSync(helm, ['template', 'rdbg', join(root, 'charts/rdbg'), '--namespace', ns,
    '--set', 'image.repository=localhost/rdbg', '--set', 'image.tag=install',
    '--set', 'developers.users={alice@example.com,bob}', '--set', 'developers.groups={devs}', '--set', 'developers.namespaces={team-a,team-b}'], { encoding: 'utf8' });
  const fromHelm = (loadAllYaml(rendered) as KubeObject[]).filter(Boolean);
  const dry = execFileSync(process.execPath, [join(root, 'dist/bin/rdbg.js'), 'manager', 'install', '--dry-run', '-o', 'yaml',
    '--namespace', ns, '--image', 'localhost/rdbg:install',
    '--grant-user', 'alice@example.com', '--grant-user', 'bob', '--grant-group', 'devs', '--grant-namespace', 'team-a', '--grant-namespace', 'team-b'], { encoding: 'utf8' });
  // helm creates the release namespace itself (--create-namespace); the chart has no Namespace object
  const fromCli = (loadAllYaml(dry) as KubeObject[]).filter((o) => o.kind !== 'Namespace');
  const key = (o: KubeObject): string => objectRef(o);
  t.same(fromHelm.map(key).sort(), fromCli.map(key).sort(), 'same kinds, names and namespaces');
  t.equal(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version,
    (loadAllYaml(readFileSync(join(root, 'charts/rdbg/Chart.yaml'), 'utf8'))[0] as { appVersion: string }).appVersion, 'Chart appVersion = rdbg version');

  // Everything but the generated key material must be equal, field for field.
  const normal = (o: KubeObject): any => {
    const c = structuredClone(o) as any;
    if (c.kind === 'Secret') c.data = Object.keys(c.data).sort();
    if (c.kind === 'MutatingWebhookConfiguration') for (const w of c.webhooks) w.clientConfig.caBundle = 'CA';
    if (c.kind === 'Deployment') c.spec.template.metadata.annotations['rdbg.dev/tls-checksum'] = 'SUM';
    return c;
  };
  for (const h of fromHelm) {
    const d = fromCli.find((o) => key(o) === key(h))!;
    t.same(normal(h), normal(d), `${key(h)}: labels, RBAC rules, webhook settings, pod spec`);
  }
  // Cluster-wide grants (no namespaces): the same bindings from both.
  const grantsOnly = (objs: KubeObject[]): KubeObject[] => objs.filter((o) => /Binding$/.test(o.kind) && o.metadata.name.startsWith('rdbg-developer')).sort((x, y) => key(x).localeCompare(key(y)));
  const helmWide = grantsOnly((loadAllYaml(execFileSync(helm, ['template', 'rdbg', join(root, 'charts/rdbg'), '--namespace', ns,
    '--set', 'developers.groups={devs}'], { encoding: 'utf8' })) as KubeObject[]).filter(Boolean));
  const cliWide = grantsOnly(loadAllYaml(execFileSync(process.execPath, [join(root, 'dist/bin/rdbg.js'), 'manager', 'install', '--dry-run', '-o', 'yaml',
    '--namespace', ns, '--grant-group', 'devs'], { encoding: 'utf8' })) as KubeObject[]);
  t.equal(helmWide.length, 2, 'cluster-wide: a RoleBinding (connect) and a ClusterRoleBinding');
  t.same(helmWide.map((o) => normal(o)), cliWide.map((o) => normal(o)), 'cluster-wide grants: the chart renders the CLI\'s bindings');
  const refused = (() => {
    try {
      execFileSync(helm, ['template', 'rdbg', join(root, 'charts/rdbg'), '--namespace', ns, '--set', 'developers.users={a}', '--set', `developers.namespaces={${ns}}`], { encoding: 'utf8', stdio: 'pipe' });
      return '';
    } catch (err) {
      return String((err as { stderr?: string }).stderr);
    }
  })();
  t.match(refused, /must not hold the manager's namespace/, 'the chart refuses a grant in its own namespace, as the CLI does');
  // the chart's certificate is consistent within one render
  const secret = byKind(fromHelm, 'Secret');
  const caCrt = Buffer.from(secret.data['ca.crt'], 'base64').toString();
  const cert = new X509Certificate(Buffer.from(secret.data['tls.crt'], 'base64'));
  t.ok(cert.verify(new X509Certificate(caCrt).publicKey), 'helm: tls.crt signed by ca.crt');
  t.match(cert.subjectAltName, `DNS:rdbg-manager.${ns}.svc`);
  t.match(cert.subjectAltName, `DNS:rdbg-manager.${ns}.svc.cluster.local`);
  t.equal(Buffer.from(byKind(fromHelm, 'MutatingWebhookConfiguration').webhooks[0].clientConfig.caBundle, 'base64').toString(), caCrt, 'helm: caBundle = ca.crt');
  t.equal(byKind(fromHelm, 'Deployment').spec.template.metadata.annotations['rdbg.dev/tls-checksum'],
    tlsChecksum(Buffer.from(secret.data['tls.crt'], 'base64').toString()), 'helm: checksum of the certificate it made');
});
