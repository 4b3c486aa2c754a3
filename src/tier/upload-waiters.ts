/**
 * The callers waiting on the tier's upload loop (./tier.ts): `ack: "object"` writes waiting for
 * their segment to be in the object store, and callers waiting for the upload backlog to drain.
 * The tier decides when a wait is settled; this file holds the waits and their timers.
 *
 * Invariants:
 * - Every segment wait is settled exactly once: resolved when the tier reports its segment shipped,
 *   rejected when the segment is quarantined (CORRUPT, never shipped) or the store closes (CLOSED),
 *   or rejected UNAVAILABLE after objectAckTimeoutMs (the write stays durable locally and is still
 *   shipped in the background). Its timer is cleared whichever comes first.
 * - A drain wait is resolved when the backlog is empty, or rejected CLOSED at close.
 * - After `close` nothing is left waiting.
 */
import { StrataError } from "../errors.js";

interface Waiter {
  seg: number;
  resolve: () => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout;
}

export class UploadWaiters {
  private waiters: Waiter[] = [];
  private drainWaiters: Array<{ resolve: () => void; reject: (err: unknown) => void }> = [];

  constructor(private readonly objectAckTimeoutMs: number) {}

  /** Resolves once `seg` is reported shipped; rejects with UNAVAILABLE after objectAckTimeoutMs. */
  waitSegment(seg: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        seg,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(
            new StrataError(
              "UNAVAILABLE",
              `the write is durable locally but did not reach the object store within objectAckTimeoutMs=${this.objectAckTimeoutMs}; the object store may be down (it is retried in the background)`,
            ),
          );
        }, this.objectAckTimeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  /** Resolves the waits for every segment `shipped` says is in the object store. */
  resolveShipped(shipped: (seg: number) => boolean): void {
    for (const w of this.take(shipped)) w.resolve();
  }

  /** Rejects the waits for `seg` (it will never be shipped) with `err`. */
  rejectSegment(seg: number, err: () => unknown): void {
    for (const w of this.take((s) => s === seg)) w.reject(err());
  }

  /** Resolves once `resolveDrained` is called (the backlog is empty); rejects CLOSED at close. */
  waitDrained(): Promise<void> {
    return new Promise((resolve, reject) => this.drainWaiters.push({ resolve, reject }));
  }

  /** The backlog is empty: resolves the drain waits. */
  resolveDrained(): void {
    this.drainWaiters.splice(0).forEach((w) => w.resolve());
  }

  /** The store closes: rejects every wait with CLOSED. */
  close(): void {
    for (const w of this.take(() => true)) {
      w.reject(new StrataError("CLOSED", "the store closed before the write reached the object store; it is durable locally and is shipped at the next start"));
    }
    for (const w of this.drainWaiters.splice(0)) w.reject(new StrataError("CLOSED", "the store closed before its uploads finished"));
  }

  /** Takes the segment waits `match` selects off the list and stops their timers. */
  private take(match: (seg: number) => boolean): Waiter[] {
    const taken = this.waiters.filter((w) => match(w.seg));
    this.waiters = this.waiters.filter((w) => !match(w.seg));
    for (const w of taken) clearTimeout(w.timer);
    return taken;
  }
}
