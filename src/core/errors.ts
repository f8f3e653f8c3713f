/** Every failure that reaches a user carries a stable code and, where one exists, a hint. */
export class RdbgError extends Error {
  readonly code: string;
  readonly hint?: string;

  constructor(code: string, message: string, hint?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RdbgError';
    this.code = code;
    this.hint = hint;
  }
}

export const Codes = {
  VERSION_MISMATCH: 'RDBG_VERSION_MISMATCH',
  MANAGER_UNREACHABLE: 'RDBG_MANAGER_UNREACHABLE',
  NOT_CONNECTED: 'RDBG_NOT_CONNECTED',
  ALREADY_CONNECTED: 'RDBG_ALREADY_CONNECTED',
  DAEMON_START: 'RDBG_DAEMON_START',
  BAD_ARGUMENT: 'RDBG_BAD_ARGUMENT',
  INTERCEPT_CONFLICT: 'RDBG_INTERCEPT_CONFLICT',
  INTERCEPT_NOT_FOUND: 'RDBG_INTERCEPT_NOT_FOUND',
  NO_SESSION: 'RDBG_NO_SESSION',
  PERMISSION: 'RDBG_PERMISSION',
  SUBNET_CONFLICT: 'RDBG_SUBNET_CONFLICT',
  /** The TUN device cannot be had: in use, no privilege, no driver. */
  TUN_DEVICE: 'RDBG_TUN_DEVICE',
  // Kubernetes: kubeconfig, apiserver, port-forward.
  KUBECONFIG: 'RDBG_KUBECONFIG',
  APISERVER_UNREACHABLE: 'RDBG_APISERVER_UNREACHABLE',
  POD_NOT_FOUND: 'RDBG_POD_NOT_FOUND',
  NO_READY_POD: 'RDBG_NO_READY_POD',
  PORT_FORWARD: 'RDBG_PORT_FORWARD',
  /** The apiserver refuses the workload's pods with the agent (Pod Security, a policy webhook). */
  ADMISSION: 'RDBG_ADMISSION_REJECTED',
  /** A request the daemon or the manager refused or could not carry out, with no code of its own. */
  FAILED: 'RDBG_FAILED',
  /** A bug: a failure with no code of its own. */
  INTERNAL: 'RDBG_INTERNAL',
} as const;

/**
 * The process's exit code for an error that ends a command (docs/cli.md):
 * 2 for what the user typed (a usage error), 1 for every other failure.
 */
export function exitCodeOf(err: unknown): number {
  return err instanceof RdbgError && err.code === Codes.BAD_ARGUMENT ? 2 : 1;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

const ERRNO_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ETIMEDOUT: 'timed out',
  EHOSTUNREACH: 'no route to host',
  ENETUNREACH: 'network unreachable',
  ENOTFOUND: 'the name does not resolve',
  EAI_AGAIN: 'the name does not resolve (resolver unavailable)',
  EACCES: 'permission denied',
  ENOENT: 'no such socket',
};

/**
 * Why a gRPC call failed, in a phrase a user reads: grpc-js's "No connection
 * established. Last error: Error: connect ECONNREFUSED 10.0.0.1:8081.
 * Resolution note: " is "connection refused"; a reason of the other side's
 * own (a status's details) stays as it is.
 */
export function callFailure(err: { details?: string; message?: string; code?: unknown }): string {
  const text = err.details || err.message || 'failed';
  const errno = /\b(E[A-Z_]{3,})\b/.exec(text)?.[1];
  if (errno && ERRNO_REASONS[errno] && /No connection established|connect |getaddrinfo|read |write /.test(text)) return ERRNO_REASONS[errno];
  if (/^Deadline exceeded/i.test(text)) return 'timed out';
  const dns = /DNS resolution failed for ([^:\s]+)/.exec(text);
  if (dns) return `the name ${dns[1]} does not resolve`;
  if (/^Connection dropped/.test(text)) return 'the connection dropped';
  return text.replace(/\s*Resolution note:.*$/s, '').replace(/^No connection established\. Last error: (Error: )?/, '').replace(/\.$/, '');
}

/** A listen that failed (a port in use, an address not on this host), as one sentence and a hint. */
export function listenFailure(flag: string, address: string, err: unknown, note = ''): RdbgError {
  const what = `${flag} ${address}${note ? ` (${note})` : ''}`;
  const text = errorMessage(err);
  const errno = (err as { code?: unknown }).code;
  const has = (code: string): boolean => errno === code || text.includes(code);
  const port = /:(\d+)$/.exec(address)?.[1] ?? '';
  if (has('EADDRINUSE')) {
    return new RdbgError(Codes.FAILED, `${what}: the port is in use`, `stop what listens there (ss -ltnp 'sport = :${port}'), or give ${flag} another port`);
  }
  if (has('EADDRNOTAVAIL')) {
    return new RdbgError(Codes.FAILED, `${what}: that is not an address of this host`, `give ${flag} one of this host's addresses (ip -brief address), or 0.0.0.0:${port}`);
  }
  if (has('EACCES')) {
    return new RdbgError(Codes.FAILED, `${what}: permission denied`, `ports below 1024 need privileges: give ${flag} a higher port`);
  }
  return new RdbgError(Codes.FAILED, `${what}: cannot listen: ${text}`);
}
