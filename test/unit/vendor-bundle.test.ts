// The binary loads the Kubernetes client from the build's bundle
// (src/core/vendor.ts): the same API as the package, working as the package
// does, in a process started as `rdbg` starts its own.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bundlePath } from '../../src/core/vendor';
import { packageRoot } from '../../src/core/version';

const probe = `
const { useBundledClients } = require(${JSON.stringify(join(packageRoot(), 'dist', 'src', 'core', 'vendor.js'))});
const bundled = process.argv[1] === 'bundle' && useBundledClients();
const k8s = require('@kubernetes/client-node');
const kc = new k8s.KubeConfig();
kc.loadFromString(JSON.stringify({
  apiVersion: 'v1', kind: 'Config', 'current-context': 'c',
  clusters: [{ name: 'k', cluster: { server: 'https://127.0.0.1:6443', 'insecure-skip-tls-verify': true } }],
  users: [{ name: 'u', user: { token: 'abc' } }],
  contexts: [{ name: 'c', context: { cluster: 'k', user: 'u', namespace: 'ns1' } }],
}));
const core = kc.makeApiClient(k8s.CoreV1Api);
// One request (nothing listens there): node-fetch's Request parses its URL.
core.listNamespacedPod({ namespace: 'ns1' }).catch(() => undefined).then(() => { if (process.argv[2] === 'warn') process.emitWarning('a warning of our own', 'Warning', 'RDBG_TEST');
console.log(JSON.stringify({
  bundled, from: require.resolve('@kubernetes/client-node'),
  exports: Object.keys(k8s).sort(),
  server: kc.getCurrentCluster().server, namespace: kc.getContextObject('c').namespace,
  api: typeof core.listNamespacedPod, watch: typeof new k8s.Watch(kc).watch,
})); });`;

const run = (mode: string): { bundled: boolean; from: string; exports: string[]; server: string; namespace: string; api: string; watch: string } =>
  JSON.parse(execFileSync(process.execPath, ['-e', probe, mode], { cwd: packageRoot(), encoding: 'utf8' }));

t.test('the bundle stands in for the package', async (t) => {
  t.ok(existsSync(bundlePath()), `the build made ${bundlePath()}`);
  const pkg = run('package');
  const bundle = run('bundle');
  t.equal(bundle.bundled, true);
  t.equal(bundle.from, bundlePath(), 'require() finds the bundle');
  t.not(pkg.from, bundlePath(), 'without the hook: the package');
  t.same(bundle.exports, pkg.exports, 'the same exports');
  t.ok(bundle.exports.length > 100, `${bundle.exports.length} exports`);
  t.match(bundle, { server: 'https://127.0.0.1:6443', namespace: 'ns1', api: 'function', watch: 'function' }, 'a kubeconfig loads, clients are made');
});

// tap gives its tests (and their children) NODE_OPTIONS=--no-warnings: the probe turns warnings on again, as users have them.

t.test('the bundle loads without a warning on this Node line', async (t) => {
  // Node 21+ warns (DEP0040) on require('punycode'), which node-fetch's whatwg-url does: the bundle takes the npm package.
  const r = spawnSync(process.execPath, ['--warnings', '-e', probe, 'bundle'], { cwd: packageRoot(), encoding: 'utf8' });
  t.equal(r.status, 0);
  t.equal(r.stderr, '', `nothing on stderr after a request (Node ${process.versions.node}; DEP0169: node-fetch's url.parse)`);
  const w = spawnSync(process.execPath, ['--warnings', '-e', probe, 'bundle', 'warn'], { cwd: packageRoot(), encoding: 'utf8' });
  t.match(w.stderr, /RDBG_TEST.*a warning of our own/, `other warnings are still printed (${w.stderr.slice(0, 300)} ${w.stdout.slice(0, 100)})`);
  t.notMatch(w.stderr, /DEP0169/);
});

// gRPC from its bundles: a real call through our services (src/rpc/services.ts), server and client in one process.
const grpcProbe = `
const { useBundledClients } = require(${JSON.stringify(join(packageRoot(), 'dist', 'src', 'core', 'vendor.js'))});
const bundled = process.argv[1] === 'bundle' && useBundledClients();
const grpc = require('@grpc/grpc-js');
const { managerPackage, CHANNEL_OPTIONS } = require(${JSON.stringify(join(packageRoot(), 'dist', 'src', 'rpc', 'services.js'))});
const Manager = managerPackage().Manager;
const server = new grpc.Server();
server.addService(Manager.service, { arrive: (call, cb) => cb(null, { session_id: 'for ' + call.request.user + ' ' + call.request.protocol }) });
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  const client = new Manager('127.0.0.1:' + port, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  client.arrive({ client_version: 'v', protocol: 7, user: 'u@h' }, (e, res) => {
    console.log(JSON.stringify({ bundled, err: e && e.message, session: res && res.session_id, grpc: require.resolve('@grpc/grpc-js'), pb: require.resolve('protobufjs/light'), exports: Object.keys(grpc).sort() }));
    client.close();
    server.forceShutdown();
  });
});`;

t.test('gRPC and protobufjs load from their bundles and carry a call', async (t) => {
  const run = (mode: string): { bundled: boolean; err: string | null; session: string; grpc: string; pb: string; exports: string[] } =>
    JSON.parse(execFileSync(process.execPath, ['-e', grpcProbe, mode], { cwd: packageRoot(), encoding: 'utf8' }));
  const pkg = run('package');
  const bundle = run('bundle');
  t.equal(bundle.bundled, true);
  t.equal(bundle.grpc, bundlePath('@grpc/grpc-js'), 'require() finds the gRPC bundle');
  t.equal(bundle.pb, bundlePath('protobufjs/light'), 'and the protobufjs bundle');
  t.not(pkg.grpc, bundle.grpc, 'without the hook: the package');
  t.same(bundle.exports, pkg.exports, 'the same exports');
  t.equal(bundle.err, null);
  t.equal(bundle.session, 'for u@h 7', 'a request and its answer, encoded and decoded');
  t.equal(pkg.session, bundle.session);
});

// The root daemon's worker is forked as a file of its own, not through bin/rdbg.js; its watchdog lives the whole session.
const loadedBy = (file: string): { grpcFiles: string[]; bundles: string[] } => {
  const code = `require(${JSON.stringify(join(packageRoot(), 'dist', 'daemon', 'root', file))});
const files = Object.keys(require.cache);
console.log(JSON.stringify({ grpcFiles: files.filter((f) => f.includes('node_modules/@grpc/') || f.includes('node_modules/protobufjs/')), bundles: files.filter((f) => f.includes('/dist/vendor/')) }));`;
  return JSON.parse(execFileSync(process.execPath, ['-e', code], { cwd: packageRoot(), encoding: 'utf8' }));
};

t.test('the root daemon worker loads gRPC from its bundles, and its watchdog loads no gRPC at all', async (t) => {
  const worker = loadedBy('worker.js');
  t.same(worker.grpcFiles, [], 'no file of the gRPC or protobufjs packages');
  t.same(worker.bundles.sort(), [bundlePath('@grpc/grpc-js'), bundlePath('protobufjs/light')].sort(), 'their bundles instead');
  const watchdog = loadedBy('watchdog.js');
  t.same(watchdog, { grpcFiles: [], bundles: [] }, 'the watchdog undoes a session without the engine, gRPC or the data plane');
});
