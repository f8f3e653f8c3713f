import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Every change the root daemon makes to the host (a route, resolv.conf, a
 * systemd-resolved link setting, the TUN device) is written here, and synced
 * to disk, BEFORE it is made; an entry is removed once the change is undone.
 * After a crash the next start (or `rdbg quit`) replays the journal backwards.
 */
export interface JournalEntry {
  id: string; // unique per change, e.g. "route:198.19.128.0/20"
  kind: 'tun' | 'route' | 'resolv-conf' | 'resolved-link' | 'ip-rule';
  data: Record<string, string>;
}

export class Journal {
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  }

  entries(): JournalEntry[] {
    try {
      const parsed = JSON.parse(readFileSync(this.path, 'utf8')) as { entries?: JournalEntry[] };
      return Array.isArray(parsed.entries) ? parsed.entries : [];
    } catch {
      return [];
    }
  }

  private write(entries: JournalEntry[]): void {
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify({ entries }, null, 1));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }

  /** Write the intent down; call before making the change. */
  record(entry: JournalEntry): void {
    this.write([...this.entries().filter((e) => e.id !== entry.id), entry]);
  }

  /** The change has been undone. */
  remove(id: string): void {
    this.write(this.entries().filter((e) => e.id !== id));
  }
}
