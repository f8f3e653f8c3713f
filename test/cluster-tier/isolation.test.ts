// Nothing of the cluster is reachable from, or routes into, the machine's own
// network namespace; the laptop namespace reaches only the apiserver's link.
// All checks read tables; none sends a packet.
import t from 'tap';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { cluster, exec } from './cluster-helper';

const clusterNets = ['10.244.', '10.96.', '198.51.100.', '203.0.113.'];

t.test('the machine namespace has no link, route or rule of the cluster', async (t) => {
  const c = await cluster();
  const links = await exec('ip', ['-d', '-o', 'link', 'show']);
  for (const ns of [c.info.NODE_NS, c.info.LAPTOP_NS]) {
    t.notMatch(links.stdout, `link-netns ${ns}`, `no interface in the root ns is paired with ${ns}`);
  }
  t.notMatch(links.stdout, /: cni0[:@]/, 'no CNI bridge in the root ns');
  const routes = (await exec('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout;
  for (const net of clusterNets) t.notOk(routes.includes(net), `no root route mentions ${net}`);
  const rules = (await exec('iptables-save', [])).stdout;
  t.notMatch(rules, /KUBE-|CNI-|RDBG-LAPTOP/, 'no kube-proxy or CNI rule in the root ns');

  // every component runs in the node namespace, none in the root one
  const rootNet = readlinkSync('/proc/self/ns/net');
  const nodeNet = (await c.node('readlink', ['/proc/self/ns/net'])).stdout.trim();
  t.not(nodeNet, rootNet);
  const pidDir = `${c.info.STATE}/pids`;
  const names = readdirSync(pidDir).filter((f) => f.endsWith('.pid'));
  t.ok(names.length >= 7, 'all components have pid files');
  for (const f of names) {
    const pid = readFileSync(`${pidDir}/${f}`, 'utf8').trim();
    t.equal(readlinkSync(`/proc/${pid}/ns/net`), nodeNet, `${f.replace('.pid', '')} runs in ${c.info.NODE_NS}`);
  }
});

t.test('the laptop namespace has a route to the apiserver link only', async (t) => {
  const c = await cluster();
  const routes = (await c.laptop('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout;
  t.notMatch(routes, /^default/m, 'no default route');
  for (const net of ['10.244.', '10.96.', '203.0.113.']) t.notOk(routes.includes(net), `no route mentions ${net}`);
  for (const ip of [c.info.DNS_SVC_IP, '10.244.0.2', c.info.NODE_IP]) {
    const r = await c.laptop('ip', ['route', 'get', ip], { check: false });
    t.not(r.code, 0, `${ip} is unroutable from the laptop`);
    t.match(r.stderr, /unreachable/i);
  }
  const api = await c.laptop('ip', ['route', 'get', c.info.LINK_NODE_IP]);
  t.match(api.stdout, 'dev cluster0');
  const version = await c.kubectl(['version', '-o', 'json']);
  t.match(JSON.parse(version.stdout).serverVersion.gitVersion, `v${c.info.K8S_VERSION}`);
});
