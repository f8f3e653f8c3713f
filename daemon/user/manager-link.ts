import * as grpc from '@grpc/grpc-js';
import { EventEmitter } from 'node:events';
import { hostname, userInfo } from 'node:os';
import { callFailure, Codes, RdbgError } from '../../src/core/errors';
import { logger } from '../../src/core/log';
import { PROTOCOL, VERSION } from '../../src/core/version';
import { CHANNEL_OPTIONS, managerPackage, type ManagerClient } from '../../src/rpc/services';
import type { ClusterInfo__Output } from '../../src/gen/rdbg/v1/ClusterInfo';
import type { VersionInfo__Output } from '../../src/gen/rdbg/v1/VersionInfo';

const log = logger('userd.link');

const HEARTBEAT_MS = 3_000;
/** A heartbeat that takes longer than this counts as lost: a sleeping laptop or a dead transport, not a slow manager. */
const HEARTBEAT_DEADLINE_MS = 2_000;
const RPC_DEADLINE_MS = 5_000;
/** While reconnecting, each Arrive gets this long, so that an attempt sent into a dead link does not delay the next one. */
const REARRIVE_DEADLINE_MS = 3_000;
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 1_000;
const MAX_EVENTS = 20;
/** The manager watches the cluster's subnets and namespaces; the link asks for them every this many heartbeats. */
const CLUSTER_INFO_EVERY = 5;

export type LinkState = 'CONNECTING' | 'CONNECTED' | 'RECONNECTING' | 'DISCONNECTED';

export interface LinkOptions {
  address: string; // host:port of the manager (or of a local port-forward)
  namespace: string;
  token?: string;
  user?: string;
}

function deadline(ms = RPC_DEADLINE_MS): grpc.CallOptions {
  return { deadline: Date.now() + ms };
}

/** A FAILED_PRECONDITION from Arrive is a version mismatch: retrying will not help. */
function isFatal(err: grpc.ServiceError): boolean {
  return err.code === grpc.status.FAILED_PRECONDITION || err.code === grpc.status.UNAUTHENTICATED;
}

/**
 * The session with the traffic manager. Heartbeats keep its lease; when a
 * heartbeat fails (the manager restarted, the transport dropped) the link
 * arrives again by itself and emits 'session' so that intercepts and
 * diversion watches are re-established.
 */
export class ManagerLink extends EventEmitter {
  readonly client: ManagerClient;
  state: LinkState = 'CONNECTING';
  sessionId = '';
  manager?: VersionInfo__Output;
  cluster?: ClusterInfo__Output;
  dataPort = 0;
  reconnects = 0;
  lastError = '';
  connectedSince?: Date;
  readonly events: { time: string; event: string }[] = [];
  /** The one timer that drives heartbeats and reconnects: never more than one is pending. */
  private timer?: NodeJS.Timeout;
  /** A heartbeat or an Arrive is in flight: nothing else starts until it ends. */
  private ticking = false;
  private closed = false;
  private retryMs = RETRY_MIN_MS;
  private beats = 0;

  constructor(readonly opts: LinkOptions) {
    super();
    const Manager = managerPackage().Manager;
    this.client = new Manager(opts.address, grpc.credentials.createInsecure(), {
      ...CHANNEL_OPTIONS,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2000,
    }) as unknown as ManagerClient;
  }

  /** user@host, as the manager shows this laptop to other developers. */
  get user(): string {
    return this.opts.user ?? `${userInfo().username}@${hostname()}`;
  }

  private event(event: string): void {
    this.events.push({ time: new Date().toISOString(), event });
    if (this.events.length > MAX_EVENTS) this.events.shift();
  }

  /** Arrive for the first time; rejects with a clear error when that is impossible. */
  async start(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.arrive();
        this.scheduleHeartbeat();
        return;
      } catch (err) {
        const e = err as grpc.ServiceError;
        if (isFatal(e)) throw new RdbgError(Codes.VERSION_MISMATCH, e.details);
        if (Date.now() > until) {
          throw new RdbgError(
            Codes.MANAGER_UNREACHABLE,
            `cannot reach the traffic manager at ${this.opts.address}: ${callFailure(e)}`,
            'check the address, and that "rdbg manager serve" (or the rdbg Deployment) is running',
          );
        }
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }

  /**
   * Arrive, or after a lost connection resume the session held before: the
   * manager keeps its id and intercepts while its lease lasts. Emits
   * 'session' (id, resumed) once per successful arrival.
   */
  private arrive(deadlineMs = RPC_DEADLINE_MS): Promise<void> {
    const previous = this.sessionId;
    return new Promise((resolve, reject) => {
      this.client.arrive(
        {
          client_version: VERSION,
          protocol: PROTOCOL,
          user: this.user,
          hostname: hostname(),
          namespace: this.opts.namespace,
          token: this.opts.token ?? '',
          resume_session_id: previous,
        },
        deadline(deadlineMs),
        (err, res) => {
          if (err || !res) return reject(err);
          if (this.closed) return resolve();
          const first = !previous;
          const resumed = !first && res.resumed && res.session_id === previous;
          this.sessionId = res.session_id;
          this.manager = res.manager ?? undefined;
          this.cluster = res.cluster ?? undefined;
          this.dataPort = res.data_port;
          this.state = 'CONNECTED';
          this.connectedSince = new Date();
          this.retryMs = RETRY_MIN_MS;
          const what = first ? `connected to manager ${res.manager?.version}` : resumed ? `resumed session ${res.session_id.slice(0, 8)}` : `reconnected (new session ${res.session_id.slice(0, 8)}; the old one had expired)`;
          this.event(what);
          if (!first) this.reconnects++;
          log.info(first ? 'connected' : resumed ? 'resumed' : 'reconnected', { session: res.session_id, previous: previous || undefined, manager: res.manager?.version });
          this.emit('session', this.sessionId, resumed);
          resolve();
        },
      );
    });
  }

  /** (Re)arms the link's only timer. */
  private scheduleHeartbeat(delay = HEARTBEAT_MS): void {
    clearTimeout(this.timer);
    if (this.closed) return;
    this.timer = setTimeout(() => void this.tick(), delay);
  }

  /**
   * One step of the link: a heartbeat while connected; else one Arrive.
   * Exactly one step runs at a time, and each step arms the next, so a
   * laptop that wakes from sleep with overdue timers reconnects once.
   */
  private async tick(): Promise<void> {
    if (this.ticking || this.closed) return;
    this.ticking = true;
    try {
      if (this.state === 'CONNECTED') {
        const err = await this.heartbeat();
        if (this.closed) return;
        if (!err && this.state === 'CONNECTED') {
          if (++this.beats % CLUSTER_INFO_EVERY === 0) this.refreshCluster();
          return this.scheduleHeartbeat();
        }
        if (err) this.markLost(err.code === grpc.status.NOT_FOUND ? 'the manager forgot this session (its lease ran out, or it restarted)' : `heartbeat failed: ${callFailure(err)}`);
      }
      try {
        await this.arrive(REARRIVE_DEADLINE_MS);
        this.scheduleHeartbeat();
      } catch (err) {
        const e = err as grpc.ServiceError;
        this.lastError = callFailure(e);
        log.debug('arrive failed', { err: this.lastError, retryMs: Math.min(RETRY_MAX_MS, this.retryMs * 2) });
        if (isFatal(e)) {
          this.state = 'DISCONNECTED';
          this.event(`refused by the manager: ${e.details}`);
          log.error('manager refused the session', { err: e.details });
        }
        this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
        this.scheduleHeartbeat(this.retryMs);
      }
    } finally {
      this.ticking = false;
    }
  }

  private heartbeat(): Promise<grpc.ServiceError | null> {
    return new Promise((resolve) => this.client.heartbeat({ session_id: this.sessionId }, deadline(HEARTBEAT_DEADLINE_MS), (err) => resolve(err)));
  }

  /** Emits 'cluster' when the subnets, domain or namespaces the manager announces have changed. */
  private refreshCluster(): void {
    this.client.getClusterInfo({ session_id: this.sessionId }, deadline(), (err, info) => {
      if (err || !info || JSON.stringify(info) === JSON.stringify(this.cluster)) return;
      log.info('the cluster changed', { serviceSubnets: info.service_subnets, podSubnets: info.pod_subnets, namespaces: info.namespaces.length });
      this.event(`cluster changed: subnets ${[...info.service_subnets, ...info.pod_subnets].join(', ')}`);
      this.cluster = info;
      this.emit('cluster', info);
    });
  }

  /** Called by anyone who sees the transport fail, to start reconnecting at once. */
  lost(reason: string): void {
    if (this.state !== 'CONNECTED' || this.closed) return;
    this.markLost(reason);
    // A step in flight arms the next one itself when it ends.
    if (!this.ticking) this.scheduleHeartbeat(RETRY_MIN_MS);
  }

  private markLost(reason: string): void {
    if (this.state !== 'CONNECTED') return;
    this.state = 'RECONNECTING';
    this.lastError = reason;
    this.event(`lost the manager: ${reason}`);
    log.warn('lost the manager', { reason });
    this.emit('lost');
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.state === 'CONNECTED') {
      await new Promise<void>((resolve) => this.client.depart({ session_id: this.sessionId }, deadline(1000), () => resolve()));
    }
    this.state = 'DISCONNECTED';
    this.client.close();
  }
}
