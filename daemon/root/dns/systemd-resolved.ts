import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { errorMessage } from '../../../src/core/errors';
import { logger } from '../../../src/core/log';
import type { Journal, JournalEntry } from '../journal';
import { DnsCodes, dnsError } from './dns-errors';
import { parseResolvConf } from './resolv-conf';

/**
 * Host DNS where systemd-resolved runs: per-link DNS on rdbg's TUN device with
 * routing-only domains (`~cluster.local ~svc ~NS`), so resolved sends only the
 * cluster's names to rdbg and everything else where it did before.
 * rdbg's resolver is named by its loopback address: resolved then gets a
 * refusal at once when no rdbg process is left, and the link's settings go
 * with the TUN device anyway (test/sandbox/dns-resolved-host, a real resolved).
 */

const log = logger('rootd.dns.resolved');
const STUB = '/run/systemd/resolve/stub-resolv.conf';
/** resolved's own view of the uplink servers (not the 127.0.0.53 stub, which would loop back to us). */
const UPLINK_RESOLV_CONF = '/run/systemd/resolve/resolv.conf';

export type Runner = (argv: string[]) => Promise<void>;

export interface ResolvedLinkConfig {
  iface: string;
  dns: string[]; // rdbg's resolver address(es), `IP` or `IP:PORT`
  clusterDomain: string;
  namespaces: string[];
  extraDomains?: string[]; // include suffixes
  /** The reverse zones of the cluster's subnets (`96.10.in-addr.arpa`): PTR lookups of cluster addresses. */
  reverseZones?: string[];
  /** Search domains (`default.svc.cluster.local ...`): resolved expands single labels (`echo`) with them. */
  search?: string[];
}

/** The resolvectl commands that point one link at rdbg, in order. */
export function applyCommands(c: ResolvedLinkConfig): string[][] {
  const clean = (d: string): string => d.replace(/^[.~]+|\.$/g, '');
  // A plain domain is a search domain and a routing domain; `~` makes it routing-only.
  const search = [...new Set((c.search ?? []).map(clean).filter(Boolean))];
  const routing = [...new Set([c.clusterDomain, 'svc', ...c.namespaces, ...(c.extraDomains ?? []), ...(c.reverseZones ?? [])].map(clean))]
    .filter((d) => d && !search.includes(d))
    .map((d) => `~${d}`);
  const domains = [...search, ...routing];
  return [
    ['resolvectl', 'dns', c.iface, ...c.dns],
    ['resolvectl', 'domain', c.iface, ...domains],
    // Not a default route: names outside those domains never come to this link.
    ['resolvectl', 'default-route', c.iface, 'false'],
  ];
}

export function revertCommand(iface: string): string[] {
  return ['resolvectl', 'revert', iface];
}

export const runCommand: Runner = (argv) =>
  new Promise((resolve, reject) => {
    execFile(argv[0], argv.slice(1), { timeout: 5000 }, (err, _stdout, stderr) => {
      if (err) reject(dnsError(DnsCodes.RESOLVED, `${argv.join(' ')}: ${stderr.trim() || err.message}`, undefined, err));
      else resolve();
    });
  });

/** resolved is in charge when /etc/resolv.conf is its stub and resolvectl answers. */
export async function detect(resolvConf = '/etc/resolv.conf', run: Runner = runCommand, stub = STUB): Promise<boolean> {
  try {
    if (realpathSync(resolvConf) !== realpathSync(stub)) return false;
    await run(['resolvectl', 'status', '--no-pager']);
    return true;
  } catch {
    return false;
  }
}

/** The uplink servers resolved uses, for names rdbg has to forward. */
export function uplinkServers(path = UPLINK_RESOLV_CONF): string[] {
  try {
    return parseResolvConf(readFileSync(path, 'utf8')).nameservers.filter((n) => !n.startsWith('127.'));
  } catch {
    return [];
  }
}

function entryId(iface: string): string {
  return `resolved-link:${iface}`;
}

/** Journal first, then configure; a half-done configuration is reverted. */
export async function apply(c: ResolvedLinkConfig, journal: Journal, run: Runner = runCommand): Promise<void> {
  journal.record({ id: entryId(c.iface), kind: 'resolved-link', data: { iface: c.iface } });
  try {
    for (const argv of applyCommands(c)) await run(argv);
  } catch (err) {
    await run(revertCommand(c.iface)).catch(() => undefined);
    journal.remove(entryId(c.iface));
    throw err;
  }
  log.info('systemd-resolved routes cluster names to rdbg', { iface: c.iface, dns: c.dns });
}

/** Revert one link. A link that is already gone (the TUN device went with it) counts as reverted. */
export async function restoreEntry(entry: JournalEntry, run: Runner = runCommand): Promise<void> {
  try {
    await run(revertCommand(entry.data.iface));
  } catch (err) {
    log.debug('resolvectl revert failed (link gone?)', { iface: entry.data.iface, error: errorMessage(err) });
  }
}

/**
 * The journal's undo after a crash (synchronous, as every undo is). A link that
 * is gone took its settings with it; anything else failing is kept for the next try.
 */
export function undoEntry(entry: JournalEntry): void {
  const [cmd, ...args] = revertCommand(entry.data.iface);
  try {
    execFileSync(cmd, args, { timeout: 5000, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '');
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || /No such device|Failed to resolve interface/i.test(stderr)) return;
    throw dnsError(DnsCodes.RESOLVED, `resolvectl revert ${entry.data.iface}: ${stderr.trim() || errorMessage(err)}`, undefined, err);
  }
}

export async function restore(journal: Journal, run: Runner = runCommand): Promise<void> {
  for (const e of journal.entries()) {
    if (e.kind !== 'resolved-link') continue;
    await restoreEntry(e, run);
    journal.remove(e.id);
  }
}
