/**
 * Many rdbg clients and traffic agents from one process, speaking the real
 * gRPC protocol to one traffic manager, each on a connection of its own (as
 * many laptops and pods would): a session arrives, watches its diversions,
 * creates one header intercept and heartbeats every 3 s with the user
 * daemon's 2 s deadline; an agent per workload arrives, watches its
 * intercepts and heartbeats as agent/manager-link.ts does. Its own simple
 * loop: it does not import the user daemon or the agent.
 */
import * as grpc from '@grpc/grpc-js';
import { managerPackage, CHANNEL_OPTIONS, type ManagerClient } from '../../src/rpc/services';
import { PROTOCOL, VERSION } from '../../src/core/version';
import type { InterceptSnapshot__Output } from '../../src/gen/rdbg/v1/InterceptSnapshot';
import type { InterceptInfo__Output } from '../../src/gen/rdbg/v1/InterceptInfo';
import type { InterceptList__Output } from '../../src/gen/rdbg/v1/InterceptList';
import type { AgentSession__Output } from '../../src/gen/rdbg/v1/AgentSession';
import type { SessionInfo__Output } from '../../src/gen/rdbg/v1/SessionInfo';

export interface LoadOptions {
  manager: string; // host:port
  sessions: number;
  /** Workloads, one agent each; session i intercepts workload i % workloads with its own header. */
  workloads: number;
  heartbeatMs?: number;
  /** The user daemon's heartbeat deadline. */
  deadlineMs?: number;
  namespace?: string;
  /** Sessions (and agents) set up at once. */
  concurrency?: number;
}

export interface LoadReport {
  sessions: number;
  agents: number;
  intercepts: number;
  heartbeats: number;
  heartbeatsFailed: number;
  agentHeartbeats: number;
  agentHeartbeatsFailed: number;
  /** Sessions the manager no longer knew (NOT_FOUND) or whose diversion watch it ended. */
  sessionsLost: number;
  agentsLost: number;
  /** From ListIntercepts --all at check time: intercepts the manager holds, and how many are ACTIVE. */
  interceptsListed: number;
  interceptsActive: number;
  /** Intercepts in the agents' latest snapshots, summed over agents. */
  interceptsSeenByAgents: number;
  heartbeatMs: { p50: number; p99: number; max: number };
  /** The first few failures, as text. */
  failures: string[];
}

interface Peer {
  client: ManagerClient;
  timer?: NodeJS.Timeout;
  stream?: grpc.ClientReadableStream<unknown>;
}

interface LoadSession extends Peer {
  n: number;
  id: string;
  lost: boolean;
}

interface LoadAgent extends Peer {
  n: number;
  id: string;
  lost: boolean;
  seen: number;
}

const MAX_FAILURES = 20;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

type Callback<Res> = (err: grpc.ServiceError | null, res?: Res) => void;

/** One unary call with a deadline of `ms`. */
function unary<Res>(ms: number, call: (opts: grpc.CallOptions, cb: Callback<Res>) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => call({ deadline: Date.now() + ms }, (err, res) => (err || !res ? reject(err ?? new Error('empty answer')) : resolve(res))));
}

async function inBatches<T>(items: T[], size: number, fn: (x: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

export class LoadClient {
  private readonly sessions: LoadSession[] = [];
  private readonly agents: LoadAgent[] = [];
  private readonly latencies: number[] = [];
  private readonly failures: string[] = [];
  private readonly counts = { heartbeats: 0, heartbeatsFailed: 0, agentHeartbeats: 0, agentHeartbeatsFailed: 0, intercepts: 0 };
  private stopped = false;
  private readonly heartbeatMs: number;
  private readonly deadlineMs: number;
  private readonly namespace: string;

  constructor(private readonly opts: LoadOptions) {
    this.heartbeatMs = opts.heartbeatMs ?? 3000;
    this.deadlineMs = opts.deadlineMs ?? 2000;
    this.namespace = opts.namespace ?? 'default';
  }

  private newClient(): ManagerClient {
    // A subchannel pool of its own: one TCP connection per session or agent, as from separate machines.
    return new (managerPackage().Manager)(this.opts.manager, grpc.credentials.createInsecure(), { ...CHANNEL_OPTIONS, 'grpc.use_local_subchannel_pool': 1 });
  }

  private fail(what: string, err: unknown): void {
    if (this.failures.length < MAX_FAILURES) this.failures.push(`${what}: ${(err as grpc.ServiceError)?.details || (err as Error)?.message || String(err)}`);
  }

  /** Agents first (so that intercepts are ACTIVE at once), then every session with its intercept. */
  async start(): Promise<void> {
    const batch = this.opts.concurrency ?? 20;
    await inBatches([...Array(this.opts.workloads).keys()], batch, (n) => this.startAgent(n));
    await inBatches([...Array(this.opts.sessions).keys()], batch, (n) => this.startSession(n));
  }

  private workload(n: number): string {
    return `load-w${n}`;
  }

  private async startAgent(n: number): Promise<void> {
    const a: LoadAgent = { n, id: '', lost: false, seen: 0, client: this.newClient() };
    this.agents.push(a);
    const info = {
      version: VERSION,
      protocol: PROTOCOL,
      workload: this.workload(n),
      namespace: this.namespace,
      pod_name: `${this.workload(n)}-pod`,
      pod_ip: '127.0.0.1',
      ports: [{ name: 'http', app_port: 8080, listen_port: 9090, service_port: 80 }],
    };
    const s = await unary<AgentSession__Output>(10_000, (o, cb) => a.client.AgentArrive(info, o, cb));
    a.id = s.agent_id;
    const watch = a.client.WatchIntercepts({ agent_id: a.id });
    a.stream = watch;
    watch.on('data', (snap: InterceptSnapshot__Output) => (a.seen = snap.intercepts?.length ?? 0));
    watch.on('error', (err: grpc.ServiceError) => {
      if (this.stopped && err.code === grpc.status.CANCELLED) return;
      a.lost = true;
      this.fail(`agent ${n} watch`, err);
    });
    watch.on('end', () => {
      if (!this.stopped) a.lost = true;
    });
    this.scheduleAgentBeat(a, Math.random() * this.heartbeatMs);
  }

  private scheduleAgentBeat(a: LoadAgent, delay: number): void {
    if (this.stopped) return;
    a.timer = setTimeout(() => {
      this.counts.agentHeartbeats++;
      a.client.AgentHeartbeat({ agent_id: a.id, requests: {} }, { deadline: Date.now() + this.heartbeatMs }, (err, res) => {
        if (err || !res?.ok) {
          this.counts.agentHeartbeatsFailed++;
          if (err?.code === grpc.status.NOT_FOUND) a.lost = true;
          this.fail(`agent ${a.n} heartbeat`, err ?? 'refused');
        }
        this.scheduleAgentBeat(a, this.heartbeatMs);
      });
    }, delay);
  }

  private async startSession(n: number): Promise<void> {
    const s: LoadSession = { n, id: '', lost: false, client: this.newClient() };
    this.sessions.push(s);
    const arrive = { client_version: VERSION, protocol: PROTOCOL, user: `load-${n}@scale`, hostname: `scale-${n}`, namespace: this.namespace };
    const info = await unary<SessionInfo__Output>(10_000, (o, cb) => s.client.Arrive(arrive, o, cb));
    s.id = info.session_id;
    const watch = s.client.WatchDiversions({ session_id: s.id });
    s.stream = watch;
    watch.on('data', () => undefined);
    watch.on('error', (err: grpc.ServiceError) => {
      if (this.stopped && err.code === grpc.status.CANCELLED) return;
      s.lost = true;
      this.fail(`session ${n} diversion watch`, err);
    });
    watch.on('end', () => {
      if (!this.stopped) s.lost = true;
    });
    const spec = {
      workload: this.workload(n % this.opts.workloads),
      namespace: this.namespace,
      port: 8080,
      headers: [{ name: 'x-dev', value: `load-${n}`, regex: false }],
      local_port: 8080,
    };
    await unary<InterceptInfo__Output>(10_000, (o, cb) => s.client.CreateIntercept({ session_id: s.id, spec }, o, cb));
    this.counts.intercepts++;
    this.scheduleBeat(s, Math.random() * this.heartbeatMs);
  }

  private scheduleBeat(s: LoadSession, delay: number): void {
    if (this.stopped) return;
    s.timer = setTimeout(() => {
      const t0 = performance.now();
      this.counts.heartbeats++;
      s.client.Heartbeat({ session_id: s.id }, { deadline: Date.now() + this.deadlineMs }, (err, res) => {
        this.latencies.push(performance.now() - t0);
        if (err || !res?.ok) {
          this.counts.heartbeatsFailed++;
          if (err?.code === grpc.status.NOT_FOUND) s.lost = true;
          this.fail(`session ${s.n} heartbeat`, err ?? 'refused');
        }
        this.scheduleBeat(s, this.heartbeatMs);
      });
    }, delay);
  }

  /** The figures so far, with the manager's own list of intercepts. */
  async report(): Promise<LoadReport> {
    let listed: InterceptInfo__Output[] = [];
    const any = this.sessions[0];
    if (any) {
      try {
        listed = (await unary<InterceptList__Output>(10_000, (o, cb) => any.client.ListIntercepts({ session_id: any.id, all: true }, o, cb))).intercepts;
      } catch (err) {
        this.fail('list intercepts', err);
      }
    }
    const sorted = [...this.latencies].sort((a, b) => a - b);
    return {
      sessions: this.sessions.length,
      agents: this.agents.length,
      ...this.counts,
      sessionsLost: this.sessions.filter((s) => s.lost).length,
      agentsLost: this.agents.filter((a) => a.lost).length,
      interceptsListed: listed.length,
      interceptsActive: listed.filter((i) => i.state === 'ACTIVE').length,
      interceptsSeenByAgents: this.agents.reduce((n, a) => n + a.seen, 0),
      heartbeatMs: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? 0 },
      failures: [...this.failures],
    };
  }

  /** Stop the loops, depart every session and agent, close every connection. */
  async stop(): Promise<void> {
    this.stopped = true;
    const peers: Peer[] = [...this.sessions, ...this.agents];
    for (const p of peers) {
      clearTimeout(p.timer);
      p.stream?.cancel();
    }
    await inBatches(this.sessions, 50, (s) => unary(2000, (o, cb) => s.client.Depart({ session_id: s.id }, o, cb)).then(() => undefined, () => undefined));
    await inBatches(this.agents, 50, (a) => unary(2000, (o, cb) => a.client.AgentDepart({ agent_id: a.id }, o, cb)).then(() => undefined, () => undefined));
    for (const p of peers) p.client.close();
  }
}
