/**
 * Tells a periodic sweep how long the process itself did not run (SIGSTOP, a
 * starved node) since the sweep before: leases must not count that time
 * against clients, whose heartbeats could not be heard meanwhile.
 */
export class StallClock {
  private last = Date.now();

  constructor(
    private readonly everyMs: number,
    private readonly toleranceMs = 1000,
  ) {}

  /** Milliseconds this process was stalled since the last call (0 when on time). */
  stalled(now = Date.now()): number {
    const late = now - this.last - this.everyMs;
    this.last = now;
    return late > this.toleranceMs ? late : 0;
  }
}
