// What an intercept switch rests on: the user daemon finds NAME's workload
// again in one round of parallel reads (the Service, the workload, the pods),
// and still follows the chain again when the cluster changed under it: a
// rollout (a new ReplicaSet), a Service that selects another workload, a
// Service gone.
import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import * as readline from 'node:readline';
import { cluster, sampleApp } from './cluster-helper';

interface Answer {
  ok: boolean;
  workload?: string;
  appPort?: number;
  pods?: number;
  calls?: Record<string, number>;
  rounds?: number;
  error?: string;
}

t.test('a second lookup of a name is one round of reads, and sees every change', async (t) => {
  const c = await cluster();
  const ns = await c.namespace(t, 'lookup');
  await c.apply(ns, [
    sampleApp({ name: 'web', image: c.image('echo-http'), port: 8080, servicePort: 80, replicas: 2 }),
    sampleApp({ name: 'other', image: c.image('echo-http'), port: 8080, replicas: 1 }),
  ].join('---\n'));
  await c.rollout(ns, 'web');
  await c.rollout(ns, 'other');

  const probe = spawn('ip', ['netns', 'exec', c.info.LAPTOP_NS, process.execPath, join(__dirname, 'lookup-probe.js'), c.info.ADMIN_KUBECONFIG], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => void probe.kill());
  const answers = readline.createInterface({ input: probe.stdout! })[Symbol.asyncIterator]();
  const lookup = async (name: string, hint = true, port = '80'): Promise<Answer> => {
    probe.stdin!.write(JSON.stringify({ name, namespace: ns, port, hint }) + '\n');
    const line = await answers.next();
    if (line.done) throw new Error('the lookup probe ended');
    return JSON.parse(line.value as string) as Answer;
  };

  const first = await lookup('web', false);
  t.match(first, { ok: true, workload: 'Deployment/web', appPort: 8080, pods: 2 }, 'service web is served by deployment web');
  t.equal(first.calls?.read, 2, 'the two pods\' ReplicaSet is read once, then the Deployment');
  t.ok((first.rounds ?? 0) >= 3, `the first lookup follows the chain (${first.rounds} rounds)`);

  const again = await lookup('web');
  t.match(again, { ok: true, workload: 'Deployment/web', appPort: 8080, pods: 2 }, 'the same target again');
  t.equal(again.rounds, 1, 'with the hint: one round of parallel reads');
  t.same(again.calls, { readNamespacedService: 1, read: 1, listNamespacedPod: 1 }, 'the Service, the Deployment and its pods; no ReplicaSet');

  // A rollout: the pods now belong to a new ReplicaSet, read once more.
  await c.kubectl(['-n', ns, 'patch', 'deployment', 'web', '--type', 'merge', '-p', '{"spec":{"template":{"metadata":{"annotations":{"rolled":"1"}}}}}']);
  await c.rollout(ns, 'web');
  const rolled = await lookup('web');
  t.match(rolled, { ok: true, workload: 'Deployment/web', pods: 2 }, 'after a rollout: still deployment web');
  t.ok((rolled.rounds ?? 0) <= 2, `the new ReplicaSet costs one more round at most (${rolled.rounds})`);

  // The Service now selects another workload: the hint no longer holds.
  await c.kubectl(['-n', ns, 'patch', 'service', 'web', '--type', 'merge', '-p', '{"spec":{"selector":{"app":"other"}}}']);
  const moved = await lookup('web');
  t.match(moved, { ok: true, workload: 'Deployment/other', pods: 1 }, 'the Service\'s new workload, not the hinted one');
  t.equal((await lookup('web')).rounds, 1, 'and its own hint is one round again');

  // The Service is gone: the name is the Deployment's.
  await c.kubectl(['-n', ns, 'delete', 'service', 'web']);
  const bare = await lookup('web', true, '8080');
  t.match(bare, { ok: true, workload: 'Deployment/web', appPort: 8080 }, 'without the Service, the Deployment of that name');
  const bareAgain = await lookup('web', true, '8080');
  t.match(bareAgain, { ok: true, workload: 'Deployment/web', rounds: 1 }, 'one round for a workload by name too');
  t.same(bareAgain.calls, { readNamespacedService: 1, read: 1, listNamespacedPod: 1 }, 'the Service is looked for, so that a new one would win');

  // KIND/NAME: no Service is read.
  await lookup('deployment/other', false, '8080');
  const kind = await lookup('deployment/other', true, '8080');
  t.match(kind, { ok: true, workload: 'Deployment/other', rounds: 1 });
  t.same(kind.calls, { read: 1, listNamespacedPod: 1 }, 'KIND/NAME: the workload and its pods');

  const missing = await lookup('nosuch', true);
  t.match(missing, { ok: false, error: /no service, deployment, statefulset, replicaset or daemonset named "nosuch"/ }, 'a name that is nothing: the usual error');
  probe.stdin!.end();
});
