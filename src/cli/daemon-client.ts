import * as grpc from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import { daemonSocketPath } from '../core/paths';
import { daemonPackage, type UserDaemonClient } from '../rpc/services';
import { atCommandEnd } from './context';

let shared: { dir: string; client: UserDaemonClient } | undefined;

/**
 * The command's client of the user daemon whose directory is dir (the CLI's
 * runtimeDir). One per process: every call of a command shares its
 * connection, as a new channel costs tens of milliseconds to start. It is
 * closed when the command ends.
 */
export function daemonClient(dir: string): UserDaemonClient {
  if (shared?.dir === dir) return shared.client;
  dropDaemonClient();
  const UserDaemon = daemonPackage().UserDaemon;
  const client = new UserDaemon(`unix://${daemonSocketPath(dir)}`, grpc.credentials.createInsecure()) as unknown as UserDaemonClient;
  shared = { dir, client };
  return client;
}

/** Closes the shared client (it failed, or its daemon is gone): the next daemonClient() connects afresh, with no backoff. */
export function dropDaemonClient(): void {
  shared?.client.close();
  shared = undefined;
}

atCommandEnd(dropDaemonClient);

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
