import * as grpc from '@grpc/grpc-js';
import { logger } from '../../src/core/log';
import type { InterceptInfo__Output } from '../../src/gen/rdbg/v1/InterceptInfo';
import type { InterceptSpec } from '../../src/gen/rdbg/v1/InterceptSpec';
import type { ManagerLink } from './manager-link';

const log = logger('userd.intercepts');

/**
 * The intercepts this laptop holds. The manager forgets them when it
 * restarts; the daemon asks for them again on every new session.
 */
export class LocalIntercepts {
  /** By the id the manager gave; a restored intercept gets a new id. */
  private readonly held = new Map<string, InterceptSpec>();

  constructor(private readonly link: ManagerLink) {
    link.on('session', () => void this.restore());
  }

  get count(): number {
    return this.held.size;
  }

  create(spec: InterceptSpec): Promise<InterceptInfo__Output> {
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
    for (const [k, spec] of [...this.held]) {
      if (id ? k === id : spec.workload === workload && spec.namespace === ns) this.held.delete(k);
    }
    return new Promise((resolve, reject) =>
      this.link.client.removeIntercept(
        { session_id: this.link.sessionId, workload, namespace: ns, id },
        { deadline: Date.now() + 5000 },
        (err) => (err ? reject(err) : resolve()),
      ),
    );
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
