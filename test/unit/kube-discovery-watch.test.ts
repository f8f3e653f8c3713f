import t from 'tap';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import { ListWatch, type KubeObject } from '../../manager/kube/list-watch';
import { ClusterDiscovery } from '../../manager/kube/discovery';

/** A kubeconfig pointing at the scripted apiserver. */
function kubeConfigFor(server: http.Server): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'c', cluster: 'c', user: 'u' }],
    currentContext: 'c',
  });
  return kc;
}

// The list-then-watch loop against a scripted apiserver: a watch that breaks
// (apiserver restart) resumes from the last resourceVersion, and a 410 Gone
// makes it list again.

const ns = (name: string, rv: number): KubeObject => ({ metadata: { name, uid: `uid-${name}`, resourceVersion: String(rv) } });

t.test('a watch resumes after a broken connection and re-lists after 410 Gone', async (t) => {
  const requests: string[] = [];
  let watches = 0;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    const watch = url.searchParams.get('watch') === 'true';
    const rv = url.searchParams.get('resourceVersion') ?? '';
    requests.push(`${watch ? 'watch' : 'list'} ${rv}`);
    res.setHeader('content-type', 'application/json');
    if (!watch) {
      const lists = requests.filter((r) => r.startsWith('list')).length;
      const items = lists === 1 ? [ns('a', 10)] : [ns('a', 10), ns('b', 11), ns('c', 20)];
      res.end(JSON.stringify({ kind: 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: lists === 1 ? '10' : '20' }, items }));
      return;
    }
    watches++;
    if (watches === 1) {
      // One event, then the connection drops (the apiserver restarts).
      res.write(JSON.stringify({ type: 'ADDED', object: ns('b', 11) }) + '\n');
      setTimeout(() => res.socket?.destroy(), 50);
    } else if (watches === 2) {
      res.write(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', code: 410, message: 'too old resource version: 11 (15)' } }) + '\n');
      res.end();
    } else {
      res.write(JSON.stringify({ type: 'DELETED', object: ns('a', 21) }) + '\n');
      // held open until the test ends
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const kc = kubeConfigFor(server);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const snapshots: string[] = [];
  const w: ListWatch<KubeObject> = new ListWatch<KubeObject>(kc, 'namespaces', '/api/v1/namespaces', () => core.listNamespace() as never, () =>
    snapshots.push([...w.items.values()].map((o) => o.metadata!.name).sort().join(',')),
  );
  t.teardown(() => w.stop());
  await w.start();
  const deadline = Date.now() + 10_000;
  while (snapshots[snapshots.length - 1] !== 'b,c' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.same(snapshots, ['a', 'a,b', 'a,b,c', 'b,c'], 'list, event, fresh list after 410, event after it');
  t.same(requests, ['list ', 'watch 10', 'watch 11', 'list ', 'watch 20'], 'resumed from 11 after the drop; listed again after 410');
});

t.test('discovery falls back to covering prefixes when the cluster publishes no subnets', async (t) => {
  const status404 = { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 404, reason: 'NotFound', message: 'the server could not find the requested resource' };
  const svc = (name: string, ips: string[]): object => ({ metadata: { name, namespace: 'default', uid: name }, spec: { clusterIP: ips[0], clusterIPs: ips } });
  const pod = (name: string, ip: string, hostNetwork = false): object => ({
    metadata: { name, namespace: 'default', uid: name }, spec: { hostNetwork, containers: [] }, status: { podIP: ip, podIPs: [{ ip }] },
  });
  const lists: Record<string, object[]> = {
    '/api/v1/namespaces': [{ metadata: { name: 'default', uid: 'ns1' } }, { metadata: { name: 'team-a', uid: 'ns2' } }],
    '/api/v1/services': [svc('kubernetes', ['10.0.0.1']), svc('dns', ['10.0.3.7', 'fd00::a']), svc('headless', ['None']), svc('v6', ['fd00::1:2'])],
    '/api/v1/nodes': [{ metadata: { name: 'n1', uid: 'n1' }, spec: {} }],
    '/api/v1/pods': [pod('p1', '10.1.0.5'), pod('p2', '10.1.1.9'), pod('host', '192.168.1.10', true)],
  };
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x');
    res.setHeader('content-type', 'application/json');
    if (url.pathname.startsWith('/apis/networking.k8s.io/v1/servicecidrs')) {
      res.statusCode = 404;
      res.end(JSON.stringify(status404));
      return;
    }
    if (url.searchParams.get('watch') !== 'true') {
      res.end(JSON.stringify({ metadata: { resourceVersion: '5' }, items: lists[url.pathname] ?? [] }));
      return;
    }
    held.push(res);
    if (url.pathname === '/api/v1/services') res.write(JSON.stringify({ type: 'ADDED', object: svc('new', ['10.0.200.1']) }) + '\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const kc = kubeConfigFor(server);
    const d = new ClusterDiscovery({
    kc, server: 'fake', core: kc.makeApiClient(k8s.CoreV1Api), apps: kc.makeApiClient(k8s.AppsV1Api),
    networking: kc.makeApiClient(k8s.NetworkingV1Api), authn: kc.makeApiClient(k8s.AuthenticationV1Api),
  });
  t.teardown(() => {
    d.stop();
    server.closeAllConnections();
    server.close();
  });
  await d.start();
  t.same(d.namespaces, ['default', 'team-a']);
  t.same(d.podSubnets, ['10.1.0.0/23'], 'pod IPs seen (the host-network pod is not one)');
  t.equal(d.podSource, 'covering the pod IPs seen');
  t.equal(d.serviceSource, 'covering the ClusterIPs seen');
  const deadline = Date.now() + 5000;
  while (d.serviceSubnets[0] !== '10.0.0.0/16' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.same(d.serviceSubnets, ['10.0.0.0/16', 'fd00::/111'], 'ClusterIPs seen, widened by a service the watch added; both families');
});
