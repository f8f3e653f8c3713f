import { RdbgError } from '../../../src/core/errors';

/** Stable codes for the laptop's DNS: callers and tests match on these. */
export const DnsCodes = {
  LISTEN: 'RDBG_DNS_LISTEN',
  UPSTREAM_TIMEOUT: 'RDBG_DNS_UPSTREAM_TIMEOUT',
  UPSTREAM_FAILED: 'RDBG_DNS_UPSTREAM_FAILED',
  BAD_UPSTREAM: 'RDBG_DNS_BAD_UPSTREAM',
  CLUSTER_TIMEOUT: 'RDBG_DNS_CLUSTER_TIMEOUT',
  RESOLV_CONF: 'RDBG_DNS_RESOLV_CONF',
  RESOLVED: 'RDBG_DNS_RESOLVED',
} as const;

export function dnsError(code: string, message: string, hint?: string, cause?: unknown): RdbgError {
  return new RdbgError(code, message, hint, cause === undefined ? undefined : { cause });
}
