import * as grpc from '@grpc/grpc-js';
import { logger } from '../../src/core/log';
import type { InterceptInfo__Output } from '../../src/gen/rdbg/v1/InterceptInfo';
import type { InterceptSpec } from '../../src/gen/rdbg/v1/InterceptSpec';
import type { ManagerLink } from './manager-link';

const log = logger('userd.intercepts');

/** Kubernetes mode: proves (or drops) this session's right to intercept a workload before the manager is asked. */
export type ClaimHook = (spec: InterceptSpec, sessionId: string, on: boolean) => Promise<void>;

/**
 * The intercepts this laptop holds. The manager forgets them when it
 * restarts; the daemon asks for them again on every new session.
 */
export class LocalIntercepts {
  /** By the id the manager gave; a restored intercept gets a new id. */
  private readonly held = new Map<string, InterceptSpec>();

  constructor(
    private readonly link: ManagerLink,
    private readonly claim?: ClaimHook,
  ) {
    link.on('session', () => void this.restore());
  }

  get count(): number {
    return this.held.size;
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
    for (const [id, spec] of [...this.held]) {
      await this.remove(spec.workload!, spec.namespace!, id).catch(() => undefined);
    }
  }

  private async restore(): Promise<void> {
    const specs = [...this.held.values()];
    this.held.clear();
    for (const spec of specs) {
      try {
        await this.create(spec);
        log.info('intercept restored after reconnect', { workload: spec.workload });
      } catch (err) {
        log.warn('could not restore intercept', { workload: spec.workload, err: (err as grpc.ServiceError).details });
      }
    }
  }
}
