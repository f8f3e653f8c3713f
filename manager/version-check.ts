import { PROTOCOL, VERSION } from '../src/core/version';

/** Why a client or an agent cannot talk to this manager, with what to do about it; undefined when it can. */
export function versionMismatch(theirs: { version: string; protocol: number }, who: 'client' | 'agent'): string | undefined {
  if (theirs.protocol === PROTOCOL) return undefined;
  const fix =
    who === 'client'
      ? theirs.protocol > PROTOCOL
        ? `upgrade the traffic manager to ${theirs.version} ("rdbg manager upgrade"), or use an rdbg client of version ${VERSION}`
        : `install rdbg ${VERSION} on this laptop, or run the manager of version ${theirs.version}`
      : `re-inject the agent ("rdbg uninstall WORKLOAD" then intercept again) so that it matches the manager ${VERSION}`;
  return `rdbg ${who} ${theirs.version} speaks protocol ${theirs.protocol}, but the traffic manager ${VERSION} speaks protocol ${PROTOCOL}: ${fix}`;
}
