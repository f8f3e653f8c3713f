// The cluster itself works: sample apps run as Deployments with Services,
// and a pod reaches them by name through CoreDNS and kube-proxy.
import t from 'tap';
import { cluster, sampleApp } from './cluster-helper';

t.test('sample apps behind Services, reached by name from a pod', async (t) => {
  const c = await cluster();
  const ns = await c.namespace(t, 'services');
  await c.apply(ns, [
    sampleApp({ name: 'echo', image: c.image('echo-http'), port: 8080, servicePort: 80, replicas: 2 }),
    sampleApp({ name: 'front', image: c.image('echo-http'), port: 8080, servicePort: 80 }),
    sampleApp({ name: 'tcp-echo', image: c.image('tcp-echo'), port: 9000 }),
    sampleApp({ name: 'grpc-echo', image: c.image('grpc-echo'), port: 50051, protocolName: 'grpc' }),
  ].join('---\n'));
  for (const d of ['echo', 'front', 'tcp-echo', 'grpc-echo']) await c.rollout(ns, d);

  // DNS: the pod's resolv.conf points at the cluster DNS, which knows the Service.
  const resolv = await c.execIn(ns, 'deploy/front', ['cat', '/etc/resolv.conf']);
  t.match(resolv.stdout, new RegExp(`nameserver ${c.info.DNS_SVC_IP.replace(/\./g, '\\.')}`));
  t.match(resolv.stdout, new RegExp(`search ${ns}\\.svc\\.${c.info.CLUSTER_DOMAIN}`));
  const svc = await c.kubectlJson<{ spec: { clusterIP: string } }>(['-n', ns, 'get', 'service', 'echo']);
  const lookup = await c.execIn(ns, 'deploy/front', ['nslookup', `echo.${ns}.svc.${c.info.CLUSTER_DOMAIN}`]);
  t.match(lookup.stdout, svc.spec.clusterIP, 'CoreDNS resolves the Service to its ClusterIP');

  // HTTP by short name through kube-proxy; both replicas answer in time.
  const seen = new Set<string>();
  for (let i = 0; i < 20 && seen.size < 2; i++) {
    const r = await c.execIn(ns, 'deploy/front', ['wget', '-qO-', 'http://echo/hello']);
    const body = JSON.parse(r.stdout) as { name: string; pod: string; path: string };
    t.equal(body.name, 'echo');
    t.equal(body.path, '/hello');
    seen.add(body.pod);
  }
  t.equal(seen.size, 2, 'the Service balances over both replicas');

  // One service calls another and propagates the request id.
  const chained = await c.execIn(ns, 'deploy/front', ['wget', '-qO-', '--header', 'x-request-id: req-42',
    'http://front/call?url=http://echo.' + ns + '.svc.' + c.info.CLUSTER_DOMAIN + '/next']);
  const cb = JSON.parse(chained.stdout) as { call: { status: number; body: { name: string; headers: Record<string, string> } } };
  t.equal(cb.call.status, 200);
  t.equal(cb.call.body.name, 'echo');
  t.equal(cb.call.body.headers['x-request-id'], 'req-42', 'header propagated across the hop');

  // TCP echo through its Service (busybox nc in the pod).
  const tcp = await c.execIn(ns, 'deploy/front', ['sh', '-c', 'echo ping-123 | nc -w 2 tcp-echo 9000']);
  t.match(tcp.stdout, 'ping-123');

  // gRPC through the Service: a small HTTP/2 client run by node inside the pod.
  const grpcClient = `
    const h2 = require('node:http2');
    const msg = Buffer.from([0x0a, 5, ...Buffer.from('hello')]);
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
    const s = h2.connect('http://grpc-echo:50051');
    const req = s.request({ ':method': 'POST', ':path': '/echo.Echo/Say', 'content-type': 'application/grpc', te: 'trailers' });
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('trailers', (tr) => { console.log('status=' + tr['grpc-status']); });
    req.on('end', () => { console.log(Buffer.concat(chunks).subarray(5).toString('latin1')); s.close(); });
    req.end(frame);`;
  const grpc = await c.execIn(ns, 'deploy/front', ['node', '-e', grpcClient]);
  t.match(grpc.stdout, 'status=0');
  t.match(grpc.stdout, 'hello');
  t.match(grpc.stdout, 'grpc-echo-', 'answered by a grpc-echo pod');
});

t.test('the rdbg image runs Node with the built package and its dependencies', async (t) => {
  const c = await cluster();
  const ns = await c.namespace(t, 'rdbg-image');
  const check = [
    "const fs = require('node:fs');",
    "const pkg = require('/app/package.json');",
    "for (const d of Object.keys(pkg.dependencies || {})) require.resolve(d, { paths: ['/app'] });",
    "if (!fs.existsSync('/app/dist/bin/rdbg.js')) throw new Error('no dist/bin/rdbg.js');",
    "console.log('rdbg-image-ok ' + pkg.name + ' ' + pkg.version + ' node ' + process.version);",
  ].join(' ');
  await c.kubectl(['-n', ns, 'run', 'rdbg-check', `--image=${c.image('rdbg')}`, '--image-pull-policy=Never',
    '--restart=Never', '--command', '--', 'node', '-e', check]);
  await c.kubectl(['-n', ns, 'wait', '--for=jsonpath={.status.phase}=Succeeded', 'pod/rdbg-check', '--timeout=90s'], { timeoutMs: 100_000 });
  const logs = await c.kubectl(['-n', ns, 'logs', 'rdbg-check']);
  t.match(logs.stdout, /^rdbg-image-ok rdbg /, 'package.json, dist/ and node_modules are in the image (needs `make build` before the images)');
});
