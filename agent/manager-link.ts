import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { joinHostPort, splitHostPort } from '../src/core/address';
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { CHANNEL_OPTIONS, managerPackage, type ManagerClient } from '../src/rpc/services';
import { H2FlowClient } from '../src/tunnel/h2/client';
import { H } from '../src/tunnel/h2/protocol';
import type { AgentInfo } from '../src/gen/rdbg/v1/AgentInfo';
import type { AgentSession__Output } from '../src/gen/rdbg/v1/AgentSession';
import type { InterceptInfo__Output } from '../src/gen/rdbg/v1/InterceptInfo';
import type { InterceptSnapshot__Output } from '../src/gen/rdbg/v1/InterceptSnapshot';

const log = logger('agent.link');

const HEARTBEAT_MS = 3_000;
const CALL_DEADLINE_MS = 5_000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 2_000;

export interface ManagerLinkOptions {
  manager: string; // host:port
  info: AgentInfo;
  heartbeatMs?: number;
  /**
   * The credential, asked again at every (re-)arrival: a projected
   * service-account token is rotated on disk while the agent runs.
   */
  token?: () => string;
}

/**
 * The agent's session with the traffic manager: arrive, heartbeat, and watch
 * the intercepts of this workload. It re-arrives by itself (backoff 0.5-2 s)
 * when the manager restarts or a heartbeat fails; while it is not linked it
 * reports no intercepts, so that every request goes to the app.
 *
 * Events: 'intercepts' (InterceptInfo__Output[]) on every change,
 * 'linked' (agent id), 'unlinked' (reason).
 */
export class ManagerLink extends EventEmitter {
  private client: ManagerClient;
  private id = '';
  private data?: H2FlowClient;
  private current: InterceptInfo__Output[] = [];
  /** Set by the listeners of "intercepts" (synchronously): what the agent could not do for the snapshot, sent with AgentApplied. */
  problem = '';
  private counts = new Map<string, number>();
  private drops = new Map<string, number>();
  private stopped = false;
  private wake?: () => void;
  private endSession?: (reason: string) => void;
  private lastError = '';
  private readonly heartbeatMs: number;

  constructor(private readonly opts: ManagerLinkOptions) {
    super();
    this.heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS;
    this.client = this.channel();
  }

  private channel(): ManagerClient {
    const Manager = managerPackage().Manager;
    return new Manager(this.opts.manager, grpc.credentials.createInsecure(), {
      ...CHANNEL_OPTIONS,
      // The channel's own reconnect backoff must not outlast ours after a manager restart.
      'grpc.initial_reconnect_backoff_ms': BACKOFF_MIN_MS,
      'grpc.max_reconnect_backoff_ms': BACKOFF_MAX_MS,
    });
  }

  /** What the agent tells the manager at arrival (set before start()). */
  setInfo(info: AgentInfo): void {
    this.opts.info = info;
  }

  /** The agent id while linked, '' otherwise. */
  get agentId(): string {
    return this.id;
  }

  /** The manager's data plane while linked, when it has one and we may use it. */
  get dataPlane(): H2FlowClient | undefined {
    return this.data;
  }

  get intercepts(): InterceptInfo__Output[] {
    return this.current;
  }

  /** A request (or a TCP connection) was diverted or mirrored for this intercept. */
  countRequest(interceptId: string): void {
    this.counts.set(interceptId, (this.counts.get(interceptId) ?? 0) + 1);
  }

  /** A mirror copy for this intercept was dropped (see MirrorQueue). */
  countMirrorDrop(interceptId: string): void {
    this.drops.set(interceptId, (this.drops.get(interceptId) ?? 0) + 1);
  }

  start(): void {
    void this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const id = this.id;
    this.endSession?.('stopping');
    this.wake?.();
    this.data?.close();
    if (id) {
      await new Promise<void>((resolve) =>
        this.client.AgentDepart({ agent_id: id }, { deadline: Date.now() + 1000 }, () => resolve()),
      );
    }
    this.client.close();
  }

  private async run(): Promise<void> {
    let backoff = BACKOFF_MIN_MS;
    while (!this.stopped) {
      try {
        const session = await this.arrive();
        backoff = BACKOFF_MIN_MS;
        if (this.lastError) log.info('linked to the traffic manager again', { manager: this.opts.manager });
        this.lastError = '';
        const reason = await this.serve(session);
        if (!this.stopped) log.warn('lost the traffic manager; every request goes to the app until it is back', { reason });
      } catch (err) {
        const msg = errorMessage(err);
        if (msg !== this.lastError) log.warn('cannot reach the traffic manager; every request goes to the app', { manager: this.opts.manager, err: msg });
        this.lastError = msg;
      }
      this.unlink();
      if (this.stopped) break;
      // A new channel, so a new connection: the old one's connect may be stuck on the address of a manager pod that is
      // gone (a Service address that kube-proxy still sent there), silently dropped, which TCP gives up on only after a
      // minute or more, while every call in between ends at its deadline.
      this.client.close();
      this.client = this.channel();
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, backoff * (0.8 + Math.random() * 0.4));
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
  }

  private arrive(): Promise<AgentSession__Output> {
    const info = this.opts.token ? { ...this.opts.info, token: this.opts.token() } : this.opts.info;
    return new Promise((resolve, reject) =>
      this.client.AgentArrive(info, { deadline: Date.now() + CALL_DEADLINE_MS }, (err, res) =>
        err || !res ? reject(err ?? new Error('empty answer')) : resolve(res),
      ),
    );
  }

  /** Runs one linked session; resolves with the reason it ended. */
  private serve(session: AgentSession__Output): Promise<string> {
    return new Promise((resolve) => {
      this.id = session.agent_id;
      if (session.data_port) {
        const { host } = splitHostPort(this.opts.manager, 'manager');
        const id = this.id;
        this.data = new H2FlowClient(joinHostPort(host, session.data_port), () => ({ [H.agent]: id }), (reason) =>
          log.warn('lost the data plane; diverted flows open again on next use', { reason }),
        );
      }
      log.info('linked to the traffic manager', { manager: this.opts.manager, agent: this.id, version: session.manager?.version, dataPort: session.data_port });
      this.emit('linked', this.id);
      const watch = this.client.WatchIntercepts({ agent_id: this.id });
      const heartbeat = setInterval(() => this.heartbeat(end), this.heartbeatMs);
      let done = false;
      const end = (reason: string): void => {
        if (done) return;
        done = true;
        clearInterval(heartbeat);
        this.endSession = undefined;
        watch.removeAllListeners('data');
        watch.on('error', () => undefined);
        watch.cancel();
        resolve(reason);
      };
      this.endSession = end;
      watch.on('data', (snap: InterceptSnapshot__Output) => {
        if (done) return;
        this.current = snap.intercepts ?? [];
        log.debug('intercepts', { ids: this.current.map((i) => i.id) });
        this.emit('intercepts', this.current);
        // The table routes by it now (the listeners are synchronous): the manager may answer the laptop.
        if (snap.version) {
          this.client.AgentApplied({ agent_id: this.id, version: snap.version, problem: this.problem }, { deadline: Date.now() + this.heartbeatMs }, (err) => {
            if (err) log.debug('could not confirm the intercepts', { err: err.details || err.message });
          });
        }
      });
      watch.on('error', (err: grpc.ServiceError) => end(`watch: ${err.details || err.message}`));
      watch.on('end', () => end('the manager ended the intercept watch'));
    });
  }

  private heartbeat(end: (reason: string) => void): void {
    const requests = Object.fromEntries(this.counts);
    const mirrorsDropped = Object.fromEntries(this.drops);
    this.counts = new Map();
    this.drops = new Map();
    this.client.AgentHeartbeat({ agent_id: this.id, requests, mirrors_dropped: mirrorsDropped }, { deadline: Date.now() + this.heartbeatMs }, (err, res) => {
      if (err || !res?.ok) end(`heartbeat: ${err?.details || err?.message || 'refused'}`);
    });
  }

  private unlink(): void {
    const had = this.current.length > 0 || this.id !== '';
    this.id = '';
    this.data?.close();
    this.data = undefined;
    this.counts.clear();
    if (this.current.length > 0) {
      this.current = [];
      this.emit('intercepts', this.current);
    }
    if (had) this.emit('unlinked');
  }
}
