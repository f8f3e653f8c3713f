// Pod Security `baseline` and a Service that targets its container port by
// number: the agent's init container would need NET_ADMIN, which baseline
// forbids. rdbg intercept must say so at once, naming the port and the fix,
// and leave the workload as it was (no marks, no restart); rdbg doctor must
// fail. A user who may patch Deployments but not create Pods (so the dry run
// before marking is not allowed) sees the same error from the rollout, and
// the marks are taken off again. After the fix the hint names (a named
// targetPort), the same intercept works under baseline.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cluster, repoRoot, type Cluster, type ExecResult } from './cluster-helper';

const RDBG = (): string => join(repoRoot(), 'dist', 'bin', 'rdbg.js');
const MNS = 'rdbg';

type Rdbg = (args: string[], kubeconfig?: string) => Promise<ExecResult>;

function laptop(c: Cluster, home: string): Rdbg {
  return (args, kubeconfig = c.info.ADMIN_KUBECONFIG) =>
    c.laptop(RDBG(), [...args], { env: { ...process.env, KUBECONFIG: kubeconfig, RDBG_HOME: home }, check: false, timeoutMs: 300_000 });
}

function app(c: Cluster, name: string, targetPort: number | string): string {
  const deployment = {
    apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          terminationGracePeriodSeconds: 2,
          // what baseline (and restricted) accept for the app itself
          securityContext: { runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: 'RuntimeDefault' } },
          containers: [{
            name, image: c.image('echo-http'), imagePullPolicy: 'Never',
            ports: [{ name: 'http', containerPort: 8080 }],
            env: [{ name: 'PORT', value: '8080' }, { name: 'NAME', value: name }],
            securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
            readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
          }],
        },
      },
    },
  };
  const service = { apiVersion: 'v1', kind: 'Service', metadata: { name }, spec: { selector: { app: name }, ports: [{ name: 'http', port: 80, targetPort }] } };
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [deployment, service] });
}

interface PodState { names: string[]; template: { metadata: { labels?: Record<string, string>; annotations?: Record<string, string> } } }

async function state(c: Cluster, ns: string, name: string): Promise<PodState> {
  const d = await c.kubectlJson<{ spec: { template: PodState['template'] } }>(['-n', ns, 'get', 'deploy', name]);
  const pods = await c.kubectlJson<{ items: { metadata: { name: string; deletionTimestamp?: string } }[] }>(['-n', ns, 'get', 'pods', '-l', `app=${name}`]);
  return { names: pods.items.filter((p) => !p.metadata.deletionTimestamp).map((p) => p.metadata.name).sort(), template: d.spec.template };
}

t.test('Pod Security baseline and a numeric targetPort', async (t) => {
  const c = await cluster();
  const home = mkdtempSync(join(tmpdir(), 'rdbg-psa-'));
  const rdbg = laptop(c, home);
  t.teardown(async () => {
    await rdbg(['quit']);
    await rdbg(['uninstall', '--all']);
    if (!process.env.RDBG_KEEP_LOGS) rmSync(home, { recursive: true, force: true });
  });
  const install = await rdbg(['manager', 'install', '--image', c.image('rdbg')]);
  t.equal(install.code, 0, install.stderr);
  const ns = await c.namespace(t, 'psa');
  await c.kubectl(['label', 'ns', ns, 'pod-security.kubernetes.io/enforce=baseline']);
  await c.apply(ns, app(c, 'echo', 8080));
  await c.rollout(ns, 'echo');
  const conn = await rdbg(['connect', '--socks', '1090', '--namespace', ns]);
  t.equal(conn.code, 0, conn.stderr);

  await t.test('rdbg intercept says why at once, names the port and the fix, and changes nothing', async (t) => {
    const before = await state(c, ns, 'echo');
    const t0 = Date.now();
    const r = await rdbg(['intercept', 'echo', '--port', '9191:80', '--header', 'x-dev=psa']);
    t.comment(`intercept answered in ${Date.now() - t0} ms`);
    t.not(r.code, 0, 'the intercept fails');
    t.match(r.stderr, /rejects the pods of deployment\/echo .*PodSecurity "baseline/, r.stderr);
    t.match(r.stderr, /NET_ADMIN/, 'the capability the agent would need');
    t.match(r.stderr, /containerPort 8080 of container echo/, 'the port, named');
    t.match(r.stderr, /targetPort to that name/, 'the fix');
    t.notMatch(r.stdout, /pods ready with the agent/, 'no rollout was waited for');
    const after = await state(c, ns, 'echo');
    t.same(after, before, 'the same pods, and the pod template unmarked');
  });

  await t.test('rdbg doctor fails and names the Service; rdbg doctor NAME gives the same verdict as intercept', async (t) => {
    const d = await rdbg(['doctor', '-n', ns]);
    t.equal(d.code, 1, d.stdout);
    t.match(d.stdout, /FAIL +pod security .*numeric port.*intercept of service echo \(targetPort 8080\) would be refused/, d.stdout);
    const one = await rdbg(['doctor', 'echo', '-n', ns]);
    t.equal(one.code, 1, one.stdout);
    t.match(one.stdout, /FAIL +intercept +intercepting echo: the apiserver rejects the pods of deployment\/echo/, one.stdout);
  });

  await t.test('a user who may not create pods: the rollout tells, and the marks come off again', async (t) => {
    // No right to create pods, so no dry run before marking: the ReplicaSet's refusal is what shows it.
    const rules = [
      { apiGroups: ['apps'], resources: ['deployments', 'replicasets'], verbs: ['get', 'list', 'watch', 'patch'] },
      { apiGroups: [''], resources: ['pods', 'services', 'events'], verbs: ['get', 'list', 'watch'] },
    ];
    const objs = [
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'patcher', namespace: ns } },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'patcher', namespace: ns }, rules },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'patcher', namespace: ns },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'patcher' }, subjects: [{ kind: 'ServiceAccount', name: 'patcher', namespace: ns }] },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: `patcher-${ns}`, namespace: MNS },
        rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] }, { apiGroups: [''], resources: ['pods/portforward'], verbs: ['get', 'create'] }] },
      { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: `patcher-${ns}`, namespace: MNS },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: `patcher-${ns}` }, subjects: [{ kind: 'ServiceAccount', name: 'patcher', namespace: ns }] },
    ];
    await c.kubectl(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs }) });
    t.teardown(() => c.kubectl(['-n', MNS, 'delete', 'role,rolebinding', `patcher-${ns}`, '--ignore-not-found'], { check: false }));
    const token = (await c.kubectl(['-n', ns, 'create', 'token', 'patcher'])).stdout.trim();
    const admin = (await c.laptop('cat', [c.info.ADMIN_KUBECONFIG])).stdout;
    const ca = /certificate-authority-data: (\S+)/.exec(admin)![1];
    const kc = join(home, 'patcher.kubeconfig');
    writeFileSync(kc, JSON.stringify({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'p',
      clusters: [{ name: 'c', cluster: { server: c.info.APISERVER_URL, 'certificate-authority-data': ca } }],
      users: [{ name: 'u', user: { token } }],
      contexts: [{ name: 'p', context: { cluster: 'c', user: 'u', namespace: ns } }],
    }));
    const phome = mkdtempSync(join(tmpdir(), 'rdbg-psa-user-'));
    const user = laptop(c, phome);
    t.teardown(async () => {
      await user(['quit'], kc);
      rmSync(phome, { recursive: true, force: true });
    });
    const conn = await user(['connect', '--socks', '1091', '--namespace', ns], kc);
    t.equal(conn.code, 0, conn.stderr);
    const before = await state(c, ns, 'echo');
    const r = await user(['intercept', 'echo', '--port', '9192:80', '--header', 'x-dev=patcher'], kc);
    t.not(r.code, 0, 'the intercept fails');
    t.match(r.stderr, /rejects the pods of deployment\/echo .*PodSecurity "baseline/, r.stderr);
    t.match(r.stderr, /containerPort 8080 of container echo/, 'the port, named');
    t.match(r.stdout + r.stderr, /taking the marks off deployment\/echo/, 'the marks are taken off again');
    const after = await state(c, ns, 'echo');
    t.same(after.template, before.template, 'the pod template as it was');
    t.same(after.names, before.names, 'the app pod never stopped');
  });

  await t.test('with a named targetPort, as the hint says, the intercept works under baseline', async (t) => {
    await c.kubectl(['-n', ns, 'patch', 'svc', 'echo', '--type=json', '-p', '[{"op":"replace","path":"/spec/ports/0/targetPort","value":"http"}]']);
    const d = await rdbg(['doctor', 'echo', '-n', ns]);
    t.match(d.stdout, /ok +intercept +the pods of deployment\/echo in namespace \S+ would be admitted with the agent on port http/, d.stdout);
    t.match(d.stdout, /WARN +pod security .*no Service in \S+ targets a port by number/, 'no Service left that baseline would refuse');
    t.equal(d.code, 0, d.stdout);
    const r = await rdbg(['intercept', 'echo', '--port', '9191:80', '--header', 'x-dev=psa']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /Intercepting port/, r.stdout);
    await rdbg(['leave', 'echo']);
  });
});
