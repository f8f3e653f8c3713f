/**
 * What bench/kube.ts changes on the test cluster, each change paired with its
 * undo on a stack that runs at the end, also after a failure or a signal:
 * rdbg run as on the laptop, a temporary route from the laptop namespace to
 * one pod through the node, and the node's FORWARD rules that let that pod
 * and only that pod through (the cluster isolates the laptop link; see
 * test/cluster/up.sh).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec, repoRoot, type Cluster, type ClusterInfo, type ExecResult } from '../test/cluster-tier/cluster-helper';

/** Routes the bench adds carry this protocol number, so a run killed outright leaves nothing the next run misses. */
export const ROUTE_PROTO = '199';
/** And its FORWARD rules this comment. */
export const RULE_COMMENT = 'rdbg-bench-kube';

export class Undo {
  private readonly stack: Array<{ what: string; fn: () => unknown }> = [];
  private running?: Promise<void>;

  push(what: string, fn: () => unknown): void {
    this.stack.push({ what, fn });
  }

  /** Runs every undo, last first; a failing one is reported and the rest still run. */
  run(): Promise<void> {
    this.running ??= (async () => {
      while (this.stack.length) {
        const { what, fn } = this.stack.pop()!;
        try {
          await fn();
        } catch (err) {
          process.stderr.write(`cleanup: ${what}: ${err instanceof Error ? err.message : String(err)}\n`);
        }
      }
    })();
    return this.running;
  }
}

/** The rdbg CLI as a developer runs it, already inside the laptop namespace, with its own home. */
export class Rdbg {
  readonly home = mkdtempSync(join(tmpdir(), 'rdbg-bench-kube-'));
  private readonly cli = join(repoRoot(), 'dist', 'bin', 'rdbg.js');

  constructor(private readonly kubeconfig: string) {}

  env(): NodeJS.ProcessEnv {
    return { ...process.env, KUBECONFIG: this.kubeconfig, RDBG_HOME: this.home };
  }

  run(args: string[], check = true, timeoutMs = 300_000): Promise<ExecResult> {
    return exec(process.execPath, ['--', this.cli, ...args], { env: this.env(), check, timeoutMs });
  }

  spawn(args: string[]): ChildProcess {
    return spawn(process.execPath, ['--', this.cli, ...args], { env: this.env(), stdio: ['ignore', 'pipe', 'pipe'] });
  }

  remove(): void {
    rmSync(this.home, { recursive: true, force: true });
  }
}

function forwardRules(c: Cluster, podIp: string): string[][] {
  const laptop = c.info.LINK_LAPTOP_IP;
  const tag = ['-m', 'comment', '--comment', RULE_COMMENT, '-j', 'ACCEPT'];
  return [
    ['FORWARD', '-i', 'laptop0', '-o', 'cni0', '-s', `${laptop}/32`, '-d', `${podIp}/32`, ...tag],
    ['FORWARD', '-i', 'cni0', '-o', 'laptop0', '-s', `${podIp}/32`, '-d', `${laptop}/32`, ...tag],
  ];
}

/** Lets the node forward between the laptop link and one pod (ahead of the isolation rules); undone by `undo`. */
export async function openNodeForward(c: Cluster, podIp: string, undo: Undo): Promise<void> {
  for (const rule of forwardRules(c, podIp)) {
    undo.push(`iptables -D ${rule.join(' ')}`, () => c.node('iptables', ['-w', '-D', ...rule]));
    await c.node('iptables', ['-w', '-I', rule[0], '1', ...rule.slice(1)]);
  }
}

/** Routes one pod address from the laptop namespace via the node; returns the undo (also pushed on `undo`). */
export async function routePod(c: Cluster, podIp: string, undo: Undo): Promise<() => Promise<void>> {
  const spec = [`${podIp}/32`, 'via', c.info.LINK_NODE_IP, 'proto', ROUTE_PROTO];
  let done = false;
  const del = async (): Promise<void> => {
    if (done) return;
    done = true;
    await exec('ip', ['route', 'del', ...spec]);
  };
  undo.push(`ip route del ${spec.join(' ')}`, del);
  await exec('ip', ['route', 'add', ...spec]);
  return del;
}

/** Leftovers of a run that was killed outright (SIGKILL): the routes and rules it tagged. */
export async function removeLeftovers(c: Cluster): Promise<void> {
  await exec('ip', ['route', 'flush', 'proto', ROUTE_PROTO], { check: false });
  const rules = (await c.node('iptables', ['-w', '-S', 'FORWARD'])).stdout.split('\n').filter((l) => l.includes(RULE_COMMENT));
  for (const line of rules) {
    // "-A FORWARD ..." as iptables -S prints it; the comment is a single word, so splitting on spaces is exact.
    const args = line.replace(/^-A /, '').split(' ').map((a) => a.replace(/^"|"$/g, ''));
    await c.node('iptables', ['-w', '-D', ...args], { check: false });
  }
}

/** Stops a child we started and waits for it (SIGKILL after 3 s). */
export function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('close', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 3000).unref();
  });
}

/** Runs this bench inside the laptop network namespace (re-executing itself there when needed), as a laptop would. */
export function inLaptopNetns(info: ClusterInfo): void {
  let inside = false;
  try {
    inside = statSync('/proc/self/ns/net').ino === statSync(`/run/netns/${info.LAPTOP_NS}`).ino;
  } catch {
    inside = false;
  }
  if (inside) return;
  const r = spawnSync('ip', ['netns', 'exec', info.LAPTOP_NS, process.execPath, process.argv[1], ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

/**
 * A laptop far from its cluster, without netem (the test kernel has no
 * sch_netem): a relay on 127.0.0.1 in the laptop namespace that holds every
 * chunk `delayMs` in each direction, in order, before passing it on to
 * `target`. Point a kubeconfig at it (the apiserver's certificate names
 * 127.0.0.1) and kubectl and rdbg both reach the apiserver across the same
 * "distance". It runs in a process of its own and buffers what is in
 * flight (no backpressure: at 120 MB/s, 600 KB per 5 ms); resolves with its
 * port.
 */
export function startDelayRelay(target: { host: string; port: number }, delayMs: number, undo: Undo): Promise<number> {
  const source = `
const net = require('node:net');
const [host, port, delay] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
net.createServer((a) => {
  const b = net.connect({ host, port, noDelay: true });
  a.setNoDelay(true);
  const pass = (from, to) => {
    let ended = false;
    from.on('data', (d) => setTimeout(() => to.write(d), delay));
    from.on('end', () => { ended = true; setTimeout(() => to.end(), delay); });
    from.on('close', () => { if (!ended) setTimeout(() => to.destroy(), delay); });
    from.on('error', () => undefined);
  };
  pass(a, b);
  pass(b, a);
}).listen(0, '127.0.0.1', function () { console.log('relay on ' + this.address().port); });
`;
  const child = spawn(process.execPath, ['-e', source, target.host, String(target.port), String(delayMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  undo.push('stop the delay relay', () => stop(child));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /relay on (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`the delay relay exited (${code}): ${out}`)));
  });
}
