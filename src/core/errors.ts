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
