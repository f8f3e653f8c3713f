// Test helper for the cluster tier: the real single-node cluster of
// test/cluster (see test/cluster/README.md).
//
//   const c = await cluster(t)          // up once per run, reused if running
//   const ns = await c.namespace(t)     // own namespace, deleted at teardown
//   await c.kubectl(['-n', ns, 'apply', '-f', '-'], { input: yaml })
//   await c.laptop('curl', ['-s', 'http://127.0.0.1:8080/'])  // in the laptop netns
//
// Everything runs as root (network namespaces, mounts, cgroups). Without root
// the helper fails the test with a message saying so: it never skips.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

// The subset of a tap Test the helper uses.
export interface TestLike {
  name: string;
  teardown(fn: () => unknown): void;
  comment(...args: unknown[]): void;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  input?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** reject when the exit code is not 0 (default true) */
  check?: boolean;
}

export interface ClusterInfo {
  K8S_VERSION: string;
  KUBECTL: string;
  ADMIN_KUBECONFIG: string;
  USER_KUBECONFIG: string;
  USER_NAME: string;
  USER_NAMESPACE: string;
  NODE_NS: string;
  LAPTOP_NS: string;
  NODE_NAME: string;
  NODE_IP: string;
  LINK_NODE_IP: string;
  LINK_LAPTOP_IP: string;
  APISERVER_URL: string;
  CLUSTER_CIDR: string;
  NODE_POD_CIDR: string;
  SERVICE_CIDR: string;
  DNS_SVC_IP: string;
  CLUSTER_DOMAIN: string;
  CONTAINERD_SOCK: string;
  IMAGE_TAG: string;
  STATE: string;
}

/** The repository root: the nearest parent holding test/cluster/up.sh. */
export function repoRoot(): string {
  let d = __dirname;
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(d, 'test', 'cluster', 'up.sh'))) return d;
    d = dirname(d);
  }
  throw new Error(`test/cluster/up.sh not found above ${__dirname}`);
}

export const clusterDir = (): string => join(repoRoot(), 'test', 'cluster');
export const stateDir = (): string => process.env.RDBG_CLUSTER_STATE ?? '/run/rdbg-cluster';

/** Runs a program; resolves with its output. Bounded by timeoutMs (default 120 s). */
export function exec(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const r = { code, signal, stdout, stderr };
      if ((opts.check ?? true) && code !== 0) {
        const why = signal === 'SIGKILL' ? `timed out after ${timeoutMs} ms` : `exit ${code ?? signal}`;
        reject(Object.assign(new Error(`${cmd} ${args.join(' ')}: ${why}\n${stderr.slice(-4000)}${stdout.slice(-2000)}`), r));
      } else resolvePromise(r);
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Polls fn until it returns a truthy value; bounded in time. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 500): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function readClusterEnv(file = join(stateDir(), 'cluster.env')): ClusterInfo {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out as unknown as ClusterInfo;
}

export class Cluster {
  constructor(readonly info: ClusterInfo) {}

  /** Runs a command in the laptop network namespace. */
  laptop(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult> {
    return exec('ip', ['netns', 'exec', this.info.LAPTOP_NS, cmd, ...args], opts);
  }

  /** Starts a long-running command in the laptop namespace; killed at teardown. */
  laptopSpawn(t: TestLike, cmd: string, args: string[]): ChildProcess & { output: () => string } {
    const child = spawn('ip', ['netns', 'exec', this.info.LAPTOP_NS, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (c: string) => { out += c; });
    child.stderr?.setEncoding('utf8').on('data', (c: string) => { out += c; });
    t.teardown(() => new Promise<void>((r) => {
      if (child.exitCode !== null || child.signalCode !== null) { r(); return; }
      child.once('close', () => r());
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 3000).unref();
    }));
    return Object.assign(child, { output: () => out });
  }

  /** Runs a command in the node network namespace (where the cluster runs). */
  node(cmd: string, args: string[], opts?: ExecOptions): Promise<ExecResult> {
    return exec('nsenter', [`--net=/run/netns/${this.info.NODE_NS}`, '--', cmd, ...args], opts);
  }

  /** kubectl from the laptop namespace with the admin kubeconfig (or opts.kubeconfig). */
  kubectl(args: string[], opts: ExecOptions & { kubeconfig?: string } = {}): Promise<ExecResult> {
    return this.laptop(this.info.KUBECTL, ['--kubeconfig', opts.kubeconfig ?? this.info.ADMIN_KUBECONFIG, ...args], opts);
  }

  async kubectlJson<T = unknown>(args: string[], opts: ExecOptions & { kubeconfig?: string } = {}): Promise<T> {
    const r = await this.kubectl([...args, '-o', 'json'], opts);
    return JSON.parse(r.stdout) as T;
  }

  /** Applies manifests (YAML or JSON text) in a namespace. */
  apply(ns: string, manifest: string): Promise<ExecResult> {
    return this.kubectl(['-n', ns, 'apply', '-f', '-'], { input: manifest });
  }

  /**
   * A namespace of the test's own, deleted (without waiting) at teardown.
   * The name is derived from the test name plus a random suffix.
   */
  async namespace(t: TestLike, prefix?: string): Promise<string> {
    const base = (prefix ?? t.name).toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'test';
    const ns = `t-${base}-${randomBytes(3).toString('hex')}`.replace(/--+/g, '-');
    await this.kubectl(['create', 'namespace', ns]);
    t.teardown(async () => {
      if (process.env.RDBG_KEEP_NAMESPACES) return;
      await this.kubectl(['delete', 'namespace', ns, '--wait=false', '--ignore-not-found'], { check: false });
    });
    return ns;
  }

  /** Image reference for one of the images from test/cluster/images.sh. */
  image(name: 'rdbg' | 'echo-http' | 'grpc-echo' | 'tcp-echo'): string {
    return `localhost/${name}:${this.info.IMAGE_TAG}`;
  }

  /** Waits for a deployment's rollout. */
  rollout(ns: string, deployment: string, timeoutS = 120): Promise<ExecResult> {
    return this.kubectl(['-n', ns, 'rollout', 'status', `deployment/${deployment}`, `--timeout=${timeoutS}s`], { timeoutMs: (timeoutS + 10) * 1000 });
  }

  /** Runs a command in a running pod (kubectl exec). */
  execIn(ns: string, target: string, cmd: string[], opts?: ExecOptions): Promise<ExecResult> {
    return this.kubectl(['-n', ns, 'exec', target, '--', ...cmd], opts);
  }
}

/** Runs up.sh (which reuses a running cluster) and returns a Cluster. */
export async function clusterUp(): Promise<Cluster> {
  if (process.getuid?.() !== 0) throw new Error('the cluster tier needs root (network namespaces, mounts, cgroups): run it as root');
  const up = resolve(clusterDir(), 'up.sh');
  // A warm up takes well under a minute; a cold one includes the Kubernetes
  // build (make test-cluster runs build.sh first, outside the per-file timeout).
  const r = await exec('bash', [up], { timeoutMs: 40 * 60_000, check: false });
  if (r.code !== 0) throw new Error(`cluster-up failed (exit ${r.code}):\n${r.stderr.slice(-6000)}`);
  return new Cluster(readClusterEnv());
}

let shared: Promise<Cluster> | undefined;

/** The cluster for this test file: brought up on first use, then shared. */
export function cluster(): Promise<Cluster> {
  shared ??= clusterUp();
  return shared;
}

/** Tears the cluster down (down.sh). */
export async function clusterDown(): Promise<ExecResult> {
  shared = undefined;
  return exec('bash', [resolve(clusterDir(), 'down.sh')], { timeoutMs: 180_000, check: false });
}

/** Text of a Deployment plus Service for one of the sample apps. */
export function sampleApp(opts: {
  name: string;
  image: string;
  port: number;
  servicePort?: number;
  replicas?: number;
  env?: Record<string, string>;
  protocolName?: string;
}): string {
  const env = { PORT: String(opts.port), NAME: opts.name, ...(opts.env ?? {}) };
  const deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: opts.name, labels: { app: opts.name } },
    spec: {
      replicas: opts.replicas ?? 1,
      selector: { matchLabels: { app: opts.name } },
      template: {
        metadata: { labels: { app: opts.name } },
        spec: {
          terminationGracePeriodSeconds: 2,
          containers: [{
            name: opts.name,
            image: opts.image,
            imagePullPolicy: 'Never',
            ports: [{ name: opts.protocolName ?? 'main', containerPort: opts.port }],
            env: [
              ...Object.entries(env).map(([name, value]) => ({ name, value })),
              { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            ],
            readinessProbe: { tcpSocket: { port: opts.port }, periodSeconds: 1 },
            resources: { limits: { memory: '128Mi' } },
          }],
        },
      },
    },
  };
  const service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: opts.name },
    spec: {
      selector: { app: opts.name },
      ports: [{ name: opts.protocolName ?? 'main', port: opts.servicePort ?? opts.port, targetPort: opts.port }],
    },
  };
  return `${JSON.stringify(deployment)}\n---\n${JSON.stringify(service)}\n`;
}
