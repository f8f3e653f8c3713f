import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { logger } from '../src/core/log';
import { StallClock } from './stall-clock';

const log = logger('manager.session');

export interface ClientSession {
  id: string;
  user: string;
  hostname: string;
  namespace: string;
  clientVersion: string;
  arrived: Date;
  lastSeen: number;
}

/**
 * Client sessions are leases: a session whose client has not sent a
 * heartbeat for `leaseMs` is expired, and 'expired' tells the intercept
 * registry to end what the session held.
 */
export class SessionRegistry extends EventEmitter {
  private readonly sessions = new Map<string, ClientSession>();
  private readonly timer: NodeJS.Timeout;
  private readonly clock: StallClock;

  constructor(readonly leaseMs: number) {
    super();
    const every = Math.min(1000, leaseMs / 4);
    this.clock = new StallClock(every);
    this.timer = setInterval(() => this.sweep(), every);
    this.timer.unref();
  }

  arrive(info: Omit<ClientSession, 'id' | 'arrived' | 'lastSeen'>): ClientSession {
    const s: ClientSession = { ...info, id: randomUUID(), arrived: new Date(), lastSeen: Date.now() };
    this.sessions.set(s.id, s);
    log.info('session arrived', { session: s.id, user: s.user, version: s.clientVersion });
    return s;
  }

  /**
   * The session `id` again, for a client whose connection dropped while its
   * lease lasted: its intercepts stay. Only the same user and host may resume
   * it; undefined when it is gone (then the client arrives anew).
   */
  resume(id: string, user: string, hostname: string): ClientSession | undefined {
    const s = this.sessions.get(id);
    if (!s || s.user !== user || s.hostname !== hostname) return undefined;
    s.lastSeen = Date.now();
    log.info('session resumed', { session: s.id, user: s.user });
    return s;
  }

  get(id: string): ClientSession | undefined {
    return this.sessions.get(id);
  }

  heartbeat(id: string): boolean {
    const s = this.sessions.get(id);
    if (!s) return false;
    s.lastSeen = Date.now();
    return true;
  }

  depart(id: string): void {
    if (this.sessions.delete(id)) {
      log.info('session departed', { session: id });
      this.emit('ended', id);
    }
  }

  list(): ClientSession[] {
    return [...this.sessions.values()];
  }

  private sweep(): void {
    const now = Date.now();
    // The manager itself was not running (paused, its node starved): the
    // clients' heartbeats could not be heard, so that time is not theirs.
    const stalled = this.clock.stalled(now);
    if (stalled > 0) {
      log.warn('the manager was paused; leases extended by the pause', { pausedMs: stalled });
      for (const s of this.sessions.values()) s.lastSeen += stalled;
    }
    for (const s of this.sessions.values()) {
      if (now - s.lastSeen > this.leaseMs) {
        this.sessions.delete(s.id);
        log.warn('session expired', { session: s.id, user: s.user, silentMs: now - s.lastSeen });
        this.emit('ended', s.id);
      }
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}
