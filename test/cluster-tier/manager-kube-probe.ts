// One call to a traffic manager, made from wherever this runs (the test runs
// it inside the node's network namespace, to reach the manager both over
// loopback and over the node's address). Prints one JSON line.
//
//   node manager-kube-probe.js '{"grpc":"127.0.0.1:8081","call":"arrive","req":{...}}'
//   node manager-kube-probe.js '{"h2":"203.0.113.10:8082","headers":{":path":"/rdbg.v1/flow",...}}'
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import { CHANNEL_OPTIONS, managerPackage } from '../../src/rpc/services';

interface Probe {
  grpc?: string;
  call?: string;
  req?: unknown;
  h2?: string;
  headers?: Record<string, string>;
}

function out(v: unknown): void {
  process.stdout.write(JSON.stringify(v) + '\n');
  process.exit(0);
}

const p = JSON.parse(process.argv[2]) as Probe;
setTimeout(() => out({ ok: false, code: -1, details: 'probe timed out' }), 15_000).unref();
if (p.grpc) {
  const Manager = managerPackage().Manager;
  type Unary = (req: unknown, opts: object, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;
  const client = new Manager(p.grpc, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as Record<string, Unary>;
  client[p.call!].call(
    client,
    p.req,
    { deadline: Date.now() + 12_000 },
    (err, res) => (err ? out({ ok: false, code: err.code, details: err.details }) : out({ ok: true, res })),
  );
} else if (p.h2) {
  const s = http2.connect(`http://${p.h2}`);
  s.on('error', (err) => out({ ok: false, code: -2, details: err.message }));
  const st = s.request(p.headers ?? {});
  st.on('response', (h) => {
    out({ ok: true, res: { status: h[':status'], dial: h['rdbg-dial'], message: decodeURIComponent(String(h['rdbg-message'] ?? '')), address: h['rdbg-address'] } });
  });
  st.on('error', (err) => out({ ok: false, code: -3, details: err.message }));
} else out({ ok: false, code: -4, details: 'nothing to probe' });
