import * as grpc from '@grpc/grpc-js';
import { logger } from '../../src/core/log';
import type { InterceptInfo__Output } from '../../src/gen/rdbg/v1/InterceptInfo';
import type { InterceptSpec } from '../../src/gen/rdbg/v1/InterceptSpec';
import type { ManagerLink } from './manager-link';

const log = logger('userd.intercepts');
const RESTORE_RETRY_MS = 2_000;
const RESTORE_TRIES = 30;
const AGENT_POLL_MS = 100;

/** Kubernetes mode: proves (or drops) this session's right to intercept a workload before the manager is asked. */
export type ClaimHook = (spec: InterceptSpec, sessionId: string, on: boolean) => Promise<void>;

/**
 * The intercepts this laptop holds. The manager forgets them when their
 * session ends (its lease ran out, the manager restarted); on every new
 * session the daemon asks for them again, one restore at a time.
 */
export class LocalIntercepts {
  /** By the id the manager gave, on the current session; a restored intercept gets a new id. */
  private readonly held = new Map<string, InterceptSpec>();
  /** Intercepts to take again on the current session, not yet taken. */
  private pending: { spec: InterceptSpec; tries: number; lastError: string }[] = [];
  /**
   * The workloads this laptop has claimed, by session: a claim stays for the
   * session (a developer switching rules on one workload writes it once) and
   * is taken off at quit, or when a new session replaces the one it was for.
   */
  private readonly claims = new Map<string, { workload: string; namespace: string; session: string }>();
  private retry?: NodeJS.Timeout;
  private restoring?: Promise<void>;
  private restoreAgain = false;

  constructor(
    private readonly link: ManagerLink,
    private readonly claim?: ClaimHook,
  ) {
    link.on('session', (_id: string, resumed: boolean) => this.onSession(resumed));
  }

  /** What `rdbg status` counts: the same intercepts that `rdbg list` shows. */
  get count(): number {
    return this.held.size + this.pending.length;
  }

  /** The intercepts waiting to be taken again, as `rdbg list` shows them beside the manager's. */
  pendingInfos(): InterceptInfo__Output[] {
    return this.pending.map((p, i) => ({
      id: `pending-${i + 1}`,
      spec: p.spec as InterceptInfo__Output['spec'],
      owner: this.link.user,
      session_id: this.link.sessionId,
      state: 'RESTORING',
      requests: 0,
      env: {},
      agents: 0,
      mirrors_dropped: 0,
      message: p.lastError ? `being taken again after a reconnect: ${p.lastError}` : 'being taken again after a reconnect',
      files_pod: '',
    }));
  }

  async create(spec: InterceptSpec): Promise<InterceptInfo__Output> {
    const session = this.link.sessionId;
    if (this.claim) {
      try {
        const t0 = performance.now();
        await this.claim(spec, session, true);
        log.debug('claim in place', { workload: spec.workload, ms: Math.round(performance.now() - t0) });
        if (spec.workload) this.claims.set(`${session}\n${spec.namespace}\n${spec.workload}`, { workload: spec.workload, namespace: spec.namespace ?? '', session });
      } catch (err) {
        const e = err as Error & { code?: string; hint?: string };
        throw Object.assign(new Error(e.message), { code: grpc.status.PERMISSION_DENIED, details: `${e.message}${e.hint ? ` (${e.hint})` : ''}` });
      }
    }
    return new Promise((resolve, reject) =>
      this.link.client.createIntercept({ session_id: session, spec }, { deadline: Date.now() + 10_000 }, (err, res) => {
        if (err || !res) return reject(err);
        // A new session arrived meanwhile: this intercept went with the old one.
        if (this.link.sessionId !== session) this.pending.push({ spec, tries: 0, lastError: '' });
        else this.held.set(res.id, res.spec!);
        this.kickLater();
        resolve(res);
      }),
    );
  }

  /**
   * Until `want` agents serve intercept `id` (agents register a moment after
   * their pod is ready), asking the manager every 100 ms for up to `timeoutMs`;
   * the agents that serve it then.
   */
  async waitForAgents(id: string, want: number, timeoutMs = 60_000): Promise<number> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const list = await new Promise<InterceptInfo__Output[]>((resolve, reject) =>
        this.link.client.listIntercepts({ session_id: this.link.sessionId, all: false }, { deadline: Date.now() + 5000 }, (err, res) =>
          err ? reject(err) : resolve(res?.intercepts ?? []),
        ),
      );
      const agents = list.find((i) => i.id === id)?.agents ?? 0;
      if (agents >= want || Date.now() >= until) return agents;
      await new Promise((r) => setTimeout(r, AGENT_POLL_MS));
    }
  }

  /** Remove one intercept by id, or every intercept of a workload that this laptop holds. The workload's claim stays. */
  remove(workload: string, namespace: string, id = ''): Promise<void> {
    const ns = namespace || this.link.opts.namespace;
    const byId = id ? this.held.get(id) : undefined;
    const released = { workload: byId?.workload || workload, namespace: byId?.namespace || ns };
    for (const [k, spec] of [...this.held]) {
      if (id ? k === id : spec.workload === workload && spec.namespace === ns) this.held.delete(k);
    }
    this.pending = this.pending.filter((p) => !(p.spec.workload === released.workload && p.spec.namespace === released.namespace));
    return new Promise<void>((resolve, reject) =>
      this.link.client.removeIntercept(
        { session_id: this.link.sessionId, workload, namespace: ns, id },
        { deadline: Date.now() + 5000 },
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }

  /** Every intercept ends and every claim is taken off (quit). */
  async removeAll(): Promise<void> {
    clearTimeout(this.retry);
    this.pending = [];
    for (const [id, spec] of [...this.held]) {
      await this.remove(spec.workload!, spec.namespace!, id).catch(() => undefined);
    }
    await this.releaseClaims(() => true);
  }

  /** Takes off the claims that `which` picks, in parallel; a failure is logged (a stale claim is harmless). */
  private async releaseClaims(which: (session: string) => boolean): Promise<void> {
    const claim = this.claim;
    if (!claim) return;
    const todo = [...this.claims].filter(([, c]) => which(c.session));
    for (const [k] of todo) this.claims.delete(k);
    await Promise.all(
      todo.map(([, c]) =>
        claim({ workload: c.workload, namespace: c.namespace }, c.session, false).catch((err) =>
          log.warn('could not release the claim', { workload: c.workload, err: (err as Error).message }),
        ),
      ),
    );
  }

  /** A resumed session kept its intercepts; a new one has none of them. */
  private onSession(resumed: boolean): void {
    if (!resumed) {
      const current = this.link.sessionId;
      void this.releaseClaims((session) => session !== current);
      for (const spec of this.held.values()) this.pending.push({ spec, tries: 0, lastError: '' });
      this.held.clear();
    }
    this.kick();
  }

  /** Starts a restore, or asks the running one to run again when it ends. */
  private kick(): void {
    clearTimeout(this.retry);
    if (this.restoring) {
      this.restoreAgain = true;
      return;
    }
    this.restoring = this.restore().finally(() => {
      this.restoring = undefined;
      if (this.restoreAgain) {
        this.restoreAgain = false;
        this.kick();
      }
    });
  }

  private kickLater(): void {
    if (this.pending.length === 0 || this.restoring) return;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.kick(), RESTORE_RETRY_MS);
    this.retry.unref();
  }

  /**
   * Asks the manager for every pending intercept on the current session. One
   * that fails (the manager is still starting, a port-forward is being
   * re-established, the apiserver hiccups) is retried every 2 s for a minute
   * before it is given up with an error in the log: a reconnect must not
   * silently lose an intercept.
   */
  private async restore(): Promise<void> {
    const todo = this.pending;
    this.pending = [];
    for (const p of todo) {
      if (this.link.state !== 'CONNECTED') {
        this.pending.push(p);
        continue;
      }
      try {
        await this.create(p.spec);
        log.info('intercept restored after reconnect', { workload: p.spec.workload, attempts: p.tries + 1 });
      } catch (err) {
        const e = err as grpc.ServiceError;
        const why = e.details ?? e.message;
        if (p.tries + 1 >= RESTORE_TRIES) {
          log.error('intercept given up after reconnect', { workload: p.spec.workload, err: why });
          continue;
        }
        log.warn('could not restore intercept yet; retrying', { workload: p.spec.workload, err: why });
        this.pending.push({ spec: p.spec, tries: p.tries + 1, lastError: why });
      }
    }
    if (this.pending.length > 0) {
      clearTimeout(this.retry);
      this.retry = setTimeout(() => this.kick(), RESTORE_RETRY_MS);
      this.retry.unref();
    }
  }
}
