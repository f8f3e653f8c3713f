import * as grpc from '@grpc/grpc-js';
import { DialPolicy } from '../../manager/dial-policy';
import { ManagerServer } from '../../manager/server';
import { PROTOCOL, VERSION } from '../../src/core/version';
import { CHANNEL_OPTIONS, managerPackage, type ManagerClient } from '../../src/rpc/services';

export interface LoopbackManager {
  mgr: ManagerServer;
  /** a gRPC client of its control plane */
  client: ManagerClient;
  /** the session that client arrived with */
  session: string;
  stop(): Promise<void>;
}

/** A standalone manager on loopback that dials anything, a client of it and one session: the manager's unit tests' setup. */
export async function startLoopbackManager(): Promise<LoopbackManager> {
  const mgr = new ManagerServer({ listen: '127.0.0.1:0', serviceSubnets: [], podSubnets: [], clusterDomain: 'cluster.local', namespace: 'rdbg', leaseSeconds: 15, dialPolicy: DialPolicy.permissive() });
  const port = await mgr.start();
  const client = new (managerPackage().Manager)(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as ManagerClient;
  const session = await new Promise<string>((resolve, reject) =>
    client.arrive({ client_version: VERSION, protocol: PROTOCOL, user: 'test' }, (err, res) => (err ? reject(err) : resolve(res!.session_id))),
  );
  return {
    mgr,
    client,
    session,
    stop: async () => {
      client.close();
      await mgr.stop();
    },
  };
}
