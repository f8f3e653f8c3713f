// WebhookServer over real HTTPS: AdmissionReview in, patch out; malformed
// input costs only its own request; a renewed certificate is served without
// a restart.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { InjectSettings } from '../../manager/kube/inject';
import type { Pod } from '../../manager/kube/pod';
import { WebhookServer } from '../../manager/kube/webhook-server';
import { makeCA, makeServing } from '../helpers/certs';
import { applyPatch, type Op } from '../helpers/json-patch';

const settings: InjectSettings = {
  image: 'localhost/rdbg:test', managerNamespace: 'rdbg', managerAddress: 'rdbg-manager.rdbg:8081',
  agentPortBase: 9900, version: '0.1.0', pullPolicy: 'IfNotPresent',
};

const ca = makeCA();
const dir = mkdtempSync(join(tmpdir(), 'rdbg-webhook-'));
function writeCert(): string {
  const s = makeServing(ca, { ips: ['127.0.0.1'] });
  writeFileSync(join(dir, 'tls.crt'), s.cert);
  writeFileSync(join(dir, 'tls.key'), s.key);
  return s.serial.toUpperCase().replace(/^0+/, '');
}
const firstSerial = writeCert();
const server = new WebhookServer({ settings, tlsDir: dir, host: '127.0.0.1', port: 0, reloadMs: 3_600_000 });
let port = 0;
t.before(async () => { port = await server.start(); });
t.teardown(async () => { await server.stop(); rmSync(dir, { recursive: true, force: true }); });

interface Answer { status: number; body: string; serial: string }
function call(method: string, path: string, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, method, path, ca: ca.cert, agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
      const serial = String((res.socket as TLSSocket).getPeerCertificate().serialNumber ?? '').replace(/^0+/, '');
      let b = '';
      res.setEncoding('utf8').on('data', (c: string) => { b += c; }).on('end', () => resolve({ status: res.statusCode ?? 0, body: b, serial }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const pod: Pod = {
  apiVersion: 'v1', kind: 'Pod',
  metadata: { generateName: 'echo-', labels: { 'rdbg.dev/inject': 'enabled' }, annotations: { 'rdbg.dev/agent-port': 'http', 'rdbg.dev/workload': 'Deployment/echo' } },
  spec: { containers: [{ name: 'app', image: 'echo', ports: [{ name: 'http', containerPort: 8080 }] }] },
};
const review = (request: Record<string, unknown>): string => JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request });
const podRequest = (object: unknown, extra: Record<string, unknown> = {}): string =>
  review({ uid: 'u-1', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', namespace: 'shop', object, ...extra });

t.test('GET /healthz', async (t) => {
  const r = await call('GET', '/healthz');
  t.equal(r.status, 200);
  t.equal(r.body, 'ok\n');
  t.equal((await call('GET', '/nope')).status, 404);
  t.equal((await call('GET', '/inject')).status, 405);
});

t.test('a marked pod gets a JSON patch that adds the agent', async (t) => {
  const r = await call('POST', '/inject', podRequest(pod));
  t.equal(r.status, 200);
  const out = JSON.parse(r.body) as { apiVersion: string; kind: string; response: { uid: string; allowed: boolean; patchType: string; patch: string } };
  t.equal(out.apiVersion, 'admission.k8s.io/v1');
  t.equal(out.kind, 'AdmissionReview');
  t.equal(out.response.uid, 'u-1', 'the uid is echoed');
  t.equal(out.response.allowed, true);
  t.equal(out.response.patchType, 'JSONPatch');
  const patched = applyPatch(pod, JSON.parse(Buffer.from(out.response.patch, 'base64').toString()) as Op[]);
  t.same(patched.spec!.containers!.map((c) => c.name), ['app', 'rdbg-agent']);
  t.match(patched.spec!.containers![1].args, ['agent', 'run', '--workload', 'echo', '--namespace', 'shop']);
});

t.test('a pod it must not patch passes unchanged, with a warning when the user asked for an agent', async (t) => {
  const bad = structuredClone(pod);
  bad.metadata!.annotations!['rdbg.dev/agent-port'] = 'grpc';
  const r = JSON.parse((await call('POST', '/inject', podRequest(bad))).body) as { response: Record<string, unknown> };
  t.same(r.response, { uid: 'u-1', allowed: true, warnings: ['rdbg: no agent injected into pod echo-*: no container has a port named "grpc" (ports: http)'] });
  const plain = structuredClone(pod);
  plain.metadata!.labels = {};
  const p = JSON.parse((await call('POST', '/inject', podRequest(plain))).body) as { response: Record<string, unknown> };
  t.same(p.response, { uid: 'u-1', allowed: true }, 'no marks: silent');
  const upd = JSON.parse((await call('POST', '/inject', podRequest(pod, { operation: 'UPDATE' }))).body) as { response: Record<string, unknown> };
  t.same(upd.response, { uid: 'u-1', allowed: true }, 'only CREATE is patched');
  // A pod shape the injector chokes on is still allowed.
  const weird = { ...pod, spec: { containers: [{ name: 'app', ports: 'not-a-list' }] } };
  const w = JSON.parse((await call('POST', '/inject', podRequest(weird))).body) as { response: { allowed: boolean } };
  t.equal(w.response.allowed, true);
});

t.test('malformed input: 400 for that request only', async (t) => {
  for (const body of ['{', '[]', JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'x' } }), review({ kind: { kind: 'Pod' } }), review({ uid: 'x', object: 'pod' })]) {
    const r = await call('POST', '/inject', body);
    t.equal(r.status, 400, body.slice(0, 60));
    t.ok(r.body.length > 0, `says why: ${r.body.trim()}`);
  }
  t.equal((await call('POST', '/inject', podRequest(pod))).status, 200, 'the next request is served');
  t.equal(server.stats.badRequests, 5);
});

t.test('a renewed certificate is served without a restart', async (t) => {
  t.equal((await call('GET', '/healthz')).serial, firstSerial);
  const second = writeCert();
  server.reload();
  t.equal((await call('GET', '/healthz')).serial, second, 'new connections get the new certificate');
  writeFileSync(join(dir, 'tls.key'), 'garbage');
  server.reload();
  t.equal((await call('GET', '/healthz')).serial, second, 'a broken pair keeps the last good one');
  t.equal(server.stats.reloads, 1);
});
