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
  private readonly held = new Map<string, InterceptSpec>();

  constructor(private readonly link: ManagerLink) {
    link.on('session', () => void this.restore());
  }

  private key(workload: string, namespace: string): string {
    return `${workload}.${namespace}`;
  }

  get count(): number {
    return this.held.size;
  }

  create(spec: InterceptSpec): Promise<InterceptInfo__Output> {
    return new Promise((resolve, reject) =>
      this.link.client.createIntercept({ session_id: this.link.sessionId, spec }, { deadline: Date.now() + 10_000 }, (err, res) => {
        if (err || !res) return reject(err);
        this.held.set(this.key(res.spec!.workload, res.spec!.namespace), res.spec!);
        resolve(res);
      }),
    );
  }

  remove(workload: string, namespace: string): Promise<void> {
    const ns = namespace || this.link.opts.namespace;
    this.held.delete(this.key(workload, ns));
    return new Promise((resolve, reject) =>
      this.link.client.removeIntercept(
        { session_id: this.link.sessionId, workload, namespace: ns },
        { deadline: Date.now() + 5000 },
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }

  async removeAll(): Promise<void> {
    for (const spec of [...this.held.values()]) {
      await this.remove(spec.workload!, spec.namespace!).catch(() => undefined);
    }
  }

  private async restore(): Promise<void> {
    for (const spec of this.held.values()) {
      try {
        await this.create(spec);
        log.info('intercept restored after reconnect', { workload: spec.workload });
      } catch (err) {
        log.warn('could not restore intercept', { workload: spec.workload, err: (err as grpc.ServiceError).details });
      }
    }
  }
}
