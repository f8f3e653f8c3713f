// Kubernetes API calls keep their TLS connection: a second call costs one
// round trip to the apiserver, not a new TCP connection and TLS handshake
// (src/kube/keep-alive.ts). A real HTTPS server on loopback stands in for the
// apiserver's REST API and counts connections; the client is
// @kubernetes/client-node, loaded the way rdbg loads a kubeconfig.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { loadKube } from '../../src/kube/config';
import { makeCA, makeServing, type Pem } from '../helpers/certs';

const ca = makeCA();
const serving = makeServing(ca, { ips: ['127.0.0.1'] });
const clientA = makeServing(ca, { cn: 'user-a' });
const clientB = makeServing(ca, { cn: 'user-b' });

interface Api {
  url: string;
  connections: number;
  closed: number;
  requests: number;
  close(): Promise<void>;
}

async function fakeApiserver(t: Test): Promise<Api> {
  const api = { url: '', connections: 0, closed: 0, requests: 0 } as Api;
  const server = https.createServer({ cert: serving.cert, key: serving.key, ca: ca.cert, requestCert: true, rejectUnauthorized: false }, (req, res) => {
    api.requests++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ apiVersion: 'v1', kind: 'PodList', metadata: {}, items: [] }));
  });
  server.on('secureConnection', (s) => {
    api.connections++;
    s.on('close', () => api.closed++);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  api.url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  api.close = () => {
    server.closeAllConnections();
    return new Promise((r) => server.close(() => r()));
  };
  t.teardown(() => api.close());
  return api;
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

function kubeconfigFile(url: string, client: Pem): string {
  const dir = mkdtempSync(join(tmpdir(), 'rdbg-keepalive-'));
  const file = join(dir, 'config');
  writeFileSync(
    file,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server: url, 'certificate-authority-data': b64(ca.cert) } }],
      users: [{ name: 'u', user: { 'client-certificate-data': b64(client.cert), 'client-key-data': b64(client.key) } }],
      contexts: [{ name: 'x', context: { cluster: 'c', user: 'u', namespace: 'default' } }],
      'current-context': 'x',
    }),
  );
  return file;
}

t.test('sequential API calls ride one TLS connection', async (t) => {
  const api = await fakeApiserver(t);
  const { kc } = loadKube({ kubeconfig: kubeconfigFile(api.url, clientA) });
  const core = kc.makeApiClient(k8s.CoreV1Api);
  for (let i = 0; i < 5; i++) await core.listNamespacedPod({ namespace: 'default' });
  t.equal(api.requests, 5, 'every call reached the server');
  t.equal(api.connections, 1, 'one connection, one handshake, for five calls');
});

t.test('calls at once open connections in parallel, and later calls reuse them', async (t) => {
  const api = await fakeApiserver(t);
  const { kc } = loadKube({ kubeconfig: kubeconfigFile(api.url, clientA) });
  const core = kc.makeApiClient(k8s.CoreV1Api);
  await Promise.all([1, 2, 3].map(() => core.listNamespacedPod({ namespace: 'default' })));
  const first = api.connections;
  t.ok(first >= 1 && first <= 3, `three concurrent calls took ${first} connections`);
  await Promise.all([1, 2, 3].map(() => core.listNamespacedPod({ namespace: 'default' })));
  t.equal(api.connections, first, 'the next three reuse them');
});

t.test('a rotated client certificate gets a new connection, and the old one is closed', async (t) => {
  const api = await fakeApiserver(t);
  const { kc } = loadKube({ kubeconfig: kubeconfigFile(api.url, clientA) });
  const core = kc.makeApiClient(k8s.CoreV1Api);
  await core.listNamespacedPod({ namespace: 'default' });
  t.equal(api.connections, 1);
  // what an exec credential plugin does when it hands out a fresh certificate
  const user = kc.getCurrentUser() as k8s.User & { certData?: string; keyData?: string };
  Object.assign(user, { certData: b64(clientB.cert), keyData: b64(clientB.key) });
  await core.listNamespacedPod({ namespace: 'default' });
  t.equal(api.connections, 2, 'new credentials, new connection');
  for (let i = 0; i < 20 && api.closed < 1; i++) await new Promise((r) => setTimeout(r, 25));
  t.equal(api.closed, 1, 'the connection with the old certificate is closed');
  await core.listNamespacedPod({ namespace: 'default' });
  t.equal(api.connections, 2, 'and the new one is kept');
});

t.test('a kept idle connection does not keep the process alive', async (t) => {
  const api = await fakeApiserver(t);
  const file = kubeconfigFile(api.url, clientA);
  const script = `
    const k8s = require('@kubernetes/client-node');
    const { loadKube } = require(${JSON.stringify(require.resolve('../../src/kube/config'))});
    const { kc } = loadKube({ kubeconfig: ${JSON.stringify(file)} });
    kc.makeApiClient(k8s.CoreV1Api).listNamespacedPod({ namespace: 'default' }).then(() => console.log('listed'));
  `;
  const child = spawn(process.execPath, ['-e', script], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  const [code, signal] = await new Promise<[number | null, string | null]>((r) => child.on('exit', (c, s) => r([c, s])));
  clearTimeout(timer);
  t.equal(out.trim(), 'listed');
  t.same([code, signal], [0, null], 'the process exits by itself once its work is done');
  t.equal(api.connections, 1);
});
