import { existsSync } from 'node:fs';
import { daemonSocketPath } from '../core/paths';
import { LocalClient, type UserDaemonApi } from '../rpc/local-client';
import { atCommandEnd } from './context';

export type UserDaemonClient = LocalClient<UserDaemonApi>;

let shared: { dir: string; client: UserDaemonClient } | undefined;

/**
 * The command's client of the user daemon whose directory is dir (the CLI's
 * runtimeDir): its local API as JSON lines (src/rpc/local-api.ts). One per
 * process, every call of a command shares its connection; it is closed when
 * the command ends.
 */
export function daemonClient(dir: string): UserDaemonClient {
  if (shared?.dir === dir) return shared.client;
  dropDaemonClient();
  const client = new LocalClient<UserDaemonApi>(daemonSocketPath(dir), 'UserDaemon');
  shared = { dir, client };
  return client;
}

/** Closes the shared client (it failed, or its daemon is gone): the next daemonClient() connects afresh. */
export function dropDaemonClient(): void {
  shared?.client.close();
  shared = undefined;
}

atCommandEnd(dropDaemonClient);

/** Calls one method of the user daemon; rejects with an error that has the gRPC status code and details. */
export function callDaemon<M extends keyof UserDaemonApi>(client: UserDaemonClient, method: M, req: UserDaemonApi[M][0], timeoutMs = 5000): Promise<UserDaemonApi[M][1]> {
  return client.call(method, req, timeoutMs);
}

export function daemonSocketExists(dir: string): boolean {
  return existsSync(daemonSocketPath(dir));
}
