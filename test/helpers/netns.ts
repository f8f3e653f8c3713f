import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';

/** Run a command, return stdout; throws with stderr on failure. */
export function sh(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input: opts.input, timeout: opts.timeoutMs ?? 60_000, stdio: ['pipe', 'pipe', 'pipe'] });
}

export function ip(...args: string[]): string {
  return sh('ip', args);
}

/** A network namespace that this test made and will delete, with its own resolv.conf. */
export class Netns {
  private readonly children = new Set<ChildProcess>();

  constructor(readonly name: string) {}

  static create(name: string, resolvConf?: string): Netns {
    ip('netns', 'add', name);
    const ns = new Netns(name);
    ns.exec('ip', ['link', 'set', 'lo', 'up']);
    mkdirSync(`/etc/netns/${name}`, { recursive: true });
    writeFileSync(`/etc/netns/${name}/resolv.conf`, resolvConf ?? 'nameserver 127.0.0.1\n');
    return ns;
  }

  /** Run a command inside and wait for it. */
  exec(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): string {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }

  /** Run a command inside and return its exit code, stdout and stderr without throwing. */
  run(cmd: string, args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
    const start = Date.now();
    return new Promise((resolve) => {
      const p = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr, ms: Date.now() - start });
      });
    });
  }

  /** Start a long-running process inside; it is killed when the namespace is destroyed. */
  spawn(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    const p = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    this.children.add(p);
    p.on('exit', () => this.children.delete(p));
    return p;
  }

  /** Every pid that lives in this namespace. */
  pids(): number[] {
    try {
      return sh('ip', ['netns', 'pids', this.name]).split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  destroy(): void {
    for (const p of this.children) p.kill('SIGKILL');
    for (const pid of this.pids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    try {
      ip('netns', 'del', this.name);
    } catch {
      // already gone
    }
    rmSync(`/etc/netns/${this.name}`, { recursive: true, force: true });
  }
}

/** Join two namespaces with a veth pair: `a` gets addrA, `b` gets addrB (CIDR form). */
export function link(a: Netns, ifA: string, addrA: string, b: Netns, ifB: string, addrB: string): void {
  ip('-n', a.name, 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name);
  ip('-n', a.name, 'addr', 'add', addrA, 'dev', ifA);
  ip('-n', b.name, 'addr', 'add', addrB, 'dev', ifB);
  ip('-n', a.name, 'link', 'set', ifA, 'up');
  ip('-n', b.name, 'link', 'set', ifB, 'up');
}

/** Wait until a line on the process's stdout satisfies `match`, or fail. */
export function waitForLine(p: ChildProcess, match: (line: string) => boolean, timeoutMs = 15_000, what = 'process'): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let errBuf = '';
    const timer = setTimeout(() => reject(new Error(`${what} not ready within ${timeoutMs} ms: ${errBuf.slice(-500)}`)), timeoutMs);
    p.stderr?.on('data', (d: Buffer) => (errBuf += d.toString()));
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        if (match(l)) {
          clearTimeout(timer);
          p.stdout?.removeListener('data', onData);
          p.stdout?.resume();
          resolve(l);
          return;
        }
      }
    };
    p.stdout?.on('data', onData);
    p.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}: ${errBuf.slice(-1000)}`));
    });
  });
}

/** Wait until a process's stderr (its structured log) contains `text`, or fail. */
export function waitForLog(p: ChildProcess, text: string, timeoutMs = 15_000, what = 'process'): Promise<void> {
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${what} not ready within ${timeoutMs} ms: ${err.slice(-1000)}`)), timeoutMs);
    const onData = (d: Buffer): void => {
      err += d.toString();
      if (err.includes(text)) {
        clearTimeout(timer);
        resolve();
      }
    };
    p.stderr!.on('data', onData);
    p.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}: ${err.slice(-1000)}`));
    });
  });
}
