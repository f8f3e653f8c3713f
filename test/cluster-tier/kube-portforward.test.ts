// rdbg's own port-forward (src/kube): PodForwarder from the laptop netns,
// through the real apiserver, kubelet and containerd, to sample pods.
// The network side runs in kube-portforward-client.js inside the laptop netns.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import t from 'tap';
import { cluster, sampleApp, type Cluster } from './cluster-helper';

const CLIENT = join(__dirname, 'kube-portforward-client.js');

async function client<T = Record<string, unknown>>(c: Cluster, mode: string, args: Record<string, unknown>, timeoutMs = 180_000): Promise<T> {
  const r = await c.laptop('node', [CLIENT, mode, JSON.stringify({ kubeconfig: c.info.ADMIN_KUBECONFIG, ...args })], { timeoutMs, check: false });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new Error(`client ${mode}: exit ${r.code}: ${r.stdout.slice(-2000)}${r.stderr.slice(-2000)}`);
  }
}

async function podNames(c: Cluster, ns: string, selector: string, kubeconfig?: string): Promise<string[]> {
  const pods = await c.kubectlJson<{ items: Array<{ metadata: { name: string } }> }>(['-n', ns, 'get', 'pods', '-l', selector], { kubeconfig });
  return pods.items.map((p) => p.metadata.name);
}

t.test('PodForwarder through the apiserver', async (t) => {
  const c = await cluster();
  const ns = await c.namespace(t, 'pf-kube-portforward');
  await c.apply(ns, [
    sampleApp({ name: 'echo', image: c.image('tcp-echo'), port: 9000 }),
    sampleApp({ name: 'greeter', image: c.image('tcp-echo'), port: 9000, env: { GREETING: 'pod' } }),
    sampleApp({ name: 'web', image: c.image('echo-http'), port: 8080 }),
  ].join('---\n'));
  await Promise.all(['echo', 'greeter', 'web'].map((d) => c.rollout(ns, d)));
  const echo = { namespace: ns, selector: 'app=echo', port: 9000 };

  t.test('64 MiB each way, byte for byte', async (t) => {
    const r = await client<{ sentSha: string; gotSha: string; bytes: number; mbps: number; stats: { bytesIn: number; bytesOut: number; connections: number; failures: number; protocol: string; tunnels: number } }>(c, 'bulk', { ...echo, mib: 64 });
    t.equal(r.stats.protocol, 'spdy', 'a v1.34 apiserver offers the SPDY tunnel (KEP-4006)');
    t.equal(r.bytes, 64 * 1024 * 1024);
    t.equal(r.gotSha, r.sentSha, 'the echo is the same bytes (sha256)');
    t.equal(r.stats.bytesOut, r.bytes, 'bytes to the pod counted');
    t.ok(r.stats.bytesIn >= r.bytes, 'bytes from the pod counted');
    t.equal(r.stats.failures, 0);
    t.comment(`throughput ${r.mbps.toFixed(1)} MB/s each way`);
  });

  t.test('50 concurrent connections', async (t) => {
    const r = await client<{ ok: number; bad: unknown[]; stats: { connections: number; failures: number; tunnels: number } }>(c, 'concurrent', { ...echo, n: 50 });
    t.equal(r.ok, 50, `every connection echoed its own 256 KiB: ${JSON.stringify(r.bad).slice(0, 500)}`);
    t.equal(r.stats.connections, 50);
    t.equal(r.stats.tunnels, 1, 'all 50 share one tunnel to the pod');
    t.equal(r.stats.failures, 0);
  });

  t.test('half-close from the laptop: the reply arrives whole, then the connection ends', async (t) => {
    // The FIN never reaches the pod as a half-close: v4 cannot carry it, and over SPDY
    // containerd closes the pod connection 1 s after the FIN whatever the pod still sends
    // (measured: a FIN sent at once ends the connection 1.0 s later, tcp-echo never sees EOF).
    // So the forwarder lingers while the pod sends, then FINs: about 1 s + 1 s.
    const r = await client<{ sent: number; got: number; same: boolean; ended: boolean; error?: string; ms: number }>(c, 'half-close', echo);
    t.equal(r.got, r.sent, 'all echoed bytes arrived after our FIN');
    t.ok(r.same, 'byte for byte');
    t.ok(r.ended, `the connection ended (error: ${r.error})`);
    t.ok(r.ms < 5000, `ended in ${r.ms} ms`);
  });

  t.test('the pod closes: the whole answer arrives, then the end', async (t) => {
    const r = await client<{ status: string; bodyJson?: { path: string; name: string }; ended: boolean; error?: string }>(c, 'pod-close', { namespace: ns, selector: 'app=web', port: 8080 });
    t.match(r.status, /^HTTP\/1\.[01] 200/);
    t.equal(r.bodyJson?.path, '/pod-close', 'the complete JSON body');
    t.ok(r.ended, `a clean end, not a reset (error: ${r.error})`);
  });

  t.test('nothing listens on the pod port: the connection is reset and the error says why', async (t) => {
    const r = await client<{ got: number; error?: string; failures: string[] }>(c, 'refused', { ...echo, port: 9001 });
    t.equal(r.got, 0);
    t.equal(r.error, 'ECONNRESET', 'the laptop client sees a reset');
    t.match(r.failures[0] ?? '', /port 9001: connection refused \(nothing listens on port 9001 in the pod\)/);
  });

  t.test('the pod is deleted: new connections reach its replacement', async (t) => {
    const r = await client<{ before: string; after: string; ms: number; seen: string[] }>(c, 'failover', {
      namespace: ns, selector: 'app=greeter', port: 9000, kubectl: c.info.KUBECTL,
    });
    t.match(r.before, /^greeter-/);
    t.match(r.after, /^greeter-/);
    t.not(r.after, r.before, `reached the new pod after ${r.ms} ms (seen: ${r.seen.join(', ')})`);
    const now = await podNames(c, ns, 'app=greeter');
    t.ok(now.includes(r.after), 'the pod reached is the live replacement');
  });

  t.test('user kubeconfig: refused where it has no rights, allowed in its own namespace', async (t) => {
    const [pod] = await podNames(c, ns, 'app=echo');
    const userArgs = { kubeconfig: c.info.USER_KUBECONFIG, port: 9000 };
    const refused = await client<{ ok: boolean; code?: string; message: string; hint?: string }>(c, 'open', { ...userArgs, namespace: ns, pod });
    t.equal(refused.ok, false);
    t.equal(refused.code, 'RDBG_PERMISSION');
    t.match(refused.message, `lacks "get" and "create" on "pods/portforward" in namespace "${ns}"`);
    t.match(refused.hint ?? '', 'kubectl auth can-i get pods/portforward');

    const listing = await client<{ error?: string; failures: string[] }>(c, 'bulk', { ...userArgs, namespace: ns, selector: 'app=echo', mib: 1 });
    t.match(listing.error ?? '', 'ECONNRESET', 'the forwarder resets the connection it cannot forward');
    t.match(listing.failures[0] ?? '', `may not list pods in namespace "${ns}"`, 'and says why: it cannot even list the pods');

    // rdbg-user is shared: a deployment of our own, removed at the end.
    const own = c.info.USER_NAMESPACE;
    const name = `pf-echo-${randomBytes(3).toString('hex')}`;
    await c.kubectl(['-n', own, 'apply', '-f', '-'], { kubeconfig: c.info.USER_KUBECONFIG, input: sampleApp({ name, image: c.image('tcp-echo'), port: 9000 }) });
    t.teardown(() => c.kubectl(['-n', own, 'delete', 'deployment,service', name, '--wait=false'], { kubeconfig: c.info.USER_KUBECONFIG, check: false }));
    await c.kubectl(['-n', own, 'rollout', 'status', `deployment/${name}`, '--timeout=120s'], { kubeconfig: c.info.USER_KUBECONFIG, timeoutMs: 130_000 });
    const [ownPod] = await podNames(c, own, `app=${name}`, c.info.USER_KUBECONFIG);
    const allowed = await client<{ ok: boolean; echoed?: string; message?: string }>(c, 'open', { ...userArgs, namespace: own, pod: ownPod });
    t.ok(allowed.ok, `allowed in ${own}: ${allowed.message}`);
    t.equal(allowed.echoed, 'rbac-ok');
    const bulk = await client<{ sentSha: string; gotSha: string }>(c, 'bulk', { ...userArgs, namespace: own, selector: `app=${name}`, mib: 4 });
    t.equal(bulk.gotSha, bulk.sentSha, 'and a PodForwarder works there too');
  });
});
