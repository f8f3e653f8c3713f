// The CLI's client of a daemon's local API (src/rpc/local-api.ts): its unary
// methods as JSON lines over the daemon's unix socket. It loads nothing but
// node:net, so a CLI command starts without gRPC.
import * as net from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import type { DaemonStatus__Output } from '../gen/rdbg/v1/DaemonStatus';
import type { Empty, Empty__Output } from '../gen/rdbg/v1/Empty';
import type { InterceptInfo__Output } from '../gen/rdbg/v1/InterceptInfo';
import type { InterceptList__Output } from '../gen/rdbg/v1/InterceptList';
import type { InterceptRequest } from '../gen/rdbg/v1/InterceptRequest';
import type { LeaveRequest } from '../gen/rdbg/v1/LeaveRequest';
import type { ListInterceptsRequest } from '../gen/rdbg/v1/ListInterceptsRequest';
import type { RootStatus__Output } from '../gen/rdbg/v1/RootStatus';

/** The user daemon's unary methods (daemon.proto UserDaemon): request, and the response as decoded. */
export interface UserDaemonApi {
  Status: [Empty, DaemonStatus__Output];
  Quit: [Empty, Empty__Output];
  Intercept: [InterceptRequest, InterceptInfo__Output];
  Leave: [LeaveRequest, Empty__Output];
  List: [ListInterceptsRequest, InterceptList__Output];
}

/** The root daemon's (daemon.proto RootDaemon). */
export interface RootDaemonApi {
  Status: [Empty, RootStatus__Output];
  Quit: [Empty, Empty__Output];
}

/** The user daemon's answer to an intercept it leaves to the CLI to prepare (daemon.proto, InterceptRequest.resolve). */
export const PREPARE_IN_CLI = 'PREPARE_IN_CLI';

/** The gRPC status codes the CLI tells apart (grpc's status enum; the numbers are the protocol's, fixed). */
export const Status = {
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;
const { UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL } = Status;

/** Every answer of the local API opens with "{"; an HTTP/2 server's opens with a SETTINGS frame. */
const JSON_FIRST = 0x7b;

/** A failed call, shaped as grpc-js's ServiceError (code, details) so the CLI reads both alike. */
export class LocalCallError extends Error {
  constructor(readonly code: number, readonly details: string) {
    super(`${code}: ${details}`);
  }
}

interface Pending {
  method: string;
  params: unknown;
  timeoutMs: number;
  resolve: (value: unknown) => void;
  reject: (err: LocalCallError) => void;
  timer: NodeJS.Timeout;
}

/** The daemons, by their service's name in daemon.proto. */
export type DaemonService = 'UserDaemon' | 'RootDaemon';

/**
 * One connection to a daemon's socket, opened at the first call; calls may
 * overlap. A call rejects with code UNAVAILABLE when the daemon cannot be
 * reached or goes away before it answers, DEADLINE_EXCEEDED after its
 * timeout.
 */
export class LocalClient<Api extends { [M in keyof Api]: [unknown, unknown] }> {
  private sock?: net.Socket;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffered = '';
  /** The daemon answered in HTTP/2: an rdbg from before the local API, reached over gRPC from then on. */
  private grpcOnly = false;

  constructor(readonly path: string, readonly service: DaemonService) {}

  call<M extends keyof Api & string>(method: M, params: Api[M][0], timeoutMs = 5000): Promise<Api[M][1]> {
    if (this.grpcOnly) return this.overGrpc(method, params, timeoutMs) as Promise<Api[M][1]>;
    const sock = this.connection();
    const id = this.nextId++;
    return new Promise<Api[M][1]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new LocalCallError(DEADLINE_EXCEEDED, `${method}: no answer from the daemon within ${timeoutMs} ms`));
        this.unrefWhenIdle();
      }, timeoutMs);
      this.pending.set(id, { method, params, timeoutMs, resolve: resolve as (v: unknown) => void, reject, timer });
      sock.ref();
      sock.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    });
  }

  private async overGrpc(method: string, params: unknown, timeoutMs: number): Promise<unknown> {
    const { grpcCall } = await import('./local-grpc');
    return grpcCall(this.path, this.service, method, params, timeoutMs).catch((err: { code?: number; details?: string; message?: string }) => {
      throw new LocalCallError(err.code ?? INTERNAL, err.details || err.message || 'unknown error');
    });
  }

  /** The calls sent so far go again over gRPC (the daemon answered them with an HTTP/2 connection error). */
  private toGrpc(): void {
    this.grpcOnly = true;
    const calls = [...this.pending.values()];
    this.pending.clear();
    for (const p of calls) {
      clearTimeout(p.timer);
      this.overGrpc(p.method, p.params, p.timeoutMs).then(p.resolve, p.reject);
    }
    this.close();
  }

  close(): void {
    this.sock?.destroy();
    this.sock = undefined;
  }

  private connection(): net.Socket {
    if (this.sock) return this.sock;
    const sock = net.connect(this.path);
    const decoder = new StringDecoder('utf8');
    this.sock = sock;
    this.buffered = '';
    let first = true;
    sock.on('data', (chunk: Buffer) => {
      if (first && chunk[0] !== JSON_FIRST) return this.toGrpc();
      first = false;
      this.buffered += decoder.write(chunk);
      for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        this.answer(line);
      }
    });
    const gone = (why: string): void => {
      if (this.sock === sock) this.sock = undefined;
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        this.pending.delete(id);
        p.reject(new LocalCallError(UNAVAILABLE, why));
      }
    };
    sock.on('error', (err) => gone(`the daemon at ${this.path} cannot be reached: ${err.message}`));
    sock.on('close', () => gone('the daemon closed the connection before it answered'));
    return sock;
  }

  private answer(line: string): void {
    let msg: { id?: unknown; result?: unknown; error?: { code?: unknown; message?: unknown } };
    try {
      msg = JSON.parse(line) as typeof msg;
    } catch {
      return this.close(); // not our daemon's protocol: every pending call fails as the connection closes
    }
    const p = typeof msg.id === 'number' ? this.pending.get(msg.id) : undefined;
    if (!p) return;
    this.pending.delete(msg.id as number);
    clearTimeout(p.timer);
    if (msg.error) {
      const code = typeof msg.error.code === 'number' ? msg.error.code : INTERNAL;
      p.reject(new LocalCallError(code, String(msg.error.message ?? 'unknown error')));
    } else {
      p.resolve(msg.result ?? {});
    }
    this.unrefWhenIdle();
  }

  /** With no call waiting, the open connection does not keep the process alive. */
  private unrefWhenIdle(): void {
    if (this.pending.size === 0) this.sock?.unref();
  }
}
