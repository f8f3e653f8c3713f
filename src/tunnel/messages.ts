import type { TunnelMessage, TunnelMessage__Output } from '../gen/rdbg/v1/TunnelMessage';
import type { DialResult__Output } from '../gen/rdbg/v1/DialResult';

export type { TunnelMessage, TunnelMessage__Output };
export type DialCode = DialResult__Output['code'];

/** A bidirectional gRPC stream of tunnel messages, from either end of a call. */
export interface TunnelStream {
  write(msg: TunnelMessage, cb?: (err?: Error | null) => void): boolean;
  end(): void;
  pause(): void;
  resume(): void;
  on(event: 'data', fn: (msg: TunnelMessage__Output) => void): this;
  on(event: 'end' | 'drain' | 'close', fn: () => void): this;
  on(event: 'error', fn: (err: Error & { code?: number; details?: string }) => void): this;
  once(event: 'data', fn: (msg: TunnelMessage__Output) => void): this;
  removeListener(event: string, fn: (...args: never[]) => void): this;
  removeAllListeners(event?: string): this;
  cancel?(): void;
}

/** Map a socket error to the dial code and the message a client will show. */
export function dialCodeForErrno(errno: string | undefined): DialCode {
  switch (errno) {
    case 'ECONNREFUSED':
      return 'REFUSED';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
    case 'ENETDOWN':
      return 'UNREACHABLE';
    case 'ETIMEDOUT':
      return 'TIMEOUT';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
      return 'NAME_ERROR';
    default:
      return 'FAILED';
  }
}

/** Bad messages from a peer end the one flow they belong to with this error. */
export class ProtocolViolation extends Error {
  readonly code = 'RDBG_TUNNEL_PROTOCOL';
}

/** The far end could not open the flow; `code` says why (REFUSED, UNREACHABLE, NAME_ERROR ...). */
export class DialError extends Error {
  constructor(
    readonly code: DialCode,
    message: string,
  ) {
    super(message);
    this.name = 'DialError';
  }
}
