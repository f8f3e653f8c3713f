import * as grpc from '@grpc/grpc-js';
import { logger } from '../../src/core/log';
import type { InterceptInfo__Output } from '../../src/gen/rdbg/v1/InterceptInfo';
import type { InterceptSpec } from '../../src/gen/rdbg/v1/InterceptSpec';
import type { ManagerLink } from './manager-link';

const log = logger('userd.intercepts');
const RESTORE_RETRY_MS = 2_000;
const RESTORE_TRIES = 30;

/** Kubernetes mode: proves (or drops) this session's right to intercept a workload before the manager is asked. */
export type ClaimHook = (spec: InterceptSpec, sessionId: string, on: boolean) => Promise<void>;

/**
 * The intercepts this laptop holds. The manager forgets them when it
 * restarts; the daemon asks for them again on every new session.
 */
export class LocalIntercepts {
  /** By the id the manager gave; a restored intercept gets a new id. */
  private readonly held = new Map<string, InterceptSpec>();
  /** Intercepts to take again after a reconnect that did not work yet. */
  private pending: { spec: InterceptSpec; tries: number }[] = [];
  private retry?: NodeJS.Timeout;

  constructor(
    private readonly link: ManagerLink,
    private readonly claim?: ClaimHook,
  ) {
    link.on('session', () => void this.restore());
  }

  get count(): number {
    return this.held.size + this.pending.length;
  }

  async create(spec: InterceptSpec): Promise<InterceptInfo__Output> {
    if (this.claim) {
      try {
        await this.claim(spec, this.link.sessionId, true);
      } catch (err) {
        const e = err as Error & { code?: string; hint?: string };
        throw Object.assign(new Error(e.message), { code: grpc.status.PERMISSION_DENIED, details: `${e.message}${e.hint ? ` (${e.hint})` : ''}` });
      }
    }
    return new Promise((resolve, reject) =>
      this.link.client.createIntercept({ session_id: this.link.sessionId, spec }, { deadline: Date.now() + 10_000 }, (err, res) => {
        if (err || !res) return reject(err);
        this.held.set(res.id, res.spec!);
        resolve(res);
      }),
    );
  }

  /** Remove one intercept by id, or every intercept of a workload that this laptop holds. */
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
    ).finally(() => {
      const still = [...this.held.values()].some((s) => s.workload === released.workload && s.namespace === released.namespace);
      if (this.claim && !still && released.workload) {
        this.claim(released, this.link.sessionId, false).catch((err) => log.warn('could not release the claim', { workload: released.workload, err: (err as Error).message }));
      }
    });
  }

  async removeAll(): Promise<void> {
    clearTimeout(this.retry);
    this.pending = [];
    for (const [id, spec] of [...this.held]) {
      await this.remove(spec.workload!, spec.namespace!, id).catch(() => undefined);
    }
  }

  /**
   * Asks the (new) manager for every intercept again. One that fails (the
   * manager is still starting, a port-forward is being re-established, the
   * apiserver hiccups) is retried every 2 s for a minute before it is given
   * up with a warning: a reconnect must not silently lose an intercept.
   */
  private async restore(): Promise<void> {
    clearTimeout(this.retry);
    const specs = [...[...this.held.values()].map((spec) => ({ spec, tries: 0 })), ...this.pending];
    this.held.clear();
    this.pending = [];
    for (const p of specs) {
      if (this.link.state !== 'CONNECTED') {
        this.pending.push(p);
        continue;
      }
      try {
        await this.create(p.spec);
        log.info('intercept restored after reconnect', { workload: p.spec.workload, attempts: p.tries + 1 });
      } catch (err) {
        const e = err as grpc.ServiceError;
        if (p.tries + 1 >= RESTORE_TRIES) {
          log.error('intercept given up after reconnect', { workload: p.spec.workload, err: e.details ?? e.message });
          continue;
        }
        log.warn('could not restore intercept yet; retrying', { workload: p.spec.workload, err: e.details ?? e.message });
        this.pending.push({ spec: p.spec, tries: p.tries + 1 });
      }
    }
    if (this.pending.length > 0) {
      this.retry = setTimeout(() => void this.restore(), RESTORE_RETRY_MS);
      this.retry.unref();
    }
  }
}
