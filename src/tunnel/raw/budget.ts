import { readFileSync } from 'node:fs';

/** How long a closed connection's port stays in TIME_WAIT on Linux (2 x MSL, fixed at 60 s). */
const TIME_WAIT_MS = 60_000;

/**
 * How many raw flows a process opens, at once and per minute; past either
 * limit new flows go over the shared HTTP/2 connection instead.
 *
 * At once: a raw flow costs a descriptor more than a flow on the HTTP/2
 * connection, so at most a quarter of the open-file limit (10,000
 * connections then still fit under a limit of 20,000).
 *
 * Per minute: a raw flow that the laptop side closes first (sends its FIN
 * before the manager's) leaves its local port in TIME_WAIT towards the
 * manager's one address for a minute, and connect() has only about half of
 * the ephemeral range (the even ports) before it slows down and then fails
 * with EADDRNOTAVAIL. Measured here: past about 14,000 such closes in a
 * minute, new connections took 0.4-1 s. So at most a quarter of the range
 * per minute (about 7,000). A raw flow normally does not close first: its
 * half-close goes beside it (SpliceOptions.halfCloseB) and its FIN only
 * answers the manager's, which leaves the TIME_WAIT on the manager's side,
 * where it holds no port of the laptop's. Only the closes that did go first
 * are counted (closedFirst), so a burst of short flows stays raw.
 */
export class RawFlowBudget {
  private used = 0;
  /** raw flows closed first by this side, per second over the last minute (a ring of 60 counters) */
  private readonly closed = new Array<number>(60).fill(0);
  private closedTotal = 0;
  private lastSecond = 0;

  constructor(
    readonly max: number,
    readonly maxPerMinute = Infinity,
    private readonly now: () => number = Date.now,
  ) {}

  static forLimits(fileLimit: number, ephemeralPorts: number): RawFlowBudget {
    return new RawFlowBudget(Math.max(0, Math.floor((fileLimit - 512) / 4)), Math.floor(ephemeralPorts / 4));
  }

  /** max (RDBG_RAW_FLOWS_MAX) sets the number at once (0: every flow over HTTP/2); else it follows the limits. */
  static forThisProcess(fileLimit: number, max?: number): RawFlowBudget {
    const b = RawFlowBudget.forLimits(fileLimit, ephemeralPortCount());
    return max !== undefined ? new RawFlowBudget(max, b.maxPerMinute) : b;
  }

  /** Take one raw flow, if there is room; `release` gives it back (once). */
  take(): (() => void) | undefined {
    this.advance();
    if (this.used >= this.max || this.closedTotal >= this.maxPerMinute) return undefined;
    this.used++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used--;
    };
  }

  /** A raw connection this side closed first: its local port waits in TIME_WAIT for a minute. */
  closedFirst(): void {
    this.advance();
    this.closed[this.lastSecond % 60]++;
    this.closedTotal++;
  }

  /** Forget the seconds that left the window. */
  private advance(): void {
    const second = Math.floor(this.now() / 1000);
    if (second - this.lastSecond >= TIME_WAIT_MS / 1000) {
      this.closed.fill(0);
      this.closedTotal = 0;
    } else {
      for (let s = this.lastSecond + 1; s <= second; s++) {
        this.closedTotal -= this.closed[s % 60];
        this.closed[s % 60] = 0;
      }
    }
    this.lastSecond = second;
  }

  get inUse(): number {
    return this.used;
  }

  /** Raw connections this side closed first within the last minute. */
  get closedFirstLastMinute(): number {
    this.advance();
    return this.closedTotal;
  }
}

/** The size of the ephemeral port range connect() draws from (Linux's default where it cannot be read). */
export function ephemeralPortCount(read: () => string = () => readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')): number {
  try {
    const [lo, hi] = read().trim().split(/\s+/).map(Number);
    if (Number.isInteger(lo) && Number.isInteger(hi) && hi >= lo) return hi - lo + 1;
  } catch {
    // not Linux: take Linux's default range
  }
  return 60999 - 32768 + 1;
}
