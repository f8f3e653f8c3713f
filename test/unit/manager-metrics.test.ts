import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { startLoopbackManager, type LoopbackManager } from '../helpers/loopback-manager';
import { managerMetrics, serveMetrics } from '../../manager/metrics';

// The manager's /metrics, read by the Prometheus project's own text-format
// parser (python3-prometheus-client), after real flows on the data plane.

const PARSER = `
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = {"type": fam.type, "samples": [[s.name, s.labels, s.value if math.isfinite(s.value) else None] for s in fam.samples]}
print(json.dumps(out))
`;

interface Family {
  type: string;
  samples: [string, Record<string, string>, number][];
}

let lm: LoopbackManager;
let server: http.Server;
let url = '';
let echoPort = 0;
let echo: net.Server;

t.before(async () => {
  echo = net.createServer((s) => s.on('error', () => undefined).pipe(s)).listen(0, '127.0.0.1');
  await new Promise((r) => echo.once('listening', r));
  echoPort = (echo.address() as net.AddressInfo).port;
  lm = await startLoopbackManager();
  const registry: Registry = managerMetrics(lm.mgr);
  server = await serveMetrics('127.0.0.1:0', registry);
  url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
});
t.teardown(async () => {
  server?.close();
  await lm?.stop();
  echo?.close();
});

/** One flow on the HTTP/2 data plane: its dial code, and what came back for `send`. */
async function flow(host: string, port: number, send = ''): Promise<{ dial: string; body: string }> {
  const h2 = http2.connect(`http://127.0.0.1:${lm.mgr.data.port}`);
  h2.on('error', () => undefined);
  try {
    const req = h2.request({ ':method': 'POST', ':path': '/rdbg.v1/flow', 'rdbg-session': lm.session, 'rdbg-protocol': 'tcp', 'rdbg-host': host, 'rdbg-port': String(port) });
    req.on('error', () => undefined);
    req.end(send);
    const h = await new Promise<http2.IncomingHttpHeaders>((r) => req.once('response', r));
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return { dial: String(h['rdbg-dial']), body: Buffer.concat(chunks).toString() };
  } finally {
    h2.close();
  }
}

async function scrape(): Promise<{ families: Record<string, Family>; contentType: string }> {
  const res = await fetch(`${url}/metrics`);
  const text = await res.text();
  const parsed = await new Promise<string>((resolve, reject) => {
    const py = spawn('/usr/bin/python3', ['-c', PARSER], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    py.stdout.on('data', (d: Buffer) => (out += d.toString()));
    py.stderr.on('data', (d: Buffer) => (err += d.toString()));
    py.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`the parser refused the metrics: ${err}`))));
    py.stdin.end(text);
  });
  return { families: JSON.parse(parsed) as Record<string, Family>, contentType: res.headers.get('content-type') ?? '' };
}

const value = (f: Family | undefined, labels: Record<string, string> = {}, name?: string): number | undefined =>
  f?.samples.find(([n, l]) => (!name || n === name) && Object.entries(labels).every(([k, v]) => l[k] === v))?.[2];

t.test('the parser is the Prometheus client library, not ours', async (t) => {
  const r = spawnSync('/usr/bin/python3', ['-c', 'import prometheus_client, os; print(os.path.dirname(prometheus_client.__file__))'], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /dist-packages\/prometheus_client/);
});

t.test('sessions, flows, bytes and dial failures by reason, as Prometheus reads them', async (t) => {
  const before = (await scrape()).families;
  t.equal(value(before.rdbg_manager_sessions), 1, 'the one session of the test');
  const ok = await flow('127.0.0.1', echoPort, 'x'.repeat(1000));
  t.equal(ok.dial, 'OK');
  t.equal(ok.body.length, 1000, 'echoed');
  const closed = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  t.equal((await flow('127.0.0.1', closed)).dial, 'REFUSED');
  t.equal((await flow('127.0.0.1', closed)).dial, 'REFUSED');
  t.equal((await flow('nosuch.nowhere.invalid', 80)).dial, 'NAME_ERROR');

  const { families: m, contentType } = await scrape();
  t.match(contentType, /^text\/plain; version=0\.0\.4/, 'the text exposition format');
  t.equal(m.rdbg_manager_sessions.type, 'gauge');
  t.equal(m.rdbg_manager_flows_opened.type, 'counter', 'a counter (its samples end in _total)');
  t.equal(value(m.rdbg_manager_flows_opened, {}, 'rdbg_manager_flows_opened_total'), (value(before.rdbg_manager_flows_opened) ?? 0) + 1, 'one flow opened');
  t.equal(value(m.rdbg_manager_dial_failures, { reason: 'REFUSED' }), 2, 'two refused dials');
  t.equal(value(m.rdbg_manager_dial_failures, { reason: 'NAME_ERROR' }), 1, 'one name that does not resolve');
  t.equal(value(m.rdbg_manager_bytes, { direction: 'out' }), 1000, 'bytes to destinations');
  t.equal(value(m.rdbg_manager_bytes, { direction: 'in' }), 1000, 'bytes from them');
  t.equal(value(m.rdbg_manager_flows_active), 0, 'no flow open now');
  t.equal(value(m.rdbg_manager_intercepts, { state: 'ACTIVE' }), 0);
  t.equal(value(m.rdbg_manager_agents), 0);
  t.equal(value(m.rdbg_manager_info, { version: require(join(__dirname, '../../../package.json')).version }), 1, 'the version');
  t.ok(m.rdbg_manager_process_cpu_seconds, "the process's own metrics too");
  // A second scrape counts nothing twice.
  t.equal(value((await scrape()).families.rdbg_manager_dial_failures, { reason: 'REFUSED' }), 2, 'a scrape changes no counter');
});

t.test('a session that leaves is no longer counted', async (t) => {
  await new Promise<void>((resolve, reject) => lm.client.depart({ session_id: lm.session }, (err) => (err ? reject(err) : resolve())));
  t.equal(value((await scrape()).families.rdbg_manager_sessions), 0);
});

t.test('anything but GET /metrics is 404; the metrics listen nowhere else', async (t) => {
  t.equal((await fetch(`${url}/`)).status, 404);
  t.equal((await fetch(`${url}/metrics`, { method: 'POST' })).status, 404);
  await t.rejects(serveMetrics(`127.0.0.1:${(server.address() as net.AddressInfo).port}`, managerMetrics(lm.mgr)), { message: /--metrics-listen .*: the port is in use/ });
});
