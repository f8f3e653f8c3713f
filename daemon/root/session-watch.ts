import * as grpc from '@grpc/grpc-js';
import { EventEmitter } from 'node:events';
import { logger } from '../../src/core/log';
import { daemonPackage, type UserDaemonClient } from '../../src/rpc/services';
import type { SessionGrant__Output } from '../../src/gen/rdbg/v1/SessionGrant';
import type { DNSResponse__Output } from '../../src/gen/rdbg/v1/DNSResponse';

const log = logger('rootd.session');

/**
 * The root daemon's only link to the user's session: it watches the user
 * daemon's grants (session id, data plane address, cluster info) and asks
 * it for cluster DNS lookups. It holds no Kubernetes credentials.
 */
export class SessionWatch extends EventEmitter {
  readonly client: UserDaemonClient;
  grant?: SessionGrant__Output;
  private call?: grpc.ClientReadableStream<SessionGrant__Output>;
  private closed = false;

  constructor(socketPath: string) {
    super();
    const UserDaemon = daemonPackage().UserDaemon;
    this.client = new UserDaemon(`unix://${socketPath}`, grpc.credentials.createInsecure()) as unknown as UserDaemonClient;
  }

  /** Resolves with the first grant of a connected session. */
  start(timeoutMs: number): Promise<SessionGrant__Output> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the user daemon did not grant a session in time')), timeoutMs);
      const onGrant = (g: SessionGrant__Output): void => {
        if (g.state === 'CONNECTED' && g.session_id) {
          clearTimeout(timer);
          this.removeListener('grant', onGrant);
          resolve(g);
        }
      };
      this.on('grant', onGrant);
      this.watch();
    });
  }

  private watch(): void {
    if (this.closed) return;
    const call = this.client.watchSession({});
    this.call = call;
    call.on('data', (g: SessionGrant__Output) => {
      this.grant = g;
      this.emit('grant', g);
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (this.closed || err.code === grpc.status.CANCELLED) return;
      log.warn('lost the user daemon', { err: err.details });
      this.emit('userd-lost');
      setTimeout(() => this.watch(), 1000);
    });
  }

  lookup(name: string, qtype: number): Promise<DNSResponse__Output> {
    return new Promise((resolve, reject) =>
      this.client.LookupDNS({ session_id: '', name, qtype }, { deadline: Date.now() + 4000 }, (err, res) => (err ? reject(err) : resolve(res!))),
    );
  }

  close(): void {
    this.closed = true;
    this.call?.cancel();
    this.client.close();
  }
}
