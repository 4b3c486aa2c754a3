/**
 * Requests admitted and not finished, per location, and the locations a handover is draining
 * (./ownership.ts): a handover stops admitting a location, then waits for what was admitted for it
 * to finish, so that what those requests write is committed before the seal (below the cut).
 *
 * Invariants:
 * - `started` and `finished` pair up per request; a location with none running is not in the map.
 * - `quiet` resolves once none of its locations has a request running, or after its `ms`,
 *   whichever comes first (a request that outlives it is the handover's to answer, not ours).
 * - Only a request finishing for a draining location wakes the waiters; they re-check.
 */
export class InFlight {
  private readonly running = new Map<string, number>();
  /** Locations a handover is draining: nothing more is admitted for them. */
  readonly draining = new Set<string>();
  private drainWaiters: Array<() => void> = [];

  /** A request admitted for `location` starts running (`finished` when it is done). */
  started(location: string): void {
    this.running.set(location, (this.running.get(location) ?? 0) + 1);
  }

  finished(location: string): void {
    const n = (this.running.get(location) ?? 1) - 1;
    if (n > 0) {
      this.running.set(location, n);
      return;
    }
    this.running.delete(location);
    if (this.draining.has(location)) for (const wake of this.drainWaiters.splice(0)) wake();
  }

  /** Resolves once no request runs for `locations`, or after `ms`. */
  async quiet(locations: readonly string[], ms: number): Promise<void> {
    const deadline = performance.now() + ms;
    while (locations.some((l) => this.running.has(l))) {
      const left = deadline - performance.now();
      if (left <= 0) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.drainWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}
