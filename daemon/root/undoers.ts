import * as resolvConf from './dns/resolv-conf';
import * as resolved from './dns/systemd-resolved';
import type { JournalEntry } from './journal';
import { removeCapture } from './platform/netfilter';

/**
 * How each kind of journal entry that is not a plain route or link is
 * undone. Its own module: the watchdog undoes a session without loading the
 * engine (gRPC, the data plane, DNS), which would make it start later and
 * hold more memory for the whole session.
 */
export function journalUndoers(resolvConfPath: string): Record<string, (e: JournalEntry) => void> {
  return {
    'resolv-conf': (e) => resolvConf.restoreEntry(e, resolvConfPath),
    'resolved-link': (e) => resolved.undoEntry(e),
    netfilter: (e) => {
      removeCapture(4, e.data.dev);
      removeCapture(6, e.data.dev);
    },
  };
}
