/**
 * Which locations this server may serve now, and under which epoch (docs/failover.md).
 *
 * A location is served only under a grant of the current incarnation and while the lease holds
 * (coord-link.ts). The first request for a location without a grant claims it from the
 * coordinator; the claims of one turn of the event loop go out as one request, and every request
 * for a location being claimed waits for that one claim. A grant that comes with a handoff is a
 * takeover: the cut is fixed with the coordinator (the first proposal wins), the location is
 * imported from the previous owner's object-store data (Store.importLocations), and only then
 * served; once the import record is in the object store the epoch is confirmed, which makes this
 * server the location's source for any later takeover.
 *
 * Invariants:
 * - `grants` holds only grants of the current incarnation: it is emptied when the incarnation
 *   ends (FENCED, new registration), and a location handed over is removed from it before its
 *   cut is computed, so nothing is admitted for it afterwards.
 * - A handover first stops admitting the location and lets the requests already admitted for it
 *   finish (up to half of `handoverShipMs`): what they write is committed before the seal, so it
 *   is below the cut and may be acknowledged. Only then is the grant dropped; a request still
 *   running after that answers TIMEOUT (writes) or UNAVAILABLE (reads) as for a lost lease.
 * - A handed-over location is remembered with the epoch it was handed over at: a claim answered
 *   with that same epoch (the coordinator has not recorded the move yet) is refused for
 *   `handoverHoldMs`, so a late request cannot bring it back under the old epoch; past that the
 *   coordinator has given up on the handover (it waits at most its handoverTimeoutMs), and the
 *   same epoch means the location stayed here. A handover that cannot ship within
 *   `handoverShipMs` keeps its locations.
 * - Records this server wrote for a location that has moved away, and never shipped, are never
 *   served or deleted: they stay in the log and are reported once per location (a warning,
 *   `quarantined` in the stats, the index's quarantine list). "Never shipped" counts from the
 *   first own segment that was not in the object store at the last answered renewal of the
 *   incarnation that ended (or when this process started): segments shipped after that may have
 *   landed after the new owner's cut, so they are counted too — a report may name records the new
 *   owner does have, never leave out one it does not.
 * - A grant pushed by the coordinator for a new location (coord-link.ts checked that it names the
 *   current incarnation and carries its key) is taken only for a location this server knows
 *   nothing of right now: not held, not being claimed, not being handed over and not handed over
 *   by this incarnation. Anything else is a stale or duplicate push and is ignored: the claim (or
 *   the grant already held) is the authority. A push that never comes costs one claim.
 * - `ack: "object"` writes are confirmed (one request per upload, batched per turn) before they are
 *   acknowledged: a stale epoch answers TIMEOUT (the write may or may not be part of the history).
 */
import { StrataError } from "../../errors.js";
import type { Logger } from "../../logger.js";
import { withTimeout } from "../../with-timeout.js";
import type { Store } from "../../store.js";
import type { CoordLink } from "./coord-link.js";
import { parseClaimReply, parseConfirmReply, parseCutReply } from "../wire/coordinator-parsers.js";
import { isRefusal, type Handoff } from "../wire/coordinator-protocol.js";

export interface OwnershipOptions {
  id: string;
  /** Most locations in one claim or confirm request. */
  batchMax: number;
  /** See NetLimits `handoverShipMs` and `handoverHoldMs`. */
  handoverShipMs: number;
  handoverHoldMs: number;
  logger: Logger;
}

interface Waiter {
  resolve: (epoch: number) => void;
  reject: (err: unknown) => void;
}

export interface OwnershipStats {
  grants: number;
  claims: number;
  /** Grants taken from the coordinator's pushes (new locations that needed no claim). */
  pushed: number;
  /** Pushes ignored: stale, duplicate, for another incarnation or without its key. */
  pushesIgnored: number;
  takeovers: number;
  takeoverFailures: number;
  confirms: number;
  staleConfirms: number;
  handedOver: number;
  /** Locations that moved away while this server held records of them it never shipped. */
  quarantined: Array<{ location: string; records: number; movedTo: string }>;
}

/** Most moved-away locations checked for unshipped records, and most reported in the stats. */
const MOVED_CHECKED_MAX = 100_000;
const QUARANTINE_REPORTED_MAX = 1000;
/** Records counted per moved location (the count saturates there). */
const QUARANTINE_COUNT_MAX = 100_000;

export class Ownership {
  private grants = new Map<string, number>();
  /** The location's revision when its current grant began (what a watcher may rewind to). */
  private startRevs = new Map<string, number>();
  /** Locations let go by a handover: the epoch, and until when (monotonic ms) a claim of that epoch is refused. */
  private readonly handedOver = new Map<string, { epoch: number; until: number }>();
  private readonly claiming = new Map<string, Promise<number>>();
  /** Requests admitted and not finished, per location; and locations a handover is draining. */
  private readonly running = new Map<string, number>();
  private readonly draining = new Set<string>();
  private drainWaiters: Array<() => void> = [];
  private claimQueue = new Map<string, Waiter>();
  private confirmQueue: Array<{ location: string; epoch: number; waiter: { resolve: () => void; reject: (err: unknown) => void } }> = [];
  private claimScheduled = false;
  private confirmScheduled = false;
  /** Records in own segments from here on were never shipped (see the invariants). */
  private fencePoint: number;
  /** The first unshipped segment at the last answered renewal: the fence point if the incarnation ends. */
  private shippedAtRenewal: number;
  /** The locations the last ended incarnation held, checked once the next one is registered. */
  private heldAtEnd: string[] = [];
  private readonly movedChecked = new Set<string>();
  private readonly quarantine: Array<{ location: string; records: number; movedTo: string }> = [];
  /** Locations taken under a new epoch (claims, pushes, takeovers, a handover kept): epoch changes, for the metrics. */
  epochsGranted = 0;
  readonly counters = { claims: 0, pushed: 0, takeovers: 0, takeoverFailures: 0, confirms: 0, staleConfirms: 0, handedOver: 0 };
  private pushesIgnored = 0;

  constructor(
    private readonly link: CoordLink,
    private readonly store: Store,
    private readonly opts: OwnershipOptions,
  ) {
    this.fencePoint = store.firstUnshipped();
    this.shippedAtRenewal = this.fencePoint;
    link.onGrants((grants) => this.pushed(grants));
  }

  /** Grants the coordinator pushed for new locations of the current incarnation (see the invariants). */
  private pushed(grants: ReadonlyArray<[string, number]>): void {
    for (const [location, epoch] of grants) {
      if (this.grants.has(location) || this.claiming.has(location) || this.draining.has(location) || this.handedOver.has(location)) {
        this.pushesIgnored += 1;
        continue;
      }
      let startRev: number;
      try {
        startRev = this.store.inventory(location).revision;
        this.store.unquarantine(location);
      } catch {
        // The store is closing, or refuses the location: a request for it will claim as usual.
        this.pushesIgnored += 1;
        continue;
      }
      this.grant(location, epoch, startRev);
      this.counters.pushed += 1;
    }
  }

  /**
   * Registered with a new incarnation: find out which locations that may hold records this server
   * never shipped have moved away (claiming them: what is still ours is granted again, what moved
   * is refused and reported). After a restart these are the locations with records in the
   * segments that were not shipped when the process started; after a lease that ran out, the
   * locations the ended incarnation held.
   */
  registered(first: boolean): void {
    let locations: string[];
    try {
      locations = first ? this.store.locationsFrom(this.fencePoint, MOVED_CHECKED_MAX) : this.heldAtEnd;
    } catch {
      return; // the store is closing
    }
    this.heldAtEnd = [];
    for (const location of locations) if (!this.grants.has(location)) void this.claim(location).catch(() => undefined);
  }

  /** A renewal was answered: what is shipped now was shipped while the lease held. */
  renewed(): void {
    try {
      this.shippedAtRenewal = this.store.firstUnshipped();
    } catch {
      // the store is closing
    }
  }

  /** The epoch to serve `location` under now, claiming it first when needed; UNAVAILABLE otherwise. */
  admit(location: string): number | Promise<number> {
    if (!this.link.valid()) throw this.noLease();
    if (this.draining.has(location)) throw new StrataError("UNAVAILABLE", `location "${location}" is being handed over to another server; retry`);
    const epoch = this.grants.get(location);
    if (epoch !== undefined) return epoch;
    return this.claim(location);
  }

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
  private async quiet(locations: readonly string[], ms: number): Promise<void> {
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

  /** Whether `location` is still held under `epoch` with a valid lease (checked before answering). */
  holds(location: string, epoch: number): boolean {
    return this.link.valid() && this.grants.get(location) === epoch;
  }

  /** The epoch `location` is held under now, if it is held (gates the change feed). */
  heldEpoch(location: string): number | undefined {
    return this.link.valid() ? this.grants.get(location) : undefined;
  }

  /** The location's revision when its current grant began. */
  startRevision(location: string): number | undefined {
    return this.startRevs.get(location);
  }

  /** The incarnation is over: nothing is held any more. */
  clear(): void {
    if (this.grants.size > 0) this.heldAtEnd = [...this.grants.keys()].slice(0, MOVED_CHECKED_MAX);
    this.grants = new Map();
    this.startRevs = new Map();
    this.handedOver.clear();
    this.fencePoint = this.shippedAtRenewal;
  }

  stats(): OwnershipStats {
    return { grants: this.grants.size, ...this.counters, pushesIgnored: this.pushesIgnored + this.link.pushesIgnored, quarantined: [...this.quarantine] };
  }

  /**
   * Confirms with the coordinator that `location` is still held under the epoch it was written
   * at (after its segment is in the object store, before an `ack: "object"` answer).
   */
  confirm(location: string): Promise<void> {
    const epoch = this.grants.get(location);
    if (epoch === undefined || !this.link.valid()) return Promise.reject(movedWhileWriting(location));
    return new Promise((resolve, reject) => {
      this.confirmQueue.push({ location, epoch, waiter: { resolve, reject } });
      if (!this.confirmScheduled) {
        this.confirmScheduled = true;
        setImmediate(() => void this.flushConfirms());
      }
    });
  }

  /**
   * The coordinator moves `epochs` elsewhere (strata move / drain): stop admitting them, seal and
   * ship everything written so far, and answer the cut (the last segment that holds their history).
   */
  async handover(epochs: ReadonlyArray<[string, number]>): Promise<Array<[string, number]>> {
    const held = epochs.filter(([location, epoch]) => this.grants.get(location) === epoch);
    // Admit nothing more, and let what was admitted finish: it is then below the cut.
    for (const [location] of held) this.draining.add(location);
    try {
      await this.quiet(held.map(([location]) => location), this.opts.handoverShipMs / 2);
    } finally {
      for (const [location] of held) this.draining.delete(location);
    }
    const mine: string[] = [];
    for (const [location, epoch] of held) {
      if (this.grants.get(location) !== epoch) continue;
      this.grants.delete(location);
      this.startRevs.delete(location);
      this.handedOver.set(location, { epoch, until: Infinity });
      mine.push(location);
    }
    const incarnation = this.link.incarnation;
    let cut: number;
    try {
      cut = await withTimeout(this.store.shipAll(), this.opts.handoverShipMs, "sealing and shipping for a handover (retry)");
    } catch (err) {
      // Not shipped, so not let go: the coordinator keeps the locations here; serve them again.
      for (const location of mine) {
        const { epoch } = this.handedOver.get(location)!;
        this.handedOver.delete(location);
        if (this.link.incarnation === incarnation && this.link.valid()) this.grant(location, epoch, this.store.inventory(location).revision);
      }
      throw err;
    }
    this.counters.handedOver += mine.length;
    const until = performance.now() + this.opts.handoverHoldMs;
    for (const location of mine) {
      const h = this.handedOver.get(location);
      if (h) h.until = until;
    }
    return mine.map((location) => [location, cut]);
  }

  private grant(location: string, epoch: number, startRev: number): void {
    if (this.grants.get(location) !== epoch) this.epochsGranted += 1;
    this.grants.set(location, epoch);
    this.startRevs.set(location, startRev);
  }

  private claim(location: string): Promise<number> {
    const pending = this.claiming.get(location);
    if (pending) return pending;
    const promise = new Promise<number>((resolve, reject) => this.claimQueue.set(location, { resolve, reject }));
    this.claiming.set(location, promise);
    void promise.then(
      () => this.claiming.delete(location),
      () => this.claiming.delete(location),
    );
    if (!this.claimScheduled) {
      this.claimScheduled = true;
      setImmediate(() => this.flushClaims());
    }
    return promise;
  }

  private flushClaims(): void {
    this.claimScheduled = false;
    while (this.claimQueue.size > 0) {
      const batch = new Map<string, Waiter>();
      for (const [location, waiter] of this.claimQueue) {
        batch.set(location, waiter);
        this.claimQueue.delete(location);
        if (batch.size >= this.opts.batchMax) break;
      }
      void this.runClaims(batch);
    }
  }

  private async runClaims(batch: Map<string, Waiter>): Promise<void> {
    this.counters.claims += 1;
    const incarnation = this.link.incarnation;
    let grants: ReturnType<typeof parseClaimReply>["grants"];
    try {
      grants = parseClaimReply(await this.link.request("claim", { locations: [...batch.keys()] })).grants;
    } catch (err) {
      for (const w of batch.values()) w.reject(err);
      return;
    }
    const takeovers: Array<{ location: string; epoch: number; handoff: Handoff; waiter: Waiter }> = [];
    for (const g of grants) {
      const location = g.location;
      const waiter = batch.get(location);
      if (waiter === undefined) continue;
      batch.delete(location);
      if (isRefusal(g)) {
        if (g.server !== undefined && g.server !== this.opts.id) this.noteMoved(location, g.server);
        // The client retries a refusal elsewhere; a lease that ended is this server's problem, not its.
        waiter.reject(new StrataError(g.code === "FENCED" ? "UNAVAILABLE" : g.code, g.message || "the coordinator refused the claim"));
        continue;
      }
      const epoch = g.epoch;
      if (this.link.incarnation !== incarnation) {
        waiter.reject(this.noLease());
        continue;
      }
      const handed = this.handedOver.get(location);
      if (handed !== undefined && handed.epoch === epoch && performance.now() < handed.until) {
        waiter.reject(new StrataError("UNAVAILABLE", `location "${location}" is being handed over to another server; retry`));
        continue;
      }
      this.handedOver.delete(location);
      if (g.handoff !== undefined) {
        takeovers.push({ location, epoch, handoff: g.handoff, waiter });
      } else {
        this.store.unquarantine(location);
        this.grant(location, epoch, this.store.inventory(location).revision);
        waiter.resolve(epoch);
      }
    }
    for (const [location, waiter] of batch) waiter.reject(new StrataError("UNAVAILABLE", `the coordinator's claim reply left out "${location}"; retry`));
    if (takeovers.length > 0) await this.takeOver(takeovers, incarnation);
  }

  /** Imports handed-off locations (cut fixed with the coordinator first), then serves them. */
  private async takeOver(items: Array<{ location: string; epoch: number; handoff: Handoff; waiter: Waiter }>, incarnation: number | undefined): Promise<void> {
    this.counters.takeovers += items.length;
    const ready: Array<{ location: string; from: string; cut: number; epoch: number; waiter: Waiter }> = [];
    const lastOf = new Map<string, Promise<number | undefined>>();
    await Promise.all(
      items.map(async (item) => {
        try {
          let cut = item.handoff.cut;
          if (cut === undefined) {
            let last = lastOf.get(item.handoff.from);
            if (!last) lastOf.set(item.handoff.from, (last = this.store.lastSegmentOf(item.handoff.from)));
            const proposed = (await last) ?? 0;
            cut = parseCutReply(await this.link.request("cut", { location: item.location, epoch: item.epoch, from: item.handoff.from, cut: proposed })).cut;
          }
          ready.push({ location: item.location, from: item.handoff.from, cut, epoch: item.epoch, waiter: item.waiter });
        } catch (err) {
          this.counters.takeoverFailures += 1;
          item.waiter.reject(err);
        }
      }),
    );
    if (ready.length === 0) return;
    let imported: Awaited<ReturnType<Store["importLocations"]>>;
    try {
      imported = await this.store.importLocations(ready.map(({ location, from, cut, epoch }) => ({ location, from, cut, epoch })));
    } catch (err) {
      this.counters.takeoverFailures += ready.length;
      this.opts.logger.warn({ event: "takeover_failed", locations: ready.length, error: (err as Error).message, ...(StrataError.is(err) ? { code: err.code } : {}) }, `taking over ${ready.length} locations failed: ${(err as Error).message}; they are retried on the next request`);
      for (const r of ready) r.waiter.reject(StrataError.is(err) && !StrataError.is(err, "CORRUPT") ? err : new StrataError("UNAVAILABLE", `taking over the location failed (${(err as Error).message}); retry`));
      return;
    }
    if (this.link.incarnation !== incarnation) {
      for (const r of ready) r.waiter.reject(this.noLease());
      return;
    }
    const revs = new Map(imported.map((i) => [i.location, i.rev]));
    for (const r of ready) {
      this.grant(r.location, r.epoch, revs.get(r.location) ?? 0);
      r.waiter.resolve(r.epoch);
    }
    // The takeover becomes the location's source once its import record is in the object store.
    void this.store
      .waitUploaded(imported.map((i) => i.ptr))
      .then(() => Promise.all(ready.map((r) => this.confirm(r.location).catch(() => undefined))))
      .catch((err) => this.opts.logger.warn({ event: "takeover_not_shipped", locations: ready.length, error: (err as Error).message }, `the import records of ${ready.length} taken-over locations were not shipped (${(err as Error).message}); they are confirmed by their next object-acked write`));
  }

  private async flushConfirms(): Promise<void> {
    this.confirmScheduled = false;
    while (this.confirmQueue.length > 0) {
      const batch = this.confirmQueue.splice(0, this.opts.batchMax);
      this.counters.confirms += 1;
      let stale: Set<string>;
      try {
        stale = new Set(parseConfirmReply(await this.link.request("confirm", { epochs: batch.map((c) => [c.location, c.epoch]) })).stale);
      } catch (err) {
        const e = StrataError.is(err, "UNAVAILABLE") ? new StrataError("TIMEOUT", `the coordinator could not confirm this server still holds the location (${(err as Error).message}); the write is in the object store and may or may not be part of the location's history`) : err;
        for (const c of batch) c.waiter.reject(e);
        continue;
      }
      for (const c of batch) {
        if (stale.has(c.location)) {
          this.counters.staleConfirms += 1;
          if (this.grants.get(c.location) === c.epoch) {
            this.grants.delete(c.location);
            this.startRevs.delete(c.location);
          }
          c.waiter.reject(movedWhileWriting(c.location));
        } else {
          c.waiter.resolve();
        }
      }
    }
  }

  /** A location this server once held now belongs to `owner`: report what it never shipped. */
  private noteMoved(location: string, owner: string): void {
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
    this.opts.logger.warn(
      { event: "location_moved_unshipped", location, to: owner, records, fromSegment: this.fencePoint },
      `location "${location}" moved to server "${owner}" while ${records >= QUARANTINE_COUNT_MAX ? `at least ${records}` : records} of its records here were never shipped; ` +
        `they are not part of its history there, are kept in this server's log (quarantine) and are never served`,
    );
  }

  private noLease(): StrataError {
    return new StrataError("UNAVAILABLE", `server "${this.opts.id}" holds no lease from the coordinator right now; retry (the location is served again by this or another server)`);
  }
}

function movedWhileWriting(location: string): StrataError {
  return new StrataError("TIMEOUT", `location "${location}" moved to another server while this write was committed; it may or may not be part of the location's history (retry with the same msgId to apply it exactly once)`);
}
