import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import * as http2 from 'node:http2';
import { logger } from '../src/core/log';
import { PROTOCOL, VERSION } from '../src/core/version';
import { describeRule, isGlobal, ruleKey } from '../src/intercept/rules';
import type { ManagerHandlers } from '../src/gen/rdbg/v1/Manager';
import type { AgentInfo__Output } from '../src/gen/rdbg/v1/AgentInfo';
import type { AgentSession } from '../src/gen/rdbg/v1/AgentSession';
import type { DivertRequest } from '../src/gen/rdbg/v1/DivertRequest';
import type { InterceptInfo } from '../src/gen/rdbg/v1/InterceptInfo';
import type { InterceptSnapshot } from '../src/gen/rdbg/v1/InterceptSnapshot';
import type { InterceptSpec__Output } from '../src/gen/rdbg/v1/InterceptSpec';
import type { SessionRegistry } from './sessions';
import { StallClock } from './stall-clock';
import type { H2DivertBroker } from './data-plane';
import { H } from '../src/tunnel/h2/protocol';
import { encodeMessage, type DialCode } from '../src/tunnel/messages';
import { splice } from '../src/tunnel/splice';
import { versionMismatch } from './version-check';

const AGENT_SWEEP_MS = 1000;

const log = logger('manager.intercepts');

const ACCEPT_TIMEOUT_MS = 10_000;

interface Agent {
  id: string;
  info: AgentInfo__Output;
  lastSeen: number;
  watchers: Set<grpc.ServerWritableStream<unknown, InterceptSnapshot>>;
  /** The version of the last snapshot sent, and of the last one the agent said it routes by. */
  sent: number;
  applied: number;
  /** What the agent said it could not do for the snapshot it applied last (a replace). */
  problem: string;
}

/** How long a change waits for the workload's agents to take it before the client gets its answer anyway. */
const APPLY_WAIT_MS = 2_000;

interface Intercept {
  id: string;
  spec: InterceptSpec__Output;
  owner: string;
  sessionId: string;
  requests: number;
  mirrorsDropped: number;
}

/** An agent's diverted flow, waiting for the owner's laptop to accept it. */
interface PendingFlow {
  intercept: Intercept;
  /** '' a diverted connection; 'files' the agent's end of a mount. */
  kind: string;
  pod: string;
  timer: NodeJS.Timeout;
  agentStream: http2.ServerHttp2Stream;
}

/** A refusal from an authorization hook (Kubernetes mode: TokenReview, intercept claims). */
export type Refusal = { code: grpc.status; details: string };

/** Checks an agent's credential; undefined when it may arrive. */
export type AgentAuthorizer = (info: AgentInfo__Output) => Promise<Refusal | undefined>;

/** Checks that a session may intercept a workload; undefined when it may. */
export type ClaimCheck = (sessionId: string, workload: string, namespace: string) => Promise<Refusal | undefined>;

type ClientHandlerNames = 'CreateIntercept' | 'RemoveIntercept' | 'ListIntercepts' | 'WatchDiversions';
type AgentHandlerNames = 'AgentArrive' | 'AgentHeartbeat' | 'AgentDepart' | 'WatchIntercepts' | 'AgentApplied';

/**
 * The intercept registry: which client holds which rule on which workload
 * port, which agents serve each workload, and the meeting point where an
 * agent's diverted flow is joined to the owning client's accepting flow.
 */
export class InterceptRegistry implements H2DivertBroker {
  private readonly agents = new Map<string, Agent>();
  private readonly intercepts = new Map<string, Intercept>();
  private readonly diversions = new Map<string, grpc.ServerWritableStream<unknown, DivertRequest>>();
  private readonly pending = new Map<string, PendingFlow>();
  private readonly timer: NodeJS.Timeout;
  private readonly clock = new StallClock(AGENT_SWEEP_MS);
  private snapshots = 0;
  /** Changes waiting for agents to take them: each resolves once `done()` says so. */
  private readonly applyWaiters = new Set<{ done: () => boolean; resolve: () => void }>();

  constructor(
    private readonly sessions: SessionRegistry,
    private readonly agentLeaseMs: number,
  ) {
    sessions.on('ended', (id: string) => this.sessionEnded(id));
    this.timer = setInterval(() => this.sweepAgents(), AGENT_SWEEP_MS);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  private agentsFor(workload: string, namespace: string): Agent[] {
    return [...this.agents.values()].filter((a) => a.info.workload === workload && a.info.namespace === namespace);
  }

  /**
   * An intercept as `viewer` (a session id) may see it: the session id is the
   * owner's credential on the data plane, so only the owner gets it back.
   */
  /** What the metrics count: intercepts by state, agents, and the requests sent to laptops. */
  census(): { intercepts: Record<'ACTIVE' | 'WAITING_FOR_AGENT', number>; agents: number; requests: number } {
    const intercepts = { ACTIVE: 0, WAITING_FOR_AGENT: 0 };
    let requests = 0;
    for (const i of this.intercepts.values()) {
      const served = this.agentsFor(i.spec.workload, i.spec.namespace).some((a) => a.watchers.size > 0);
      intercepts[served ? 'ACTIVE' : 'WAITING_FOR_AGENT']++;
      requests += i.requests;
    }
    return { intercepts, agents: this.agents.size, requests };
  }

  private info(i: Intercept, viewer?: string): InterceptInfo {
    const registered = this.agentsFor(i.spec.workload, i.spec.namespace);
    // An agent serves the intercept once it watches the registry (and so has its rules), not when it arrived.
    const agents = registered.filter((a) => a.watchers.size > 0);
    return {
      id: i.id,
      spec: i.spec,
      owner: i.owner,
      session_id: viewer === i.sessionId ? i.sessionId : '',
      state: agents.length > 0 ? 'ACTIVE' : 'WAITING_FOR_AGENT',
      requests: i.requests,
      mirrors_dropped: i.mirrorsDropped,
      env: registered[0]?.info.env ?? {},
      agents: agents.length,
      message: agents.length > 0 ? '' : `no traffic agent of ${i.spec.workload}.${i.spec.namespace} is connected yet`,
      // The agent that arrived first serves a mount; another takes over when it goes.
      files_pod: i.spec.mount ? (agents[0]?.info.pod_name ?? '') : '',
    };
  }

  private notifyAgents(workload: string, namespace: string): void {
    for (const a of this.agentsFor(workload, namespace)) this.pushSnapshot(a);
  }

  private pushSnapshot(a: Agent): void {
    const version = ++this.snapshots;
    const snapshot = {
      intercepts: [...this.intercepts.values()]
        .filter((i) => i.spec.workload === a.info.workload && i.spec.namespace === a.info.namespace)
        .map((i) => this.info(i)),
      version,
    };
    if (a.watchers.size > 0) a.sent = version;
    for (const w of a.watchers) w.write(snapshot);
  }

  /**
   * Resolves once every agent of the workload that watches routes by the
   * snapshots sent so far (or after APPLY_WAIT_MS, for an agent that is slow
   * or going away): a client told "active" or "left" may rely on it at once.
   */
  private applied(workload: string, namespace: string): Promise<void> {
    const due = this.agentsFor(workload, namespace).filter((a) => a.watchers.size > 0).map((a) => [a, a.sent] as const);
    const done = (): boolean => due.every(([a, v]) => a.applied >= v || !this.agents.has(a.id) || a.watchers.size === 0);
    if (done()) return Promise.resolve();
    return new Promise((resolve) => {
      const w = { done, resolve: () => {} };
      const timer = setTimeout(() => w.resolve(), APPLY_WAIT_MS);
      w.resolve = () => {
        clearTimeout(timer);
        this.applyWaiters.delete(w);
        resolve();
      };
      this.applyWaiters.add(w);
    });
  }

  /** What the workload's agents could not do for a replace, by pod. */
  private replaceProblems(i: Intercept): string {
    return this.agentsFor(i.spec.workload, i.spec.namespace)
      .filter((a) => a.problem)
      .map((a) => `pod ${a.info.pod_name}: ${a.problem}`)
      .join('; ');
  }

  private checkApplied(): void {
    for (const w of [...this.applyWaiters]) if (w.done()) w.resolve();
  }

  private sessionEnded(sessionId: string): void {
    const touched = new Set<string>();
    for (const i of [...this.intercepts.values()]) {
      if (i.sessionId !== sessionId) continue;
      this.intercepts.delete(i.id);
      touched.add(JSON.stringify([i.spec.workload, i.spec.namespace]));
      log.info('intercept ended with its session', { intercept: i.id, owner: i.owner });
    }
    for (const t of touched) {
      const [w, ns] = JSON.parse(t) as [string, string];
      this.notifyAgents(w, ns);
    }
    this.diversions.get(sessionId)?.end();
    this.diversions.delete(sessionId);
  }

  private sweepAgents(): void {
    const now = Date.now();
    const stalled = this.clock.stalled(now);
    if (stalled > 0) for (const a of this.agents.values()) a.lastSeen += stalled;
    for (const a of this.agents.values()) {
      if (now - a.lastSeen > this.agentLeaseMs) {
        log.warn('agent expired', { agent: a.id, workload: a.info.workload, pod: a.info.pod_name });
        this.removeAgent(a);
      }
    }
  }

  private removeAgent(a: Agent): void {
    this.agents.delete(a.id);
    for (const w of a.watchers) w.end();
    this.checkApplied();
    // A mount it served moves to another agent of the workload.
    const { workload, namespace } = a.info;
    if ([...this.intercepts.values()].some((i) => i.spec.mount && i.spec.workload === workload && i.spec.namespace === namespace)) this.notifyAgents(workload, namespace);
  }

  /** Which ports of a workload an intercept on `port` applies to. */
  private resolvePort(spec: InterceptSpec__Output): number | string {
    const agents = this.agentsFor(spec.workload, spec.namespace);
    const ports = new Set(agents.flatMap((a) => a.info.ports.map((p) => p.app_port)));
    const names = [...new Set(agents.flatMap((a) => a.info.ports.map((p) => (p.name ? `${p.name} ${p.app_port}` : String(p.app_port)))))].join(', ');
    if (spec.port) {
      // No agent (that names its ports) yet: the intercept waits for one. Else the port must be one they take over.
      const telling = agents.filter((a) => a.info.ports.length > 0);
      const served = telling.length === 0 || telling.some((a) => a.info.ports.some((p) => p.app_port === spec.port || p.listen_port === spec.port || p.service_port === spec.port));
      return served ? spec.port : `${spec.workload} in namespace ${spec.namespace} has no port ${spec.port} (its ports: ${names})`;
    }
    if (ports.size === 1) return [...ports][0];
    if (ports.size === 0) {
      return `no agent serves ${spec.workload} in namespace ${spec.namespace} (yet), so its port is not known: ` +
        'check the name, or give --port LOCAL:REMOTE to wait for its agent';
    }
    return `${spec.workload} has several ports (${names}): name one with --port LOCAL:REMOTE`;
  }

  create(sessionId: string, spec: InterceptSpec__Output): InterceptInfo | grpc.ServiceError {
    const session = this.sessions.get(sessionId);
    const err = (code: grpc.status, details: string): grpc.ServiceError =>
      Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
    if (!session) return err(grpc.status.NOT_FOUND, 'no such session (it expired, or the manager restarted): reconnect');
    if (!spec.workload) return err(grpc.status.INVALID_ARGUMENT, 'an intercept needs a workload name');
    if (spec.path_prefix && !spec.path_prefix.startsWith('/')) return err(grpc.status.INVALID_ARGUMENT, `the path prefix "${spec.path_prefix}" must start with "/"`);
    spec.namespace ||= session.namespace;
    const port = this.resolvePort(spec);
    if (typeof port === 'string') return err(grpc.status.FAILED_PRECONDITION, port);
    spec.port = port;
    if (!spec.local_port) return err(grpc.status.INVALID_ARGUMENT, 'an intercept needs a local port');
    if (spec.replace && (!isGlobal(spec) || spec.mirror)) {
      return err(grpc.status.INVALID_ARGUMENT, 'a replace takes every request to the port: no --header, --path-prefix or --mirror');
    }
    for (const o of this.intercepts.values()) {
      if (!spec.replace || !o.spec.replace || o.sessionId === sessionId) continue;
      if (o.spec.workload === spec.workload && o.spec.namespace === spec.namespace) {
        return err(grpc.status.ALREADY_EXISTS, `${spec.workload} in namespace ${spec.namespace} is replaced by ${o.owner}: one replace at a time; ask them to leave, or intercept with --header`);
      }
    }
    for (const o of this.intercepts.values()) {
      if (o.spec.workload !== spec.workload || o.spec.namespace !== spec.namespace || o.spec.port !== spec.port) continue;
      if (o.sessionId === sessionId && ruleKey(o.spec) === ruleKey(spec) && o.spec.mirror === spec.mirror && o.spec.replace === spec.replace) {
        o.spec = spec; // the same client asking again (e.g. after a reconnect): refresh it
        this.notifyAgents(spec.workload, spec.namespace);
        return this.info(o, sessionId);
      }
      if (o.spec.mirror !== spec.mirror) continue;
      if (isGlobal(o.spec) || isGlobal(spec) || ruleKey(o.spec) === ruleKey(spec)) {
        return err(
          grpc.status.ALREADY_EXISTS,
          `port ${spec.port} of ${spec.workload}.${spec.namespace} is already intercepted by ${o.owner} (${describeRule(o.spec)}); ` +
            (isGlobal(spec) ? 'use --header to take only your own requests' : 'choose a different header value'),
        );
      }
    }
    const i: Intercept = { id: randomUUID(), spec, owner: session.user, sessionId, requests: 0, mirrorsDropped: 0 };
    this.intercepts.set(i.id, i);
    log.info('intercept created', { intercept: i.id, owner: i.owner, workload: spec.workload, rule: describeRule(spec) });
    this.notifyAgents(spec.workload, spec.namespace);
    return this.info(i, sessionId);
  }

  /** `claimCheck`: in Kubernetes mode, the session must have claimed the workload (see manager/kube/claims.ts). */
  clientHandlers(claimCheck?: ClaimCheck): Pick<ManagerHandlers, ClientHandlerNames> {
    return {
      CreateIntercept: (call, cb) => {
        const { session_id: sessionId } = call.request;
        const spec = call.request.spec ?? ({} as InterceptSpec__Output);
        const session = this.sessions.get(sessionId);
        const create = (): void => {
          const r = this.create(sessionId, spec);
          if (r instanceof Error) return cb(r);
          void this.applied(r.spec?.workload ?? '', r.spec?.namespace ?? '').then(() => {
            const i = this.intercepts.get(r.id ?? '');
            const refused = i?.spec.replace ? this.replaceProblems(i) : '';
            if (i && refused) {
              // The app would keep running beside the laptop: no replace rather than half of one.
              this.intercepts.delete(i.id);
              this.notifyAgents(i.spec.workload, i.spec.namespace);
              log.warn('replace refused by the agents', { intercept: i.id, problem: refused });
              void this.applied(i.spec.workload, i.spec.namespace).then(() =>
                cb({ code: grpc.status.FAILED_PRECONDITION, details: `cannot replace ${i.spec.workload} in namespace ${i.spec.namespace}: ${refused}` }));
              return;
            }
            cb(null, i ? this.info(i, sessionId) : r);
          });
        };
        if (!claimCheck || !session || !spec.workload) return create();
        claimCheck(sessionId, spec.workload, spec.namespace || session.namespace).then(
          (refusal) => (refusal ? cb(refusal) : create()),
          (err: Error) => cb({ code: grpc.status.INTERNAL, details: `checking the intercept claim failed: ${err.message}` }),
        );
      },
      RemoveIntercept: (call, cb) => {
        const r = call.request;
        const mine = [...this.intercepts.values()].filter(
          (i) => i.sessionId === r.session_id && (r.id ? i.id === r.id : i.spec.workload === r.workload && (!r.namespace || i.spec.namespace === r.namespace)),
        );
        if (mine.length === 0) {
          cb({ code: grpc.status.NOT_FOUND, details: `no intercept of ${r.workload || r.id} held by this client` });
          return;
        }
        for (const i of mine) {
          this.intercepts.delete(i.id);
          log.info('intercept removed', { intercept: i.id, owner: i.owner });
          this.notifyAgents(i.spec.workload, i.spec.namespace);
        }
        void Promise.all(mine.map((i) => this.applied(i.spec.workload, i.spec.namespace))).then(() => cb(null, {}));
      },
      ListIntercepts: (call, cb) => {
        const r = call.request;
        if (!this.sessions.get(r.session_id)) {
          cb({ code: grpc.status.NOT_FOUND, details: 'no such session: reconnect' });
          return;
        }
        const list = [...this.intercepts.values()].filter((i) => r.all || i.sessionId === r.session_id).map((i) => this.info(i, r.session_id));
        cb(null, { intercepts: list });
      },
      WatchDiversions: (call) => {
        const id = call.request.session_id;
        if (!this.sessions.get(id)) {
          call.emit('error', { code: grpc.status.NOT_FOUND, details: 'no such session: reconnect' });
          return;
        }
        this.diversions.get(id)?.end();
        this.diversions.set(id, call);
        call.on('cancelled', () => {
          if (this.diversions.get(id) === call) this.diversions.delete(id);
        });
        call.on('error', () => undefined);
      },
    };
  }

  agentHandlers(authorize: AgentAuthorizer, dataPort: () => number = () => 0): Pick<ManagerHandlers, AgentHandlerNames> {
    return {
      AgentArrive: (call, cb) => {
        const info = call.request;
        const mismatch = versionMismatch({ version: info.version, protocol: info.protocol }, 'agent');
        if (mismatch) return cb({ code: grpc.status.FAILED_PRECONDITION, details: mismatch });
        if (!info.workload || !info.namespace) {
          return cb({ code: grpc.status.INVALID_ARGUMENT, details: 'an agent must name its workload and namespace' });
        }
        authorize(info).then(
          (refusal) => (refusal ? cb(refusal) : this.arrive(info, dataPort(), cb)),
          (err: Error) => cb({ code: grpc.status.INTERNAL, details: `checking the agent's credential failed: ${err.message}` }),
        );
      },
      AgentHeartbeat: (call, cb) => {
        const a = this.agents.get(call.request.agent_id);
        if (!a) {
          cb({ code: grpc.status.NOT_FOUND, details: 'no such agent (the manager restarted): arrive again' });
          return;
        }
        a.lastSeen = Date.now();
        for (const [id, n] of Object.entries(call.request.requests ?? {})) {
          const i = this.intercepts.get(id);
          if (i) i.requests += Number(n);
        }
        for (const [id, n] of Object.entries(call.request.mirrors_dropped ?? {})) {
          const i = this.intercepts.get(id);
          if (i) i.mirrorsDropped += Number(n);
        }
        cb(null, { ok: true });
      },
      AgentDepart: (call, cb) => {
        const a = this.agents.get(call.request.agent_id);
        if (a) {
          log.info('agent departed', { agent: a.id, pod: a.info.pod_name });
          this.removeAgent(a);
        }
        cb(null, {});
      },
      AgentApplied: (call, cb) => {
        const a = this.agents.get(call.request.agent_id);
        if (a) {
          a.applied = Math.max(a.applied, Number(call.request.version));
          a.problem = call.request.problem ?? '';
          this.checkApplied();
        }
        cb(null, {});
      },
      WatchIntercepts: (call) => {
        const a = this.agents.get(call.request.agent_id);
        if (!a) {
          call.emit('error', { code: grpc.status.NOT_FOUND, details: 'no such agent (the manager restarted): arrive again' });
          return;
        }
        a.watchers.add(call);
        const gone = (): void => {
          a.watchers.delete(call);
          this.checkApplied();
        };
        call.on('cancelled', gone);
        call.on('error', gone);
        this.pushSnapshot(a);
      },
    };
  }

  private arrive(info: AgentInfo__Output, dataPort: number, cb: grpc.sendUnaryData<AgentSession>): void {
    // The agent id is its credential on the data plane: random (122 bits), never shown to clients.
    const a: Agent = { id: randomUUID(), info: { ...info, token: '' }, lastSeen: Date.now(), watchers: new Set(), sent: 0, applied: 0, problem: '' };
    // An agent that arrives again replaces its earlier registration: after a pause of the manager, the
    // Arrives it gave up on come in too, and none of them may count as an agent until its lease runs out.
    // The same agent is the same pod serving the same ports; a host may run one agent per port.
    if (info.pod_name) {
      for (const old of this.agentsFor(info.workload, info.namespace)) if (sameAgent(old.info, info)) this.removeAgent(old);
    }
    this.agents.set(a.id, a);
    log.info('agent arrived', { agent: a.id, workload: info.workload, namespace: info.namespace, pod: info.pod_name });
    cb(null, { agent_id: a.id, manager: { version: VERSION, protocol: PROTOCOL }, lease_seconds: this.agentLeaseMs / 1000, data_port: dataPort });
  }

  // Diverted flows: an agent opens one for an intercept; the owner's laptop accepts it.

  /** Find who must accept a flow for this intercept, or say why nobody can. */
  private divertTarget(agentId: string, interceptId: string): { intercept: Intercept; watcher: grpc.ServerWritableStream<unknown, DivertRequest> } | { code: DialCode; message: string } {
    if (!this.agents.has(agentId)) return { code: 'DENIED', message: 'unknown agent: arrive first' };
    const intercept = this.intercepts.get(interceptId);
    if (!intercept) return { code: 'FAILED', message: 'the intercept has ended' };
    const watcher = this.diversions.get(intercept.sessionId);
    if (!watcher) return { code: 'UNREACHABLE', message: `the rdbg client of ${intercept.owner} is not connected to the traffic manager` };
    return { intercept, watcher };
  }

  private park(flow: Omit<PendingFlow, 'timer'>, watcher: grpc.ServerWritableStream<unknown, DivertRequest>, onTimeout: (msg: string) => void): string {
    const flowId = randomUUID();
    const timer = setTimeout(() => {
      this.pending.delete(flowId);
      onTimeout(`the rdbg client of ${flow.intercept.owner} did not accept the flow within 10 seconds`);
    }, ACCEPT_TIMEOUT_MS);
    this.pending.set(flowId, { ...flow, timer } as PendingFlow);
    const spec = flow.intercept.spec;
    watcher.write({
      flow_id: flowId,
      intercept_id: flow.intercept.id,
      local_port: spec.local_port,
      local_host: spec.local_host || '127.0.0.1',
      kind: flow.kind,
      pod: flow.pod,
    });
    return flowId;
  }

  private unpark(flowId: string, sessionId: string): PendingFlow | undefined {
    const p = this.pending.get(flowId);
    if (!p || p.intercept.sessionId !== sessionId) return undefined;
    this.pending.delete(flowId);
    clearTimeout(p.timer);
    return p;
  }

  divertFromAgent(agentId: string, interceptId: string, stream: http2.ServerHttp2Stream, kind = ''): void {
    const respond = (code: DialCode, message: string): void => {
      if (!stream.closed && !stream.headersSent) {
        stream.respond({ ':status': code === 'OK' ? 200 : 502, [H.dial]: code, [H.message]: encodeMessage(message) }, { endStream: code !== 'OK' });
      }
    };
    const target = this.divertTarget(agentId, interceptId);
    if ('code' in target) return respond(target.code, target.message);
    if (kind && (kind !== 'files' || !target.intercept.spec.mount)) return respond('DENIED', kind === 'files' ? 'this intercept mounts no files' : `unknown flow kind "${kind}"`);
    stream.pause();
    const pod = this.agents.get(agentId)?.info.pod_name ?? '';
    const flowId = this.park({ agentStream: stream, intercept: target.intercept, kind, pod }, target.watcher, (m) => respond('TIMEOUT', m));
    stream.once('close', () => this.unpark(flowId, target.intercept.sessionId));
  }

  acceptFromClient(sessionId: string, flowId: string, dial: DialCode, message: string, stream: http2.ServerHttp2Stream): void {
    const p = this.unpark(flowId, sessionId);
    if (!p) {
      stream.respond({ ':status': 404, [H.dial]: 'FAILED', [H.message]: encodeMessage('no such diverted flow (it timed out, or belongs to another client)') }, { endStream: true });
      return;
    }
    const agent = p.agentStream;
    if (agent.closed || agent.destroyed) {
      stream.respond({ ':status': 410, [H.dial]: 'FAILED', [H.message]: encodeMessage('the agent gave up on this flow') }, { endStream: true });
      return;
    }
    if (dial !== 'OK') {
      agent.respond({ ':status': 502, [H.dial]: dial, [H.message]: encodeMessage(message) }, { endStream: true });
      stream.respond({ ':status': 200, [H.dial]: 'OK' }, { endStream: true });
      return;
    }
    agent.respond({ ':status': 200, [H.dial]: 'OK' });
    stream.respond({ ':status': 200, [H.dial]: 'OK' });
    splice(agent, stream);
  }
}

/** Whether two registrations are one agent arriving again: the same pod, serving the same app ports. */
function sameAgent(a: AgentInfo__Output, b: AgentInfo__Output): boolean {
  const ports = (i: AgentInfo__Output): string => [...new Set(i.ports.map((p) => p.app_port))].sort((x, y) => x - y).join(',');
  return a.pod_name === b.pod_name && ports(a) === ports(b);
}
