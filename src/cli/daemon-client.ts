import * as grpc from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import { daemonSocketPath } from '../core/paths';
import { daemonPackage, type UserDaemonClient } from '../rpc/services';
import { atCommandEnd } from './context';

const shared = new Map<string, UserDaemonClient>();

/**
 * The command's client of the user daemon whose directory is dir (the CLI's
 * runtimeDir). One per process: every call of a command shares its
 * connection, as a new channel costs tens of milliseconds to start. It is
 * closed when the command ends (atCommandEnd).
 */
export function daemonClient(dir: string): UserDaemonClient {
  let client = shared.get(dir);
  if (!client) {
    const UserDaemon = daemonPackage().UserDaemon;
    client = new UserDaemon(`unix://${daemonSocketPath(dir)}`, grpc.credentials.createInsecure()) as unknown as UserDaemonClient;
    if (shared.size === 0) atCommandEnd(closeDaemonClients);
    shared.set(dir, client);
  }
  return client;
}

/** Closes the client of the daemon in dir (it failed, or that daemon is gone): the next daemonClient() connects afresh, with no backoff. */
export function dropDaemonClient(dir: string): void {
  shared.get(dir)?.close();
  shared.delete(dir);
}

export function closeDaemonClients(): void {
  for (const c of shared.values()) c.close();
  shared.clear();
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
