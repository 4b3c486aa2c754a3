/**
 * Callers waiting until a position (a revision) reaches theirs: the kv cache's `waitFor`.
 *
 * Kept sorted by revision (a binary-search insert; concurrent writes mostly arrive in order, so
 * usually at the end), so a position update releases from the front and stops at the first
 * waiter still ahead: O(released) per update instead of a pass over every waiter, which was
 * quadratic with thousands of concurrent sets each waiting for its own revision.
 *
 * Invariants: a waiter is settled exactly once (released, timed out, or failed); a released
 * waiter's revision is <= the position it was released at; equal revisions keep their order.
 */
export interface RevisionWaiter {
  readonly revision: number;
  resolve(): void;
  reject(err: Error): void;
}

export class RevisionWaiters<W extends RevisionWaiter = RevisionWaiter> {
  private readonly queue: W[] = [];

  get size(): number {
    return this.queue.length;
  }

  add(w: W): void {
    const q = this.queue;
    let lo = 0;
    let hi = q.length;
    if (hi > 0 && q[hi - 1]!.revision <= w.revision) lo = hi; // the usual case: in order
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (q[mid]!.revision <= w.revision) lo = mid + 1;
      else hi = mid;
    }
    q.splice(lo, 0, w);
  }

  /** Takes `w` out without settling it (its timeout fired); false when it is not waiting. */
  remove(w: W): boolean {
    const i = this.queue.indexOf(w);
    if (i < 0) return false;
    this.queue.splice(i, 1);
    return true;
  }

  /** Resolves, in revision order, every waiter whose revision is <= `position`; returns them. */
  release(position: number): W[] {
    const q = this.queue;
    let n = 0;
    while (n < q.length && q[n]!.revision <= position) n++;
    if (n === 0) return [];
    const released = q.splice(0, n);
    for (const w of released) w.resolve();
    return released;
  }

  /** Rejects every waiter with `err` and empties the queue; returns them. */
  failAll(err: Error): W[] {
    const all = this.queue.splice(0);
    for (const w of all) w.reject(err);
    return all;
  }
}
