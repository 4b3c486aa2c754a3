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
 *   finish (up to half of `handoverShipMs`; ./in-flight.ts): what they write is committed before
 *   the seal, so it is below the cut and may be acknowledged. Only then is the grant dropped; a
 *   request still running after that answers TIMEOUT (writes) or UNAVAILABLE (reads) as for a
 *   lost lease.
 * - A handed-over location is remembered with the epoch it was handed over at: a claim answered
 *   with that same epoch (the coordinator has not recorded the move yet) is refused for
 *   `handoverHoldMs`, so a late request cannot bring it back under the old epoch; past that the
 *   coordinator has given up on the handover (it waits at most its handoverTimeoutMs), and the
 *   same epoch means the location stayed here. A handover that cannot ship within
 *   `handoverShipMs` keeps its locations.
 * - Records this server wrote for a location that has moved away, and never shipped, are never
 *   served or deleted: a claim refused in favour of another server reports them
 *   (./unshipped-quarantine.ts keeps that bookkeeping and its invariants).
 * - A grant pushed by the coordinator for a new location (coord-link.ts checked that it names the
 *   current incarnation and carries its key) is taken only for a location this server knows
 *   nothing of right now: not held, not being claimed, not being handed over and not handed over
 *   by this incarnation. Anything else is a stale or duplicate push and is ignored: the claim (or
 *   the grant already held) is the authority. A push that never comes costs one claim.
 * - A watcher's `since` (the revision it rewinds to) is never above where the history it was shown
 *   may differ from this server's: the lowest start of the epochs newer than the one it was shown
 *   changes under, from the location's epoch lineage (../../index/lineage.ts, kept with the
 *   location's rows and carried by every import), and of the current grant.
 * - `ack: "object"` writes are confirmed (one request per upload, batched per turn: ./confirms.ts)
 *   before they are acknowledged: a stale epoch answers TIMEOUT (the write may or may not be part
 *   of the history) and ends the grant.
 */
import { StrataError } from "../../errors.js";
import type { Logger } from "../../logger.js";
import { withTimeout } from "../../with-timeout.js";
import type { Store } from "../../store.js";
import type { CoordLink } from "./coord-link.js";
import { parseClaimReply, parseCutReply } from "../wire/coordinator-parsers.js";
import { isRefusal, type Handoff } from "../wire/coordinator-protocol.js";
import { sinceFor } from "../../index/lineage.js";
import { Confirms, movedWhileWriting } from "./confirms.js";
import { InFlight } from "./in-flight.js";
import { UnshippedQuarantine } from "./unshipped-quarantine.js";
import type { OwnershipStats } from "./ownership-stats.js";

export type { OwnershipStats } from "./ownership-stats.js";

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

export class Ownership {
  private grants = new Map<string, number>();
  /** The location's revision when its current grant began (what a watcher may rewind to). */
  private startRevs = new Map<string, number>();
  /** Locations let go by a handover: the epoch, and until when (monotonic ms) a claim of that epoch is refused. */
  private readonly handedOver = new Map<string, { epoch: number; until: number }>();
  private readonly claiming = new Map<string, Promise<number>>();
  /** Requests admitted and not finished, per location; and locations a handover is draining. */
  private readonly inFlight = new InFlight();
  private claimQueue = new Map<string, Waiter>();
  private claimScheduled = false;
  private readonly confirms: Confirms;
  /** Records never shipped of locations that moved away (./unshipped-quarantine.ts). */
  private readonly unshipped: UnshippedQuarantine;
  /** Locations taken under a new epoch (claims, pushes, takeovers, a handover kept): epoch changes, for the metrics. */
  epochsGranted = 0;
  readonly counters = { claims: 0, pushed: 0, takeovers: 0, takeoverFailures: 0, confirms: 0, staleConfirms: 0, handedOver: 0 };
  private pushesIgnored = 0;

  constructor(
    private readonly link: CoordLink,
    private readonly store: Store,
    private readonly opts: OwnershipOptions,
  ) {
    this.unshipped = new UnshippedQuarantine(store, opts.logger);
    this.confirms = new Confirms(link, opts.batchMax, this.counters, (location, epoch) => {
      if (this.grants.get(location) === epoch) {
        this.grants.delete(location);
        this.startRevs.delete(location);
      }
    });
    link.onGrants((grants) => this.pushed(grants));
  }

  /** Grants the coordinator pushed for new locations of the current incarnation (see the invariants). */
  private pushed(grants: ReadonlyArray<[string, number]>): void {
    for (const [location, epoch] of grants) {
      if (this.grants.has(location) || this.claiming.has(location) || this.inFlight.draining.has(location) || this.handedOver.has(location)) {
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
    const locations = this.unshipped.toCheck(first);
    if (locations === undefined) return; // the store is closing
    for (const location of locations) if (!this.grants.has(location)) void this.claim(location).catch(() => undefined);
  }

  /** A renewal was answered: what is shipped now was shipped while the lease held. */
  renewed(): void {
    this.unshipped.renewed();
  }

  /** The epoch to serve `location` under now, claiming it first when needed; UNAVAILABLE otherwise. */
  admit(location: string): number | Promise<number> {
    if (!this.link.valid()) throw this.noLease();
    if (this.inFlight.draining.has(location)) throw new StrataError("UNAVAILABLE", `location "${location}" is being handed over to another server; retry`);
    const epoch = this.grants.get(location);
    if (epoch !== undefined) return epoch;
    return this.claim(location);
  }

  /** A request admitted for `location` starts running (`finished` when it is done). */
  started(location: string): void {
    this.inFlight.started(location);
  }

  finished(location: string): void {
    this.inFlight.finished(location);
  }

  /** Whether `location` is still held under `epoch` with a valid lease (checked before answering). */
  holds(location: string, epoch: number): boolean {
    return this.link.valid() && this.grants.get(location) === epoch;
  }

  /** The epoch `location` is held under now, if it is held (gates the change feed). */
  heldEpoch(location: string): number | undefined {
    return this.link.valid() ? this.grants.get(location) : undefined;
  }

  /**
   * The revision a watcher last shown changes under `shownEpoch` rewinds to when past it: the
   * lowest start revision of the epochs after `shownEpoch` along the location's lineage, and of
   * the current grant (undefined when the location is not held). Without `shownEpoch` (an older
   * watcher), the current grant's start, as before lineages.
   */
  sinceFor(location: string, shownEpoch: number | undefined): number | undefined {
    const start = this.startRevs.get(location);
    if (start === undefined || shownEpoch === undefined) return start;
    let lineage: ReturnType<Store["lineage"]>;
    try {
      lineage = this.store.lineage(location);
    } catch {
      return start; // the store is closing: the reply will not go out as held anyway
    }
    return sinceFor(lineage, shownEpoch, start);
  }

  /** The incarnation is over: nothing is held any more. */
  clear(): void {
    this.unshipped.ended(this.grants);
    this.grants = new Map();
    this.startRevs = new Map();
    this.handedOver.clear();
  }

  stats(): OwnershipStats {
    return { grants: this.grants.size, ...this.counters, pushesIgnored: this.pushesIgnored + this.link.pushesIgnored, quarantined: this.unshipped.reported() };
  }

  /**
   * Confirms with the coordinator that `location` is still held under the epoch it was written
   * at (after its segment is in the object store, before an `ack: "object"` answer).
   */
  confirm(location: string): Promise<void> {
    const epoch = this.grants.get(location);
    if (epoch === undefined || !this.link.valid()) return Promise.reject(movedWhileWriting(location));
    return this.confirms.confirm(location, epoch);
  }

  /**
   * The coordinator moves `epochs` elsewhere (strata move / drain): stop admitting them, seal and
   * ship everything written so far, and answer the cut (the last segment that holds their history).
   */
  async handover(epochs: ReadonlyArray<[string, number]>): Promise<Array<[string, number]>> {
    const held = epochs.filter(([location, epoch]) => this.grants.get(location) === epoch);
    // Admit nothing more, and let what was admitted finish: it is then below the cut.
    for (const [location] of held) this.inFlight.draining.add(location);
    try {
      await this.inFlight.quiet(held.map(([location]) => location), this.opts.handoverShipMs / 2);
    } finally {
      for (const [location] of held) this.inFlight.draining.delete(location);
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
        if (g.server !== undefined && g.server !== this.opts.id) this.unshipped.noteMoved(location, g.server);
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

  private noLease(): StrataError {
    return new StrataError("UNAVAILABLE", `server "${this.opts.id}" holds no lease from the coordinator right now; retry (the location is served again by this or another server)`);
  }
}
