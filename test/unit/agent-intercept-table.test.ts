import t from 'tap';
import { InterceptTable } from '../../agent/intercept-table';
import { isKubeProbe, routeRequest } from '../../agent/route';
import { forwardRaw } from '../../agent/http-headers';
import type { InterceptInfo__Output } from '../../src/gen/rdbg/v1/InterceptInfo';
import type { InterceptSpec__Output } from '../../src/gen/rdbg/v1/InterceptSpec';

function info(id: string, spec: Partial<InterceptSpec__Output>): InterceptInfo__Output {
  return {
    id,
    owner: `${id}@laptop`,
    session_id: 's',
    state: 'ACTIVE',
    requests: 0,
    mirrors_dropped: 0,
    env: {},
    agents: 1,
    message: '',
    files_pod: '',
    spec: { workload: 'shop', namespace: 'default', port: 8080, headers: [], path_prefix: '', mirror: false, replace: false, mount: false, local_port: 3000, local_host: '', ...spec },
  };
}

t.test('only intercepts for the app or listen port apply', async (t) => {
  const table = new InterceptTable([8080, 9900]);
  table.update([info('a', { port: 8080 }), info('b', { port: 9900, headers: [{ name: 'x', value: '1', regex: false }] }), info('c', { port: 7 })]);
  t.equal(table.size, 2);
  t.equal(table.get('c'), undefined);
  t.equal(table.globalDivert()?.id, 'a');
  t.equal(table.get('a')?.target, '127.0.0.1:3000');
});

t.test('routing: most specific rule wins, probes go to the app, mirrors are listed', async (t) => {
  const table = new InterceptTable([8080]);
  table.update([
    info('alice', { headers: [{ name: 'x-user', value: 'alice', regex: false }] }),
    info('alice-api', { headers: [{ name: 'x-user', value: 'alice', regex: false }], path_prefix: '/api' }),
    info('re', { headers: [{ name: 'x-team', value: 'blue|green', regex: true }] }),
    info('copy', { path_prefix: '/api', mirror: true }),
  ]);
  t.equal(routeRequest(table, { 'x-user': 'alice' }, '/api/x').divert?.id, 'alice-api');
  t.equal(routeRequest(table, { 'x-user': 'alice' }, '/web').divert?.id, 'alice');
  t.equal(routeRequest(table, { 'x-team': 'green' }, '/').divert?.id, 're');
  t.equal(routeRequest(table, { 'x-team': 'greenish' }, '/').divert, undefined, 'regex is anchored');
  t.equal(routeRequest(table, { 'x-user': ['bob', 'alice'] }, '/').divert?.id, 'alice', 'repeated headers');
  t.same(routeRequest(table, {}, '/api/1').mirrors.map((m) => m.id), ['copy']);
  const probe = routeRequest(table, { 'user-agent': 'kube-probe/1.29', 'x-user': 'alice' }, '/api');
  t.same([probe.probe, probe.divert, probe.mirrors.length], [true, undefined, 0]);
  t.ok(isKubeProbe({ 'user-agent': 'kube-probe/1.30' }));
  t.notOk(isKubeProbe({ 'user-agent': 'curl/8 kube-probe/1.30' }));
});

t.test('a bad regex is ignored, and update reports what is gone or changed', async (t) => {
  const table = new InterceptTable([8080]);
  t.same(table.update([info('a', {}), info('bad', { headers: [{ name: 'x', value: '(', regex: true }] })]), []);
  t.equal(table.size, 1);
  const a = table.get('a');
  t.same(table.update([info('a', {}), info('b', { headers: [{ name: 'x', value: '1', regex: false }] })]), [], 'unchanged a kept');
  t.equal(table.get('a'), a, 'same object when the spec did not change');
  t.same(table.update([info('a', { local_port: 3001 })]).sort(), ['a', 'b']);
});

t.test('hop-by-hop headers are not forwarded', async (t) => {
  t.same(forwardRaw(['Host', 'x', 'Connection', 'keep-alive, X-Secret', 'Keep-Alive', 'timeout=5', 'X-Secret', '1', 'X-Other', '2', 'TE', 'trailers']), [
    'Host',
    'x',
    'X-Other',
    '2',
    'TE',
    'trailers',
  ]);
  t.same(forwardRaw(['Connection', 'Upgrade', 'Upgrade', 'websocket', 'Keep-Alive', '1'], true), ['Connection', 'Upgrade', 'Upgrade', 'websocket']);
});
