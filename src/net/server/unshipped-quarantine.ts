/**
 * Records this server wrote for a location that has moved away, and never shipped (./ownership.ts,
 * docs/failover.md): where "never shipped" begins (the fence point), which locations to check
 * when a new incarnation is registered, and the report of what was found (the quarantine).
 *
 * Invariants:
 * - Such records are never served or deleted: they stay in the log and are reported once per
 *   location (a warning, `quarantined` in the stats, the index's quarantine list).
 * - "Never shipped" counts from the first own segment that was not in the object store at the
 *   last answered renewal of the incarnation that ended (or when this process started): segments
 *   shipped after that may have landed after the new owner's cut, so they are counted too — a
 *   report may name records the new owner does have, never leave out one it does not.
 * - Everything here is bounded: locations checked (`MOVED_CHECKED_MAX`), locations reported
 *   (`QUARANTINE_REPORTED_MAX`), records counted per location (`QUARANTINE_COUNT_MAX`).
 */
import type { Logger } from "../../logger.js";
import type { Store } from "../../store.js";

/** Most moved-away locations checked for unshipped records, and most reported in the stats. */
const MOVED_CHECKED_MAX = 100_000;
const QUARANTINE_REPORTED_MAX = 1000;
/** Records counted per moved location (the count saturates there). */
const QUARANTINE_COUNT_MAX = 100_000;

export interface QuarantinedLocation {
  location: string;
  records: number;
  movedTo: string;
}

export class UnshippedQuarantine {
  /** Records in own segments from here on were never shipped (see the invariants). */
  private fencePoint: number;
  /** The first unshipped segment at the last answered renewal: the fence point if the incarnation ends. */
  private shippedAtRenewal: number;
  /** The locations the last ended incarnation held, checked once the next one is registered. */
  private heldAtEnd: string[] = [];
  private readonly movedChecked = new Set<string>();
  private readonly quarantine: QuarantinedLocation[] = [];

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
  ) {
    this.fencePoint = store.firstUnshipped();
    this.shippedAtRenewal = this.fencePoint;
  }

  /**
   * The locations that may hold records this server never shipped, to check once a new
   * incarnation is registered: after a restart (`first`) the locations with records in the
   * segments that were not shipped when the process started; after a lease that ran out, the
   * locations the ended incarnation held. Undefined while the store is closing.
   */
  toCheck(first: boolean): string[] | undefined {
    let locations: string[];
    try {
      locations = first ? this.store.locationsFrom(this.fencePoint, MOVED_CHECKED_MAX) : this.heldAtEnd;
    } catch {
      return undefined; // the store is closing
    }
    this.heldAtEnd = [];
    return locations;
  }

  /** A renewal was answered: what is shipped now was shipped while the lease held. */
  renewed(): void {
    try {
      this.shippedAtRenewal = this.store.firstUnshipped();
    } catch {
      // the store is closing
    }
  }

  /** The incarnation is over; it held `held` (checked when the next one is registered). */
  ended(held: ReadonlyMap<string, number>): void {
    if (held.size > 0) this.heldAtEnd = [...held.keys()].slice(0, MOVED_CHECKED_MAX);
    this.fencePoint = this.shippedAtRenewal;
  }

  /** The locations reported so far (for the stats). */
  reported(): QuarantinedLocation[] {
    return [...this.quarantine];
  }

  /** A location this server once held now belongs to `owner`: report what it never shipped. */
  noteMoved(location: string, owner: string): void {
    if (this.movedChecked.has(location)) return;
    if (this.movedChecked.size >= MOVED_CHECKED_MAX) this.movedChecked.clear();
    this.movedChecked.add(location);
    let records: number;
    try {
      records = this.store.recordsFrom(location, this.fencePoint, QUARANTINE_COUNT_MAX);
    } catch {
      return; // the store is closing
    }
    if (records === 0) return;
    this.store.quarantine(location, { movedTo: owner, records, fromSegment: this.fencePoint });
    if (this.quarantine.length < QUARANTINE_REPORTED_MAX) this.quarantine.push({ location, records, movedTo: owner });
    this.logger.warn(
      { event: "location_moved_unshipped", location, to: owner, records, fromSegment: this.fencePoint },
      `location "${location}" moved to server "${owner}" while ${records >= QUARANTINE_COUNT_MAX ? `at least ${records}` : records} of its records here were never shipped; ` +
        `they are not part of its history there, are kept in this server's log (quarantine) and are never served`,
    );
  }
}
