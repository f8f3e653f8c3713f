// Replace mode: the app container's processes are stopped (SIGSTOP) while a
// replace intercept holds the workload, and continued (SIGCONT) when it ends.
// The webhook gives the pod one process namespace and the agent the app's
// user, so the agent sees the app's processes and may signal them; nothing
// else in the pod is touched.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';

const log = logger('agent.freezer');

/** How often a stopped app is looked at again: a process it starts, or a restarted container, is stopped too. */
const WATCH_MS = 250;

export interface FreezerOptions {
  /** The ports the app listens on: its container is the one whose processes hold their listening sockets. */
  appPorts: number[];
  /** /proc (tests give another tree). */
  proc?: string;
  /** Sends a signal (tests record them). */
  kill?: (pid: number, signal: 'SIGSTOP' | 'SIGCONT') => void;
  self?: number;
}

/** The inodes of sockets listening on `ports`, from the pod's /proc/net/tcp and tcp6. */
export function listeningInodes(proc: string, ports: number[]): Set<string> {
  const want = new Set(ports);
  const out = new Set<string>();
  for (const file of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = readFileSync(join(proc, 'net', file), 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A') continue; // 0A: LISTEN
      const port = parseInt(f[1].split(':').pop() ?? '', 16);
      if (want.has(port)) out.add(f[9]);
    }
  }
  return out;
}

interface Proc {
  pid: number;
  cgroup: string;
  state: string;
  uid: number;
}

export class AppFreezer {
  private readonly proc: string;
  private readonly kill: (pid: number, signal: 'SIGSTOP' | 'SIGCONT') => void;
  private readonly self: number;
  /** The app container's cgroups while it is stopped (a restarted container adds one). */
  private readonly cgroups = new Set<string>();
  private timer?: NodeJS.Timeout;
  private recovered = false;

  constructor(private readonly o: FreezerOptions) {
    this.proc = o.proc ?? '/proc';
    this.kill = o.kill ?? ((pid, signal) => process.kill(pid, signal));
    this.self = o.self ?? process.pid;
  }

  get frozen(): boolean {
    return this.timer !== undefined;
  }

  /**
   * Stops the app. Returns '' once every process of its container is
   * stopped, else why it could not (nothing is left stopped then).
   */
  freeze(): string {
    if (this.frozen) return '';
    const found = this.appCgroup();
    if (typeof found !== 'string') return found.problem;
    this.cgroups.add(found);
    const problem = this.stopAll();
    if (problem) {
      this.thaw();
      return problem;
    }
    this.timer = setInterval(() => this.watch(), WATCH_MS);
    this.timer.unref();
    log.info('the app is stopped (replace)', { cgroup: found });
    return '';
  }

  /** Continues the app's processes (a no-op when it is not stopped). */
  thaw(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.cgroups.size === 0) return;
    let n = 0;
    for (const p of this.processes()) {
      if (!this.cgroups.has(p.cgroup)) continue;
      try {
        this.kill(p.pid, 'SIGCONT');
        n++;
      } catch (err) {
        log.warn('could not continue an app process', { pid: p.pid, err: errorMessage(err) });
      }
    }
    this.cgroups.clear();
    log.info('the app runs again', { processes: n });
  }

  /**
   * Once, when the agent starts without a replace: an app left stopped by an
   * agent that died (its container restarted) is continued.
   */
  recover(): void {
    if (this.recovered || this.frozen) return;
    this.recovered = true;
    const found = this.appCgroup();
    if (typeof found !== 'string') return;
    const stopped = this.processes().filter((p) => p.cgroup === found && p.state === 'T');
    for (const p of stopped) {
      try {
        this.kill(p.pid, 'SIGCONT');
      } catch {
        // gone meanwhile
      }
    }
    if (stopped.length) log.warn('continued app processes left stopped by an earlier agent', { processes: stopped.length });
  }

  private watch(): void {
    const problem = this.stopAll();
    if (problem) log.warn('could not keep the app stopped', { problem });
    // The container restarted (the kubelet after a failed probe): its new processes are the app too.
    const live = this.processes().some((p) => this.cgroups.has(p.cgroup));
    if (!live) {
      const found = this.appCgroup();
      if (typeof found === 'string' && !this.cgroups.has(found)) {
        this.cgroups.add(found);
        log.info('the app container restarted while replaced: stopping it again', { cgroup: found });
        this.stopAll();
      }
    }
  }

  private stopAll(): string {
    for (const p of this.processes()) {
      if (!this.cgroups.has(p.cgroup) || p.state === 'T' || p.state === 'Z' || p.state === 'X') continue;
      try {
        this.kill(p.pid, 'SIGSTOP');
      } catch (err) {
        return `cannot stop the app's process ${p.pid} (uid ${p.uid}): ${errorMessage(err)}`;
      }
    }
    return '';
  }

  /** The cgroup of the process listening on an app port, or why there is none. */
  private appCgroup(): string | { problem: string } {
    const inodes = listeningInodes(this.proc, this.o.appPorts);
    const ports = this.o.appPorts.join(', ');
    if (inodes.size === 0) return { problem: `nothing listens on the app's port ${ports} in the pod` };
    const mine = this.cgroupOf(this.self);
    const hidden: Proc[] = [];
    const procs = this.processes();
    for (const p of procs) {
      if (p.pid === this.self) continue;
      let fds: string[];
      try {
        fds = readdirSync(join(this.proc, String(p.pid), 'fd'));
      } catch {
        if (p.cgroup !== mine) hidden.push(p);
        continue;
      }
      for (const fd of fds) {
        let target = '';
        try {
          target = readlinkSync(join(this.proc, String(p.pid), 'fd', fd));
        } catch {
          continue;
        }
        const m = /^socket:\[(\d+)\]$/.exec(target);
        if (!m || !inodes.has(m[1])) continue;
        if (p.cgroup === mine) return { problem: 'the app runs in the agent\'s own container (cgroup): there is no separate app to stop' };
        return p.cgroup;
      }
    }
    const me = procs.find((p) => p.pid === this.self);
    const others = hidden.filter((p) => p.pid !== 1);
    if (others.length) {
      const uids = [...new Set(others.map((p) => p.uid))].join(', ');
      return {
        problem: `the app runs as uid ${uids} and the agent as uid ${me?.uid ?? '?'}, so the agent may not stop it: ` +
          `set runAsUser: ${others[0].uid} in the app container's securityContext (the injected agent then runs as that user)`,
      };
    }
    return {
      problem: 'the agent does not see the app\'s processes: the pod does not share one process namespace ' +
        '(hostPID, or injected by an rdbg that did not set shareProcessNamespace): "rdbg uninstall WORKLOAD", then replace again',
    };
  }

  private cgroupOf(pid: number): string {
    try {
      return readFileSync(join(this.proc, String(pid), 'cgroup'), 'utf8').trim();
    } catch {
      return '';
    }
  }

  private processes(): Proc[] {
    const out: Proc[] = [];
    let names: string[] = [];
    try {
      names = readdirSync(this.proc);
    } catch {
      return out;
    }
    for (const name of names) {
      if (!/^\d+$/.test(name)) continue;
      const pid = Number(name);
      try {
        const stat = readFileSync(join(this.proc, name, 'stat'), 'utf8');
        const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
        const status = readFileSync(join(this.proc, name, 'status'), 'utf8');
        const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
        out.push({ pid, cgroup: this.cgroupOf(pid), state, uid });
      } catch {
        // exited meanwhile
      }
    }
    return out;
  }
}
