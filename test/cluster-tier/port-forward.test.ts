// `kubectl port-forward` from the laptop namespace to a pod, through the
// apiserver and the kubelet, as a developer would use it.
import t from 'tap';
import { cluster, sampleApp, waitFor } from './cluster-helper';

t.test('kubectl port-forward from the laptop namespace', async (t) => {
  const c = await cluster();
  const ns = await c.namespace(t, 'port-forward');
  await c.apply(ns, [
    sampleApp({ name: 'echo', image: c.image('echo-http'), port: 8080 }),
    sampleApp({ name: 'tcp-echo', image: c.image('tcp-echo'), port: 9000, env: { GREETING: 'pod' } }),
  ].join('---\n'));
  await c.rollout(ns, 'echo');
  await c.rollout(ns, 'tcp-echo');

  const pf = c.laptopSpawn(t, c.info.KUBECTL, ['--kubeconfig', c.info.ADMIN_KUBECONFIG, '-n', ns,
    'port-forward', 'deploy/echo', '18080:8080']);
  await waitFor('port-forward listening', async () => pf.output().includes('Forwarding from 127.0.0.1:18080'), 30_000);
  const r = await c.laptop('curl', ['-sS', '--max-time', '10', '-H', 'x-request-id: pf-1', 'http://127.0.0.1:18080/through-pf']);
  const body = JSON.parse(r.stdout) as { name: string; path: string; headers: Record<string, string> };
  t.equal(body.name, 'echo');
  t.equal(body.path, '/through-pf');
  t.equal(body.headers['x-request-id'], 'pf-1');

  // Raw TCP through a port-forward of a Service.
  const pf2 = c.laptopSpawn(t, c.info.KUBECTL, ['--kubeconfig', c.info.ADMIN_KUBECONFIG, '-n', ns,
    'port-forward', 'service/tcp-echo', '19000:9000']);
  await waitFor('port-forward listening', async () => pf2.output().includes('Forwarding from 127.0.0.1:19000'), 30_000);
  const script = `
    const s = require('node:net').connect(19000, '127.0.0.1');
    let got = '';
    s.on('data', (d) => { got += d; if (got.includes('tcp-bytes')) { console.log(got); s.end(); } });
    s.on('connect', () => s.write('tcp-bytes\\n'));
    setTimeout(() => { console.log('timeout:' + got); process.exit(1); }, 10000).unref();`;
  const tcp = await c.laptop('node', ['-e', script]);
  t.match(tcp.stdout, /^tcp-echo-/, 'greeting names the pod');
  t.match(tcp.stdout, 'tcp-bytes');
});

t.test('the namespace-scoped user', async (t) => {
  const c = await cluster();
  const kc = { kubeconfig: c.info.USER_KUBECONFIG };
  const own = await c.kubectl(['auth', 'can-i', 'create', 'deployments', '-n', c.info.USER_NAMESPACE], { ...kc, check: false });
  t.equal(own.stdout.trim(), 'yes', 'admin of its own namespace');
  const other = await c.kubectl(['auth', 'can-i', 'list', 'pods', '-n', 'kube-system'], { ...kc, check: false });
  t.equal(other.stdout.trim(), 'no', 'nothing in other namespaces');
  const cluster_ = await c.kubectl(['auth', 'can-i', 'list', 'namespaces'], { ...kc, check: false });
  t.equal(cluster_.stdout.trim(), 'no', 'nothing cluster-scoped');
  const list = await c.kubectl(['-n', c.info.USER_NAMESPACE, 'get', 'pods'], kc);
  t.equal(list.code, 0);
});
