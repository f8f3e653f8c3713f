// The user daemon's lookup of intercept targets (src/kube/workloads.ts), run
// where the apiserver is reachable (the test runs it in the laptop network
// namespace). One process, so the hints and the ReplicaSet owners it keeps
// last from one lookup to the next, as in the daemon. Reads one JSON request
// per line on stdin, answers one JSON line on stdout:
//
//   {"name":"web","namespace":"ns","port":"80","hint":true}
//   -> {"ok":true,"workload":"Deployment/web","pods":2,"calls":{"readNamespacedService":1,...},"rounds":1}
//
// "rounds" is the longest chain of API calls of which each started only after
// the one before it had ended: the sequential round trips of the lookup.
import * as readline from 'node:readline';
import { loadKube } from '../../src/kube/config';
import { Workloads, type ResolveHint } from '../../src/kube/workloads';

interface Call {
  method: string;
  start: number;
  end: number;
}

const kube = loadKube({ kubeconfigList: process.argv[2] });
const ws = new Workloads(kube.kc);
let calls: Call[] = [];
const clock = (): number => Number(process.hrtime.bigint());

/** Records every call of these methods of the client object. */
function track(target: object, methods: string[]): void {
  const o = target as Record<string, (...a: unknown[]) => Promise<unknown>>;
  for (const m of methods) {
    const f = o[m].bind(target);
    o[m] = (...a: unknown[]) => {
      const call: Call = { method: m, start: clock(), end: Infinity };
      calls.push(call);
      return f(...a).finally(() => {
        call.end = clock();
      });
    };
  }
}
track(ws.core, ['readNamespacedService', 'listNamespacedPod', 'readNamespacedPod']);
track(ws.objects, ['read']);

function rounds(list: Call[]): number {
  const sorted = [...list].sort((a, b) => a.start - b.start);
  const depth: number[] = [];
  sorted.forEach((c, i) => {
    depth[i] = 1 + Math.max(0, ...sorted.slice(0, i).map((p, j) => (p.end <= c.start ? depth[j] : 0)));
  });
  return Math.max(0, ...depth);
}

const hints = new Map<string, ResolveHint>();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const r = JSON.parse(line) as { name: string; namespace: string; port?: string; hint?: boolean };
  const key = `${r.namespace}/${r.name}:${r.port ?? ''}`;
  calls = [];
  ws.lookup(r.name, r.namespace, r.port, r.hint ? hints.get(key) : undefined).then(
    (found) => {
      hints.set(key, found.hint);
      const byMethod: Record<string, number> = {};
      for (const c of calls) byMethod[c.method] = (byMethod[c.method] ?? 0) + 1;
      const w = found.target.workload;
      const pods = found.pods.filter((p) => !p.metadata?.deletionTimestamp).length;
      process.stdout.write(JSON.stringify({ ok: true, workload: `${w.kind}/${w.name}`, appPort: found.target.appPort, pods, calls: byMethod, rounds: rounds(calls) }) + '\n');
    },
    (err: Error) => process.stdout.write(JSON.stringify({ ok: false, error: err.message }) + '\n'),
  );
});
rl.on('close', () => process.exit(0));
