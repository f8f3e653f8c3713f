// The replace freezer on real processes: an "app" (a Node child that listens
// on a port and writes a line every 50 ms) in a cgroup of its own, as a
// container would be, and the freezer finding it by its listening socket,
// stopping every process of that cgroup, keeping a new one stopped, and
// continuing them. The cgroup is made by this test and removed after it.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { AppFreezer, listeningInodes } from '../../agent/app-freezer';

/** A hierarchy where this test may make a cgroup: pure cgroup v2, else v1's pids controller. */
function cgroupRoot(): string | undefined {
  for (const dir of ['/sys/fs/cgroup', '/sys/fs/cgroup/pids', '/sys/fs/cgroup/unified']) {
    if (existsSync(join(dir, 'cgroup.procs'))) {
      try {
        const probe = join(dir, `rdbg-probe-${process.pid}`);
        mkdirSync(probe);
        rmdirSync(probe);
        return dir;
      } catch {
        // not writable here
      }
    }
  }
  return undefined;
}

const root = cgroupRoot();
const state = (pid: number): string => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** The state once the kernel has delivered the signal (a loaded machine takes a moment): waits up to 3 s for `want`. */
async function settled(pid: number, want: (s: string) => boolean): Promise<string> {
  let s = state(pid);
  for (let i = 0; i < 150 && !want(s); i++) {
    await sleep(20);
    s = state(pid);
  }
  return s;
}
const stopped = (pid: number): Promise<string> => settled(pid, (s) => s === 'T');
const running = (pid: number): Promise<string> => settled(pid, (s) => s !== 'T');

const APP = `
const net = require('node:net');
const s = net.createServer(() => {}).listen(0, '127.0.0.1', () => console.log('PORT ' + s.address().port));
setInterval(() => console.log('tick'), 50);
process.on('SIGUSR2', () => require('node:child_process').spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' }));
`;

t.test('stops the app\'s container, keeps it stopped, continues it', { skip: root ? false : 'no writable cgroup hierarchy here' }, async (t) => {
  const cg = join(root!, `rdbg-freezer-test-${process.pid}`);
  mkdirSync(cg);
  const children: ChildProcess[] = [];
  t.teardown(async () => {
    for (const c of children) c.kill('SIGKILL');
    // every process the app started, too
    for (const pid of readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (let i = 0; i < 50 && readFileSync(join(cg, 'cgroup.procs'), 'utf8').trim(); i++) await sleep(50);
    rmdirSync(cg);
  });
  // In its cgroup before it runs anything, as a container's process is: a shell that moves itself there, then becomes the app.
  const app = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec "$1" -e "$2"', join(cg, 'cgroup.procs'), process.execPath, APP], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(app);
  let out = '';
  app.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  for (let i = 0; i < 100 && !/PORT \d+/.test(out); i++) await sleep(20);
  const port = Number(/PORT (\d+)/.exec(out)![1]);
  t.equal(listeningInodes('/proc', [port]).size, 1, 'its listening socket is in /proc/net/tcp');

  const f = new AppFreezer({ appPorts: [port] });
  t.equal(f.freeze(), '', 'freeze: no problem');
  t.equal(await stopped(app.pid!), 'T', 'the app is stopped');
  // A tick written just before the stop may still be on its way through the pipe: count once it has been read.
  await sleep(100);
  const ticks = out.split('tick').length;
  await sleep(300);
  t.equal(out.split('tick').length, ticks, 'and writes nothing while stopped');

  // A process the app's container starts while replaced is stopped too: continue the app for a moment to let it spawn one.
  process.kill(app.pid!, 'SIGCONT');
  process.kill(app.pid!, 'SIGUSR2');
  let spawned = 0;
  for (let i = 0; i < 100 && !spawned; i++) {
    await sleep(20);
    spawned = Number(readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').find((p) => p && Number(p) !== app.pid) ?? 0);
  }
  t.ok(spawned, 'the app started another process in its cgroup');
  let both = false;
  for (let i = 0; i < 40 && !both; i++) {
    await sleep(50);
    both = state(app.pid!) === 'T' && state(spawned) === 'T';
  }
  t.ok(both, 'the watch stops the app again, and the process it started');

  f.thaw();
  t.not(await running(app.pid!), 'T', 'thaw: the app runs again');
  t.not(await running(spawned), 'T', 'and so does the process it started');
  const before = out.split('tick').length;
  await sleep(300);
  t.ok(out.split('tick').length > before, 'it writes again');

  // An agent that died while the app was stopped: the next agent's first snapshot continues it.
  const dead = new AppFreezer({ appPorts: [port] });
  t.equal(dead.freeze(), '');
  clearInterval((dead as unknown as { timer: NodeJS.Timeout }).timer); // it dies: nothing of it runs any more
  const next = new AppFreezer({ appPorts: [port] });
  t.equal(await stopped(app.pid!), 'T');
  next.recover();
  t.not(await running(app.pid!), 'T', 'recover: an app left stopped runs again');
});

t.test('problems are named, and nothing is left stopped', async (t) => {
  t.match(new AppFreezer({ appPorts: [1] }).freeze(), /nothing listens on the app's port 1/);
  // An app in the agent's own cgroup (not a container of its own) is refused, never stopped with the agent.
  const app = spawn(process.execPath, ['-e', "const s=require('node:net').createServer().listen(0,'127.0.0.1',()=>console.log(s.address().port));setInterval(()=>{},1000)"], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => app.kill('SIGKILL'));
  const port = await new Promise<number>((r) => app.stdout!.once('data', (d: Buffer) => r(Number(d.toString().trim()))));
  t.match(new AppFreezer({ appPorts: [port] }).freeze(), /the app runs in the agent's own container/);
  await sleep(100);
  t.not(state(app.pid!), 'T', 'not stopped');
});
