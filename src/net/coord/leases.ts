/**
 * The coordinator's lease table: which incarnation of each server is current, and until when an
 * incarnation may still act on what it was granted. Pure: no I/O and no clock of its own — every
 * call takes `now`, a monotonic millisecond reading of the caller's clock (`performance.now()` in
 * the coordinator, a simulated clock in the model test).
 *
 * Rules (docs/failover.md):
 * - A registration makes a new incarnation current; the one before it can no longer renew, but may
 *   still act until its own lease would have ended (kept as `supersededUntil`, the latest such end
 *   of every earlier incarnation of that id).
 * - A renewal of the current incarnation received at `now` extends its lease to
 *   `leaseHonouredUntil(now)` (wire/lease.ts). Once `now` reaches the end, the incarnation is over
 *   for good: every later renewal is fenced (it must register again).
 * - A release ends the current incarnation's lease at once (a stopping server has stopped acting
 *   before it sends it), so its next incarnation may claim its locations immediately.
 * - Restart: leases are not on disk. A table built at start treats every known server as having
 *   renewed at that instant, so nothing it may have granted before a crash is reassigned early —
 *   except an incarnation whose end was recorded on disk (the coordinator records it in the same
 *   transaction that first moves a location away from it): that one stays over.
 *
 * Invariant: `mayActUntil(id, inc)` never decreases for an incarnation except through `release`
 * (which the incarnation itself asked for).
 */
import { assert } from "../../assert.js";
import { leaseHonouredUntil } from "../wire/lease.js";
import type { LeaseTimes } from "../wire/coordinator-protocol.js";

export type LeaseStatus = "valid" | "over" | "released";

interface Entry {
  incarnation: number;
  /** When the last renewal (or the registration, or the table's start) was received. */
  receivedAt: number;
  status: LeaseStatus;
  /** Until when some earlier incarnation of this id may still act. */
  supersededUntil: number;
}

export class LeaseTable {
  private readonly entries = new Map<string, Entry>();

  /**
   * `known`: every server id on disk with its current incarnation and whether that incarnation's
   * lease was durably ended (`over`: a location was moved away from it because its lease was over).
   * All others count as renewed at `startedAt`. An ended one must stay ended: it may believe it
   * still holds the locations it was granted, so letting it renew again would give two holders.
   */
  constructor(
    readonly times: LeaseTimes,
    startedAt: number,
    known: Iterable<readonly [string, number, boolean?]>,
  ) {
    const until = this.end(startedAt);
    for (const [id, incarnation, over] of known) {
      this.entries.set(id, { incarnation, receivedAt: startedAt, status: over === true ? "over" : "valid", supersededUntil: until });
    }
  }

  private end(receivedAt: number): number {
    return leaseHonouredUntil(receivedAt, this.times.leaseMs, this.times.leaseMarginMs);
  }

  /** Applies expiry: a valid lease whose end has come is over, permanently. */
  private settle(e: Entry, now: number): Entry {
    if (e.status === "valid" && now >= this.end(e.receivedAt)) e.status = "over";
    return e;
  }

  register(id: string, incarnation: number, now: number): void {
    const before = this.entries.get(id);
    if (before === undefined) {
      this.entries.set(id, { incarnation, receivedAt: now, status: "valid", supersededUntil: -Infinity });
      return;
    }
    assert(incarnation > before.incarnation, `incarnation ${incarnation} of ${id} must be newer than ${before.incarnation}`);
    this.settle(before, now);
    const previousEnd = before.status === "valid" ? this.end(before.receivedAt) : -Infinity;
    this.entries.set(id, { incarnation, receivedAt: now, status: "valid", supersededUntil: Math.max(before.supersededUntil, previousEnd) });
  }

  /** A renewal of `incarnation` received at `now`: extends the lease, or "fenced" if it is over or not current. */
  renew(id: string, incarnation: number, now: number): "ok" | "fenced" {
    const e = this.entries.get(id);
    if (e === undefined || e.incarnation !== incarnation || this.settle(e, now).status !== "valid") return "fenced";
    e.receivedAt = Math.max(e.receivedAt, now);
    return "ok";
  }

  /** The current incarnation lets go of its lease at once. */
  release(id: string, incarnation: number, now: number): "ok" | "fenced" {
    const e = this.entries.get(id);
    if (e === undefined || e.incarnation !== incarnation || this.settle(e, now).status !== "valid") return "fenced";
    e.status = "released";
    return "ok";
  }

  /** True when `incarnation` is `id`'s current one and its lease holds: it may renew, claim, confirm. */
  isCurrent(id: string, incarnation: number, now: number): boolean {
    const e = this.entries.get(id);
    return e !== undefined && e.incarnation === incarnation && this.settle(e, now).status === "valid";
  }

  current(id: string): number | undefined {
    return this.entries.get(id)?.incarnation;
  }

  status(id: string, now: number): LeaseStatus | undefined {
    const e = this.entries.get(id);
    return e === undefined ? undefined : this.settle(e, now).status;
  }

  /** A server is live while its current incarnation's lease holds. */
  isLive(id: string, now: number): boolean {
    return this.status(id, now) === "valid";
  }

  /** When the current lease of `id` ends (coordinator clock); -Infinity when it is over or released. */
  leaseEnd(id: string, now: number): number {
    const e = this.entries.get(id);
    if (e === undefined || this.settle(e, now).status !== "valid") return -Infinity;
    return this.end(e.receivedAt);
  }

  /**
   * Until when incarnation `incarnation` of server `id` may still act on a grant: -Infinity for
   * incarnation 0 (granted to nobody yet). A moment `now >= mayActUntil(…)` means it can act no more.
   */
  mayActUntil(id: string, incarnation: number, now: number): number {
    if (incarnation === 0) return -Infinity;
    const e = this.entries.get(id);
    if (e === undefined) return -Infinity;
    this.settle(e, now);
    if (incarnation === e.incarnation) return e.status === "valid" ? this.end(e.receivedAt) : -Infinity;
    // A newer incarnation than the current one cannot exist; be safe rather than sorry if it does.
    if (incarnation > e.incarnation) return Infinity;
    return e.supersededUntil;
  }
}
