// The local API's unary methods over gRPC, for a daemon that serves only
// gRPC on its socket (one started by an rdbg from before the local API, still
// running after an upgrade): loaded only then (src/rpc/local-client.ts).
import * as grpc from '@grpc/grpc-js';
import { daemonPackage } from './services';

type Unary = (req: unknown, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: unknown) => void) => unknown;

/** One unary call; rejects with the ServiceError (its code and details). */
export function grpcCall(path: string, service: 'UserDaemon' | 'RootDaemon', method: string, params: unknown, timeoutMs: number): Promise<unknown> {
  const Client = daemonPackage()[service] as unknown as typeof grpc.Client;
  const client = new Client(`unix://${path}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<string, Unary>;
  return new Promise<unknown>((resolve, reject) => {
    client[method](params, { deadline: Date.now() + timeoutMs }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res ?? {});
    });
  });
}
