import { readFileSync } from 'node:fs';
import { errorMessage } from '../../../src/core/errors';
import { logger } from '../../../src/core/log';
import type { Journal } from '../journal';
import { apply, type ResolvConfChange } from './resolv-conf';

const log = logger('rootd.dns.resolv-conf');

export interface ResolvConfWatchOptions {
  /** How often the file is read (ms). Default 1000. */
  intervalMs?: number;
  /** The new original resolvers, after the file was rewritten by someone else and adopted. */
  onUpstreams: (upstreams: string[]) => void;
  /** More rewrites than this within a minute: someone is fighting us; stop and say so. Default 5. */
  maxRewritesPerMinute?: number;
}

/**
 * While connected, a DHCP client or NetworkManager may rewrite resolv.conf (a
 * new network, waking from sleep). Then that file becomes the original (the
 * one restored on disconnect), its nameservers become the upstreams, and rdbg's
 * resolver goes first again. A file must read the same twice in a row before
 * it is adopted, so a half-written file is never taken.
 */
export function watchResolvConf(path: string, change: ResolvConfChange, journal: Journal, opts: ResolvConfWatchOptions): { stop(): void } {
  const id = `resolv-conf:${path}`;
  const limit = opts.maxRewritesPerMinute ?? 5;
  let pending: string | undefined;
  let adoptions: number[] = [];
  const timer = setInterval(() => {
    try {
      const entry = journal.entries().find((e) => e.id === id);
      if (!entry) return; // restored: nothing of ours to keep up
      let current: string;
      try {
        current = readFileSync(path, 'utf8');
      } catch {
        return; // gone for a moment (being replaced); look again next time
      }
      if (current === entry.data.ours) {
        pending = undefined;
        return;
      }
      if (current !== pending) {
        pending = current;
        return;
      }
      pending = undefined;
      const now = Date.now();
      adoptions = adoptions.filter((t) => now - t < 60_000);
      if (adoptions.length >= limit) {
        log.warn('resolv.conf keeps being rewritten by another program; rdbg stops taking it back (cluster names may not resolve)', { path });
        clearInterval(timer);
        return;
      }
      adoptions.push(now);
      log.info('resolv.conf was rewritten by someone else (network change?); rdbg adopts it as the original and goes first again', { path });
      opts.onUpstreams(apply(path, change, journal).upstreams);
    } catch (err) {
      log.warn('watching resolv.conf failed', { path, error: errorMessage(err) });
    }
  }, opts.intervalMs ?? 1000);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
