/** The result of a flow's dial, as the manager answers it. */
export type DialCode = 'OK' | 'REFUSED' | 'UNREACHABLE' | 'TIMEOUT' | 'NAME_ERROR' | 'DENIED' | 'FAILED';

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
