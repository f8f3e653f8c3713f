import * as grpc from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import { daemonSocketPath } from '../core/paths';
import { daemonPackage, type UserDaemonClient } from '../rpc/services';

/** A client of the user daemon whose directory is dir (the CLI's runtimeDir). */
export function daemonClient(dir: string): UserDaemonClient {
  const UserDaemon = daemonPackage().UserDaemon;
  return new UserDaemon(`unix://${daemonSocketPath(dir)}`, grpc.credentials.createInsecure()) as unknown as UserDaemonClient;
}

/** Calls one unary method of the user daemon; rejects with the gRPC error. */
export function callDaemon<Req, Res>(
  client: UserDaemonClient,
  method: (req: Req, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown,
  req: Req,
  timeoutMs = 5000,
): Promise<Res> {
  return new Promise((resolve, reject) =>
    method.call(client, req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as Res))),
  );
}

export function daemonSocketExists(dir: string): boolean {
  return existsSync(daemonSocketPath(dir));
}
