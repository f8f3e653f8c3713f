import { errorMessage, RdbgError } from '../src/core/errors';
import { logger } from '../src/core/log';
import type { DialCode } from '../src/tunnel/messages';

/** Stable codes of the agent's own failures (the shared ones live in src/core/errors.ts). */
export const AgentCodes = {
  DIVERT_FAILED: 'RDBG_DIVERT_FAILED',
  MANAGER_LINK: 'RDBG_AGENT_MANAGER_LINK',
} as const;

/** A diverted flow could not be opened; the message is the one the caller sees in the 502. */
export class DivertError extends RdbgError {
  constructor(
    message: string,
    readonly dial?: DialCode,
  ) {
    super(AgentCodes.DIVERT_FAILED, message);
    this.name = 'DivertError';
  }
}

const log = logger('agent');

/** For promise chains whose handlers must never become an unhandled rejection (it would end the agent). */
export function logBug(what: string): (err: unknown) => void {
  return (err) => log.error(`bug in ${what}`, { err: errorMessage(err), stack: (err as Error)?.stack });
}

/**
 * `fn` as an event handler whose failure (a bug) costs one connection only, never the agent:
 * the error is logged with `what`, and `drop` ends that connection.
 */
export function guard(what: string, drop: () => void) {
  return <A extends unknown[]>(fn: (...a: A) => void) =>
    (...a: A): void => {
      try {
        fn(...a);
      } catch (err) {
        log.error(`${what} failed`, { err: errorMessage(err), stack: (err as Error)?.stack });
        drop();
      }
    };
}
