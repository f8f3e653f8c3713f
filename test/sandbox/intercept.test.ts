import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { RDBG, Sandbox } from '../helpers/sandbox';
import { waitForLine, type Netns } from '../helpers/netns';

// rdbg intercept end to end: a `pod` namespace with a real app and the traffic
// agent, callers in `cluster`, two developers on two `laptop`s with the real
// user daemon, each holding a personal (header) intercept of the same service.

const TINY = resolve(__dirname, '../helpers/tiny-http.js');
let sb: Sandbox;
let pod: Netns;
let podAddr = '';
let agent: ChildProcess;
const locals: ChildProcess[] = [];

async function startAgent(): Promise<void> {
  // A container's environment, not the test runner's: the agent reports it as the app's.
  agent = pod.spawn('env', ['-i', `PATH=${process.env.PATH}`, 'APP_SECRET=s3cr3t-from-the-pod', 'LOG_FORMAT=json',
    'node', RDBG, 'agent', 'run', '--manager', '198.18.50.1:8081', '--workload', 'echo', '--namespace', 'default',
    '--app-port', '8080', '--listen-port', '9090', '--pod-name', 'echo-7d9f']);
  agent.stdout!.resume();
  await new Promise<void>((res, rej) => {
    let err = '';
    const timer = setTimeout(() => rej(new Error(`agent did not register: ${err}`)), 15_000);
    agent.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (/linked to the traffic manager/.test(err)) {
        clearTimeout(timer);
        res();
      }
    });
  });
}

async function localServer(ns: Netns, port: number, name: string): Promise<ChildProcess> {
  const p = ns.spawn('node', [TINY, '127.0.0.1', String(port), name]);
  await waitForLine(p, (l) => l === 'READY', 10_000, name);
  locals.push(p);
  return p;
}

/** A request from a caller in the cluster, through the agent's port. */
function call(headers: string[] = [], path = '/') {
  return sb.cluster.run('curl', ['-sS', '--max-time', '15', ...headers.flatMap((h) => ['-H', h]), `http://${podAddr}:9090${path}`], 20_000);
}

async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 300));
  }
  return check();
}

t.before(async () => {
  sb = await Sandbox.create({ laptops: 2 });
  pod = sb.addNamespace('p', 50);
  podAddr = '198.18.50.2';
  const app = pod.spawn('node', [TINY, '127.0.0.1', '8080', 'app'], { APP_SECRET: 's3cr3t-from-the-pod' });
  await waitForLine(app, (l) => l === 'READY', 10_000, 'app');
  await startAgent();
  for (const lap of sb.laptops) {
    const r = await lap.rdbg(['connect', '--manager', lap.managerAddress, '--socks', '1080']);
    if (r.code !== 0) throw new Error(r.stderr);
  }
  await localServer(sb.laptops[0].ns, 8081, 'alice-laptop');
  await localServer(sb.laptops[1].ns, 8081, 'bob-laptop');
});
t.teardown(() => {
  for (const p of locals) p.kill('SIGKILL');
  sb?.destroy();
});

t.test('two developers intercept one service by their own headers', async (t) => {
  const a = await sb.laptops[0].rdbg(['intercept', 'echo', '--port', '8081:8080', '--header', 'x-dev=alice']);
  t.equal(a.code, 0, a.stderr);
  t.match(a.stdout, /Intercepting port 8080 of echo\.default \(header x-dev=alice\) -> 127\.0\.0\.1:8081; 1 agent\(s\) ready/);
  const b = await sb.laptops[1].rdbg(['intercept', 'echo', '--port', '8081:8080', '--header', 'x-dev=~bo+b']);
  t.equal(b.code, 0, b.stderr);
  t.ok(await eventually(async () => (await call(['x-dev: alice'])).stdout.startsWith('alice-laptop'), 10_000), 'alice gets hers');
  t.match((await call(['x-dev: bob'])).stdout, /^bob-laptop GET \/ dev=bob/, 'bob gets his (regex)');
  t.match((await call(['x-dev: booob'])).stdout, /^bob-laptop/);
  t.match((await call()).stdout, /^app GET \/ dev=-/, 'everyone else gets the app');
  t.match((await call(['x-dev: carol'])).stdout, /^app /);
});

t.test('a conflicting intercept is refused with the holder named', async (t) => {
  const r = await sb.laptops[1].rdbg(['intercept', 'echo', '--port', '8081:8080', '--header', 'x-dev=alice']);
  t.equal(r.code, 1);
  t.match(r.stderr, /port 8080 of echo\.default is already intercepted by .*\(header x-dev=alice\)/);
  const g = await sb.laptops[1].rdbg(['intercept', 'echo', '--port', '8081:8080']);
  t.equal(g.code, 1, 'a global intercept over personal ones is refused');
});

t.test('wrong input is refused with the reason, and creates no intercept', async (t) => {
  const lap = sb.laptops[1];
  const ids = async (): Promise<string[]> => (JSON.parse((await lap.rdbg(['list', '-o', 'json', '--all'])).stdout) as { id: string }[]).map((i) => i.id).sort();
  const before = await ids();
  const cases: [string[], number, string][] = [
    [['intercept', 'echo', '--port', '7070:9999', '--header', 'x-dev=carol'], 1, 'rdbg: intercept: echo in namespace default has no port 9999 (its ports: 8080)'],
    [['intercept', 'nosuch', '--port', '7070'], 1, 'rdbg: intercept: no agent serves nosuch in namespace default (yet), so its port is not known'],
    [['intercept', 'echo', '--port', '7070:8080', '--path-prefix', 'nosl'], 2, 'rdbg: --path-prefix "nosl" must start with "/"'],
  ];
  for (const [args, code, err] of cases) {
    const r = await lap.rdbg(args);
    t.equal(r.code, code, `rdbg ${args.join(' ')}`);
    t.match(r.stderr, err);
    t.notMatch(r.stdout, /Intercepting/);
  }
  t.same(await ids(), before, 'no intercept was added');
});

t.test('with and without the header alternating on one keep-alive connection', async (t) => {
  const r = await sb.cluster.run('curl', ['-sS', '--max-time', '15',
    '-H', 'x-dev: alice', `http://${podAddr}:9090/1`, '--next',
    `http://${podAddr}:9090/2`, '--next',
    '-H', 'x-dev: bob', `http://${podAddr}:9090/3`, '--next',
    '-H', 'x-dev: alice', `http://${podAddr}:9090/4`, '-v'], 20_000);
  const lines = r.stdout.trim().split('\n');
  t.match(lines, [/^alice-laptop GET \/1/, /^app GET \/2/, /^bob-laptop GET \/3/, /^alice-laptop GET \/4/]);
  t.match(r.stderr, /Re-using existing connection/, 'one connection carried all four');
});

t.test('rdbg list shows rules, owners and request counters', async (t) => {
  await new Promise((r) => setTimeout(r, 3500)); // the agent reports counts with its heartbeat
  const r = await sb.laptops[0].rdbg(['list', '-o', 'json']);
  const list = JSON.parse(r.stdout);
  t.equal(list.length, 1, 'my intercepts only');
  t.match(list[0], { spec: { workload: 'echo', headers: [{ name: 'x-dev', value: 'alice' }] }, state: 'ACTIVE' });
  t.ok(list[0].requests >= 3, `requests counted (${list[0].requests})`);
  const all = await sb.laptops[0].rdbg(['list', '--all']);
  t.match(all.stdout, /x-dev=alice[\s\S]*x-dev=~bo\+b/);
});

t.test('a probe keeps succeeding while the developer is paused in a debugger', async (t) => {
  const alice = locals[0];
  process.kill(alice.pid!, 'SIGSTOP');
  try {
    const probe = await call(['User-Agent: kube-probe/1.34', 'x-dev: alice'], '/healthz');
    t.match(probe.stdout, /^app GET \/healthz/, 'kube-probe goes to the app');
    const paused = call(['x-dev: alice'], '/slow');
    await new Promise((r) => setTimeout(r, 1500));
    process.kill(alice.pid!, 'SIGCONT');
    t.match((await paused).stdout, /^alice-laptop GET \/slow/, 'the intercepted request resumes when the process continues');
  } finally {
    process.kill(alice.pid!, 'SIGCONT');
  }
});

t.test('-- COMMAND runs with the pod environment and ends the intercept when it exits', async (t) => {
  const r = await sb.laptops[0].rdbg(['intercept', 'echo', '--port', '8082:8080', '--header', 'x-dev=cmd', '--env-file', `${sb.laptops[0].home}/pod.env`,
    '--', 'sh', '-c', 'echo "secret=$APP_SECRET"']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /secret=s3cr3t-from-the-pod/);
  t.match(readFileSync(`${sb.laptops[0].home}/pod.env`, 'utf8'), /^APP_SECRET=s3cr3t-from-the-pod$/m, '--env-file has the pod environment');
  const list = JSON.parse((await sb.laptops[0].rdbg(['list', '-o', 'json'])).stdout);
  t.notOk(list.some((i: { spec: { headers: { value: string }[] } }) => i.spec.headers[0]?.value === 'cmd'), 'that intercept is gone');
});

t.test('a laptop process that is not listening gets a clear 502; others are unaffected', async (t) => {
  const r = await sb.laptops[0].rdbg(['intercept', 'echo', '--port', '8099:8080', '--header', 'x-dev=nobody']);
  t.equal(r.code, 0, r.stderr);
  const res = await sb.cluster.run('curl', ['-sS', '-w', '\\n%{http_code}', '-H', 'x-dev: nobody', `http://${podAddr}:9090/`]);
  t.match(res.stdout, /rdbg intercept of echo by .* could not reach 127\.0\.0\.1:8099[\s\S]*\n502$/);
  t.match((await call()).stdout, /^app /);
  t.match((await call(['x-dev: alice'])).stdout, /^alice-laptop/);
  t.equal((await sb.laptops[0].rdbg(['leave', 'echo'])).code, 0);
});

t.test('manager restart: the intercepts come back on their own', async (t) => {
  const again = await sb.laptops[0].rdbg(['intercept', 'echo', '--port', '8081:8080', '--header', 'x-dev=alice']);
  t.equal(again.code, 0, again.stderr);
  await sb.killManager();
  await sb.startManager();
  t.ok(await eventually(async () => (await call(['x-dev: bob'])).stdout.startsWith('bob-laptop'), 20_000), 'bob\'s intercept is back');
  t.ok(await eventually(async () => (await call(['x-dev: alice'])).stdout.startsWith('alice-laptop'), 10_000), 'alice\'s too');
});

t.test('kill -9 of a laptop\'s daemon: within 15 s its requests reach the app again', async (t) => {
  const st = JSON.parse((await sb.laptops[1].rdbg(['status', '-o', 'json'])).stdout);
  process.kill(st.pid, 'SIGKILL');
  const start = Date.now();
  const back = await eventually(async () => (await call(['x-dev: bob'])).stdout.startsWith('app '), 20_000);
  t.ok(back, `bob's requests go to the app after ${Date.now() - start} ms`);
  t.ok(Date.now() - start < 17_000, 'within the 15 s lease (and a poll)');
  t.match((await call(['x-dev: alice'])).stdout, /^alice-laptop/, 'alice is unaffected');
});
