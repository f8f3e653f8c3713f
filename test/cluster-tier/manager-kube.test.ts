import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Cluster, cluster, repoRoot, waitFor } from './cluster-helper';
import { PROTOCOL, VERSION } from '../../src/core/version';
import { MANAGER_RULES } from '../../src/kube/manifests';

// The traffic manager's Kubernetes mode against the real apiserver: it runs as
// a process in the node's network namespace with a least-privilege service
// account (the ClusterRole of docs/kubernetes.md), and the calls are made from
// that namespace too, over loopback (as the kubelet's port-forward does) and
// over the node's address (a direct, non-port-forwarded peer).

type Reply = { ok: true; res: Record<string, unknown> } | { ok: false; code: number; details: string };

const GRPC = { OK: 0, NOT_FOUND: 5, PERMISSION_DENIED: 7, UNAUTHENTICATED: 16 };

// the manager's own ClusterRole, as installed: the test proves it is enough
const ROLE_RULES = MANAGER_RULES;

function podSpec(opts: { labelled: boolean; image: string }): object {
  return {
    terminationGracePeriodSeconds: 1,
    containers: [{
      name: 'app',
      image: opts.image,
      imagePullPolicy: 'Never',
      env: [{ name: 'PORT', value: '8080' }],
      volumeMounts: [{ name: 'rdbg-token', mountPath: '/var/run/secrets/rdbg', readOnly: true }],
    }],
    volumes: [{ name: 'rdbg-token', projected: { sources: [{ serviceAccountToken: { audience: 'rdbg', expirationSeconds: 3600, path: 'token' } }] } }],
  };
}

t.test('manager serve --kubernetes on the real apiserver', async (t) => {
  // A running cluster is used as it is: up.sh would also rebuild and import
  // localhost/rdbg:dev from this checkout, which other sessions rely on.
  const c: Cluster = await cluster();
  const env = c.info;
  const ns = await c.namespace(t, 'mgrkube');
  const dir = mkdtempSync(join(tmpdir(), 'mgrkube-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  // A least-privilege identity for the manager: ServiceAccount + the contract's ClusterRole.
  const role = `rdbg-manager-mgrkube-${randomBytes(3).toString('hex')}`;
  await c.apply(ns, JSON.stringify({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'rdbg-manager' } }));
  await c.kubectl(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [
        { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: role }, rules: ROLE_RULES },
        {
          apiVersion: 'rbac.authorization.k8s.io/v1',
          kind: 'ClusterRoleBinding',
          metadata: { name: role },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
          subjects: [{ kind: 'ServiceAccount', name: 'rdbg-manager', namespace: ns }],
        },
      ],
    }),
  });
  t.teardown(() => c.kubectl(['delete', 'clusterrolebinding,clusterrole', role, '--ignore-not-found', '--wait=false'], { check: false }));
  const token = (await c.kubectl(['-n', ns, 'create', 'token', 'rdbg-manager', '--duration', '1h'])).stdout.trim();
  const ca = (await c.kubectl(['config', 'view', '--raw', '--minify', '-o', 'jsonpath={.clusters[0].cluster.certificate-authority-data}'])).stdout.trim();
  const kubeconfig = join(dir, 'manager.kubeconfig');
  writeFileSync(kubeconfig, JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'c', cluster: { server: env.APISERVER_URL, 'certificate-authority-data': ca } }],
    users: [{ name: 'rdbg-manager', user: { token } }],
    contexts: [{ name: 'c', context: { cluster: 'c', user: 'rdbg-manager' } }],
    'current-context': 'c',
  }));
  // The node's own resolver cannot answer cluster names: give the manager a pod's resolv.conf.
  const resolvConf = join(dir, 'resolv.conf');
  writeFileSync(resolvConf, `search ${ns}.svc.${env.CLUSTER_DOMAIN} svc.${env.CLUSTER_DOMAIN} ${env.CLUSTER_DOMAIN}\nnameserver ${env.DNS_SVC_IP}\noptions ndots:5\n`);

  // Workloads: one marked for rdbg (label, workload annotation, projected token), one not.
  const image = c.image('echo-http');
  const web = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'web' },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: 'web' } },
      template: {
        metadata: { labels: { app: 'web', 'rdbg.dev/inject': 'enabled' }, annotations: { 'rdbg.dev/workload': 'Deployment/web' } },
        spec: podSpec({ labelled: true, image }),
      },
    },
  };
  const plain = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'plain', labels: { app: 'plain' } }, spec: podSpec({ labelled: false, image }) };
  await c.apply(ns, `${JSON.stringify(web)}\n---\n${JSON.stringify(plain)}\n`);

  // The manager, in the node's network namespace.
  const rdbg = join(repoRoot(), 'dist', 'bin', 'rdbg.js');
  const probeJs = join(__dirname, 'manager-kube-probe.js');
  const child: ChildProcess = spawn('nsenter', [
    `--net=/run/netns/${env.NODE_NS}`, '--', process.execPath, rdbg, 'manager', 'serve', '--kubernetes', '--webhook-listen', 'none',
    '--kubeconfig', kubeconfig, '--resolv-conf', resolvConf, '--listen', '0.0.0.0:0', '--namespace', ns, '--lease-seconds', '300',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (log += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
  t.teardown(() => {
    child.kill('SIGTERM');
    if (process.env.RDBG_TEST_VERBOSE) t.comment(log);
  });
  const started = Date.now();
  const listening = await waitFor('the manager to listen', async () => {
    if (child.exitCode !== null) throw new Error(`the manager exited (${child.exitCode}):\n${log}`);
    const line = log.split('\n').find((l) => l.includes('"traffic manager listening"'));
    return line ? (JSON.parse(line) as { port: number; dataPort: number }) : undefined;
  }, 30_000, 100);
  t.comment(`manager up (discovery done) in ${Date.now() - started} ms`);
  const local = `127.0.0.1:${listening.port}`;
  const direct = `${env.NODE_IP}:${listening.port}`;
  const call = async (addr: string, rpc: string, req: object): Promise<Reply> => {
    const r = await c.node(process.execPath, [probeJs, JSON.stringify({ grpc: addr, call: rpc, req })]);
    return JSON.parse(r.stdout) as Reply;
  };
  const h2 = async (addr: string, headers: Record<string, string>): Promise<Reply> => {
    const r = await c.node(process.execPath, [probeJs, JSON.stringify({ h2: addr, headers })]);
    return JSON.parse(r.stdout) as Reply;
  };
  const arrive = { client_version: VERSION, protocol: PROTOCOL, user: 'mgrkube-test', hostname: 'laptop', namespace: ns };

  let session = '';
  await t.test('clients: only over loopback (port-forward)', async (t) => {
    const refused = await call(direct, 'arrive', arrive);
    t.match(refused, { ok: false, code: GRPC.PERMISSION_DENIED }, 'Arrive from the node address is refused');
    if (!refused.ok) t.match(refused.details, /connect through the apiserver/);
    const ok = await call(local, 'arrive', arrive);
    t.ok(ok.ok, 'Arrive from 127.0.0.1 is accepted');
    if (!ok.ok) return;
    session = ok.res.session_id as string;
    t.match(session, /^[0-9a-f-]{36}$/);
    const other = await call(direct, 'getClusterInfo', { session_id: session });
    t.match(other, { ok: false, code: GRPC.PERMISSION_DENIED }, 'a valid session id does not open the gRPC API to a direct peer');
    const cluster = ok.res.cluster as Record<string, string[]>;
    t.same(cluster.service_subnets, [env.SERVICE_CIDR], `service subnets from the ServiceCIDR API (${env.SERVICE_CIDR})`);
    t.same(cluster.pod_subnets, [env.NODE_POD_CIDR], `pod subnets from the node's podCIDRs (${env.NODE_POD_CIDR})`);
    t.equal(cluster.cluster_domain, env.CLUSTER_DOMAIN);
    t.same(cluster.dns_search, [`${ns}.svc.${env.CLUSTER_DOMAIN}`, `svc.${env.CLUSTER_DOMAIN}`, env.CLUSTER_DOMAIN]);
    t.equal(cluster.dns_server, env.DNS_SVC_IP);
    t.ok(cluster.namespaces.includes(ns) && cluster.namespaces.includes('kube-system'), 'namespaces listed');
  });

  await t.test('a namespace created later appears in ClusterInfo', async (t) => {
    const extra = await c.namespace(t, 'mgrkube-extra');
    const seenMs = Date.now();
    await waitFor(`${extra} in ClusterInfo`, async () => {
      const r = await call(local, 'getClusterInfo', { session_id: session });
      return r.ok && (r.res.namespaces as string[]).includes(extra);
    }, 20_000, 200);
    t.pass(`${extra} listed after ${Date.now() - seenMs} ms`);
  });

  await t.test('names resolve through the cluster DNS with the session\'s search path', async (t) => {
    const r = await call(local, 'LookupDNS', { session_id: session, name: 'kubernetes.default', qtype: 1 });
    t.match(r, { ok: true, res: { rcode: 0, name: `kubernetes.default.svc.${env.CLUSTER_DOMAIN}` } });
    if (r.ok) t.match((r.res.answers as { address: string }[])[0], { address: /^\d+\.\d+\.\d+\.\d+$/ });
  });

  await t.test('data plane: direct peers need a valid session id', async (t) => {
    const flow = (sessionId: string): Record<string, string> => ({
      ':method': 'POST', ':path': '/rdbg.v1/flow', 'rdbg-session': sessionId, 'rdbg-protocol': 'tcp', 'rdbg-host': 'kubernetes.default', 'rdbg-port': '443',
    });
    const dataDirect = `${env.NODE_IP}:${listening.dataPort}`;
    t.match(await h2(dataDirect, flow('')), { ok: true, res: { dial: 'DENIED' } }, 'no session id: denied');
    t.match(await h2(dataDirect, flow(randomBytes(16).toString('hex'))), { ok: true, res: { dial: 'DENIED' } }, 'a made-up session id: denied');
    const ok = await h2(dataDirect, flow(session));
    t.match(ok, { ok: true, res: { dial: 'OK', status: 200 } }, 'the session id opened over port-forward works directly (the direct transport)');
  });

  // Tokens from the pods' projected volumes (audience rdbg).
  await c.rollout(ns, 'web', 120);
  await c.kubectl(['-n', ns, 'wait', '--for=condition=Ready', 'pod/plain', '--timeout=120s'], { timeoutMs: 130_000 });
  const webPod = (await c.kubectl(['-n', ns, 'get', 'pods', '-l', 'app=web', '-o', 'jsonpath={.items[0].metadata.name}'])).stdout.trim();
  const readToken = async (pod: string): Promise<string> => (await c.execIn(ns, pod, ['cat', '/var/run/secrets/rdbg/token'])).stdout.trim();
  const webToken = await readToken(webPod);
  const plainToken = await readToken('plain');
  const agent = (over: object): object => ({ version: VERSION, protocol: PROTOCOL, workload: 'web', namespace: ns, pod_name: webPod, pod_ip: '', ports: [], env: {}, token: '', ...over });

  await t.test('agents: a projected token of a pod rdbg marked, nothing else', async (t) => {
    const none = await call(direct, 'agentArrive', agent({}));
    t.match(none, { ok: false, code: GRPC.UNAUTHENTICATED, details: /no token/ }, 'no token');
    const bogus = await call(direct, 'agentArrive', agent({ token: 'eyJhbGciOiJSUzI1NiJ9.e30.bm90LWEtc2lnbmF0dXJl' }));
    t.match(bogus, { ok: false, code: GRPC.UNAUTHENTICATED, details: /rejected the agent's token/ }, 'a bogus token');
    const wrongAudience = (await c.kubectl(['-n', ns, 'create', 'token', 'default', '--duration', '10m'])).stdout.trim();
    t.match(await call(direct, 'agentArrive', agent({ token: wrongAudience })), { ok: false, code: GRPC.UNAUTHENTICATED }, 'a token for the apiserver\'s audience');
    const unmarked = await call(direct, 'agentArrive', agent({ token: plainToken, workload: 'plain', pod_name: 'plain' }));
    t.match(unmarked, { ok: false, code: GRPC.PERMISSION_DENIED, details: /not marked for rdbg/ }, 'the token of a pod without rdbg.dev/inject=enabled');
    const otherPod = await call(direct, 'agentArrive', agent({ token: webToken, pod_name: 'plain' }));
    t.match(otherPod, { ok: false, code: GRPC.PERMISSION_DENIED, details: /belongs to pod/ }, 'a token presented for another pod');
    const otherWorkload = await call(direct, 'agentArrive', agent({ token: webToken, workload: 'db' }));
    t.match(otherWorkload, { ok: false, code: GRPC.PERMISSION_DENIED, details: /belongs to web/ }, 'a token presented for another workload');
    const ok = await call(direct, 'agentArrive', agent({ token: webToken }));
    t.ok(ok.ok, 'the real token of the marked pod, from a non-loopback address');
    if (ok.ok) t.match(ok.res.agent_id, /^[0-9a-f-]{36}$/);
    if (!ok.ok) t.comment(ok.details);
  });

  await t.test('intercepts need the session\'s claim on the workload', async (t) => {
    const spec = { workload: 'web', namespace: ns, port: 8080, local_port: 9000 };
    const noClaim = await call(local, 'createIntercept', { session_id: session, spec });
    t.match(noClaim, { ok: false, code: GRPC.PERMISSION_DENIED, details: /right to patch the Deployment/ }, 'without the claim');
    // The claim of another session does not count.
    const second = await call(local, 'arrive', { ...arrive, user: 'someone-else' });
    if (!second.ok) throw new Error(second.details);
    const hashOf = (s: string): string => createHash('sha256').update(s).digest('hex');
    const otherHash = hashOf(second.res.session_id as string);
    await c.kubectl(['-n', ns, 'annotate', 'deployment/web', `rdbg.dev/claim-${otherHash.slice(0, 12)}=${otherHash}`]);
    t.match(await call(local, 'createIntercept', { session_id: session, spec }), { ok: false, code: GRPC.PERMISSION_DENIED }, 'with another session\'s claim');
    const hash = hashOf(session);
    await c.kubectl(['-n', ns, 'annotate', 'deployment/web', `rdbg.dev/claim-${hash.slice(0, 12)}=${hash}`]);
    const direct2 = await call(direct, 'createIntercept', { session_id: session, spec });
    t.match(direct2, { ok: false, code: GRPC.PERMISSION_DENIED, details: /connect through the apiserver/ }, 'with the claim but from a direct peer');
    const ok = await call(local, 'createIntercept', { session_id: session, spec });
    t.match(ok, { ok: true, res: { spec: { workload: 'web', namespace: ns } } }, 'with the claim, over loopback');
    // A claim seen stands for the session (CLAIM_TRUST_MS): the next intercept of the workload reads nothing,
    // and it stands for that session only.
    await c.kubectl(['-n', ns, 'annotate', 'deployment/web', `rdbg.dev/claim-${hash.slice(0, 12)}-`, `rdbg.dev/claim-${otherHash.slice(0, 12)}-`]);
    const trusted = await call(local, 'createIntercept', { session_id: session, spec });
    t.match(trusted, { ok: true, res: { spec: { workload: 'web' } } }, 'the same session again, the claim just taken off: trusted, not read');
    t.match(await call(local, 'createIntercept', { session_id: second.res.session_id, spec }), { ok: false, code: GRPC.PERMISSION_DENIED }, 'another session is not trusted by it');
    const listed = await call(local, 'listIntercepts', { session_id: second.res.session_id, all: true });
    t.match(listed, { ok: true }, 'another client lists it');
    if (listed.ok) {
      const [i] = listed.res.intercepts as { session_id: string; owner: string }[];
      t.equal(i.owner, 'mgrkube-test');
      t.equal(i.session_id, '', 'without the owner\'s session id (its data-plane credential)');
    }
    const missing = await call(local, 'createIntercept', { session_id: session, spec: { ...spec, workload: 'nope' } });
    t.match(missing, { ok: false, code: GRPC.NOT_FOUND, details: /no Deployment, StatefulSet, ReplicaSet, DaemonSet or Pod named nope/ });
  });

  t.notMatch(log, /"level":"error"/, 'no errors in the manager\'s log');
});
