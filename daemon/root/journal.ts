import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Every change the root daemon makes to the host (a route, resolv.conf, a
 * systemd-resolved link setting, the TUN device, its netfilter chains) is
 * written here, and synced to disk, BEFORE it is made; an entry is removed
 * once the change is undone.
 * After a crash the next start (or `rdbg quit`) replays the journal backwards.
 */
export interface JournalEntry {
  id: string; // unique per change, e.g. "route:198.19.128.0/20"
  kind: 'tun' | 'route' | 'resolv-conf' | 'resolved-link' | 'ip-rule' | 'netfilter';
  data: Record<string, string>;
}

/** rdbg's own TUN devices: the only links root creates, deletes or configures. */
export const TUN_NAME = /^rdbg[a-z0-9]{0,11}$/;

/** The only resolver file root rewrites (inside `ip netns exec` it is the namespace's own). */
export const RESOLV_CONF = '/etc/resolv.conf';

const IFNAME = /^[A-Za-z0-9_.:@-]{1,15}$/;
const CIDR = /^[0-9a-fA-F.:]+\/\d{1,3}$/;

/**
 * Why an entry is not one this root daemon could have written, or undefined.
 * Replay acts only on valid entries: routes into rdbg's devices (or a host
 * route pinning the manager's address to the device it used), rdbg's TUN
 * devices, /etc/resolv.conf, systemd-resolved settings of rdbg's devices.
 */
export function invalidEntry(e: unknown): string | undefined {
  if (!e || typeof e !== 'object') return 'not an object';
  const { id, kind, data } = e as Partial<JournalEntry>;
  if (typeof id !== 'string' || !data || typeof data !== 'object') return 'no id or data';
  if (Object.values(data).some((v) => typeof v !== 'string')) return 'data values must be strings';
  switch (kind) {
    case 'tun':
      return TUN_NAME.test(data.name ?? '') ? undefined : `"${data.name}" is not an rdbg TUN device name`;
    case 'route': {
      if (!CIDR.test(data.cidr ?? '')) return `"${data.cidr}" is not a CIDR`;
      if (TUN_NAME.test(data.dev ?? '')) return undefined;
      const bits = Number(data.cidr.split('/')[1]);
      const host = data.cidr.includes(':') ? bits === 128 : bits === 32;
      return host && IFNAME.test(data.dev ?? '') ? undefined : `route ${data.cidr} dev ${data.dev} is neither into an rdbg device nor a pinned host route`;
    }
    case 'resolv-conf':
      return data.path === RESOLV_CONF ? undefined : `resolver file ${data.path} is not ${RESOLV_CONF}`;
    case 'resolved-link':
      return TUN_NAME.test(data.iface ?? '') ? undefined : `"${data.iface}" is not an rdbg TUN device name`;
    case 'netfilter':
      return TUN_NAME.test(data.dev ?? '') ? undefined : `"${data.dev}" is not an rdbg TUN device name`;
    default:
      return `unknown kind "${String(kind)}"`;
  }
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
