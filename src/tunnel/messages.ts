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

const DIAL_CODES = new Set<string>(['OK', 'REFUSED', 'UNREACHABLE', 'TIMEOUT', 'NAME_ERROR', 'DENIED', 'FAILED']);

/** A dial code read off the wire: anything unknown is FAILED. */
export function dialCodeFrom(v: unknown): DialCode {
  const s = String(v ?? 'FAILED');
  return (DIAL_CODES.has(s) ? s : 'FAILED') as DialCode;
}

/** Messages travel in header values and reply lines, which take visible ASCII only: they are percent-encoded. */
export function encodeMessage(m: string): string {
  return encodeURIComponent(m.slice(0, 1000));
}

export function decodeMessage(v: unknown): string {
  try {
    return decodeURIComponent(String(v ?? ''));
  } catch {
    return String(v ?? '');
  }
}
