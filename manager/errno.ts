/** A socket error as a client reads it: what happened, and the errno. */
export function describeErrno(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'connection refused (ECONNREFUSED)';
    case 'EHOSTUNREACH':
      return 'no route to host (EHOSTUNREACH)';
    case 'ENETUNREACH':
      return 'network is unreachable (ENETUNREACH)';
    case 'ETIMEDOUT':
      return 'connection timed out (ETIMEDOUT)';
    default:
      return err.code ? `${err.message} (${err.code})` : err.message;
  }
}
