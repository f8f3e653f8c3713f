import { logger } from '../../src/core/log';
import { invalidEntry, type Journal, type JournalEntry } from './journal';
import type { Platform } from './platform/platform';

const log = logger('rootd.cleanup');

/** Undo one journalled change. Failures are logged: the rest must still be undone. */
export type Undo = (entry: JournalEntry) => void;

/**
 * Replay the journal backwards: what a crashed root daemon left behind, or
 * what this one made, is undone and its entry removed.
 */
export function undoAll(journal: Journal, platform: Platform, extra: Record<string, Undo> = {}): string[] {
  const done: string[] = [];
  for (const e of journal.entries().reverse()) {
    const invalid = invalidEntry(e);
    if (invalid) {
      // Not something rdbg wrote: never acted on, and dropped so it cannot linger.
      log.warn('ignoring an invalid journal entry', { id: String(e?.id), why: invalid });
      if (typeof e?.id === 'string') journal.remove(e.id);
      continue;
    }
    try {
      if (extra[e.kind]) {
        extra[e.kind](e);
      } else if (e.kind === 'route') {
        if (platform.routes().some((r) => r.dst === e.data.cidr && (!e.data.dev || r.dev === e.data.dev))) {
          platform.deleteRoute(e.data.cidr, e.data.dev || undefined);
        }
      } else if (e.kind === 'tun') {
        if (platform.linkExists(e.data.name)) platform.deleteLink(e.data.name);
      } else {
        log.warn('no way to undo this journal entry', { entry: e });
        continue;
      }
      done.push(e.id);
      journal.remove(e.id);
    } catch (err) {
      // Kept in the journal: the next start or `rdbg quit` tries again.
      log.warn('could not undo a change', { entry: e.id, err: (err as Error).message });
    }
  }
  return done;
}
