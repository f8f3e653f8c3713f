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
