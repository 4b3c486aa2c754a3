/**
 * The coordinator's answers to clients and operators, once coordinator.ts has parsed the request:
 * locate (which places a new location, or moves one whose holder can act no more) and the
 * operator's move, drain and servers. What every handler shares, the server-facing handlers and
 * the rule every decision follows (made inside the state's write transaction, replied to only after
 * it is flushed) are in coordinator-handlers.ts.
 *
 * A new location placed on a server that takes pushed grants is granted to it in the same
 * decision (docs/failover.md, "Creation"): the grant is pushed to the server on `P.s.<id>.grant`
 * once durable and before the client is answered, so the first write costs one coordinator round
 * trip. The server still claims whatever it finds no grant for, so a lost push costs only time.
 *
 * Move and drain ask the holder to hand over (`P.s.<id>.handover`) when it may still act on the
 * locations; a holder that cannot act any more (lease over, released, bound to nobody) is not
 * asked, and one that may still act but does not answer is waited out (at most leaseMs +
 * leaseMarginMs), exactly as a death would be.
 */
import { StrataError } from "../../errors.js";
import { HolderError, assignmentsFull, candidates, moveFromEnded, noLiveServer, place, unlessRefused, type CoreDeps } from "./coordinator-handlers.js";
import { created, createdGranted, holderState, movedTo, sourceAfter, type Assignment, type Source } from "./location-rules.js";
import type { DrainReply, LocateReply, MoveReply, ServerView } from "../wire/coordinator-protocol.js";

interface Relocated {
  moved: Array<[string, string]>;
  left: string[];
}

/** Answers `P.coord.locate` (any client) and `P.coord.move`, `drain`, `servers` (operators). */
export class ClientHandlers {
  constructor(private readonly d: CoreDeps) {}

  private waiting(location: string, server: string, until: number, now: number): HolderError {
    return new HolderError(
      server,
      `location "${location}" is held by server "${server}", which is not live; its lease may hold for ${Math.ceil(until - now)} ms more, then the location moves to a live server. Retry then, or start server "${server}" again`,
    );
  }

  /**
   * The holder of `location`, after moving it if its holder can act no more; `admit` runs before a
   * new location is placed. A reply decided in a state batch goes to `early` from inside the batch.
   */
  async locate(location: string, admit: () => void, early?: (reply: LocateReply) => void): Promise<LocateReply> {
    const { state, leases, limits } = this.d;
    const known = await state.read(location);
    if (known !== undefined && leases.isLive(known.server, this.d.clock())) return { server: known.server, epoch: known.epoch };
    if (known === undefined) {
      if (candidates(this.d, this.d.clock()).length === 0) throw noLiveServer(this.d);
      if (state.assignmentCount() >= limits.assignmentsMax) throw assignmentsFull(this.d);
      admit();
    }
    const result = await state.change([location], (tx): LocateReply | StrataError => {
      const now = this.d.clock();
      const a = tx.get(location);
      if (a === undefined) {
        if (tx.assignmentCount() >= limits.assignmentsMax) return assignmentsFull(this.d);
        const target = place(this.d, location, now);
        if (target === undefined) return noLiveServer(this.d);
        // A server that takes pushed grants gets the new location granted now, in this same
        // transaction, and pushed once it is durable, ahead of this reply: its first request
        // needs no claim. Others (and a push that is lost) claim it as before.
        const holder = tx.server(target);
        if (holder?.pushKey !== undefined && leases.isCurrent(target, holder.incarnation, now)) {
          const granted = createdGranted(target, holder.incarnation, leases, now);
          tx.put(location, granted);
          tx.pushGrant(target, granted.incarnation, location, granted.epoch);
          return { server: target, epoch: granted.epoch };
        }
        tx.put(location, created(target));
        return { server: target, epoch: 0 };
      }
      const hs = holderState(a, leases, now);
      if (hs.kind === "live") return { server: a.server, epoch: a.epoch };
      if (hs.kind === "wait") return this.waiting(location, a.server, hs.until, now);
      const target = place(this.d, location, now);
      if (target === undefined) return new HolderError(a.server, `location "${location}" is held by server "${a.server}", which is down, and ${noLiveServer(this.d).message}`);
      moveFromEnded(tx, location, a, target);
      this.d.event({ event: "location_moved", location, from: a.server, to: target, reason: "holder_down" }, `location ${location} moved from ${a.server} (down) to ${target}`);
      return { server: target, epoch: a.epoch };
    }, unlessRefused(early));
    if (result instanceof StrataError) throw result;
    return result;
  }

  // ─── Operator ─────────────────────────────────────────────────────────────────────

  async move(location: string, to: string): Promise<MoveReply> {
    const { state, leases } = this.d;
    const a = await state.read(location);
    if (a === undefined) throw new StrataError("INVALID_ARGUMENT", `location "${location}" has never been placed; there is nothing to move (a client's first request places it)`);
    if (state.server(to) === undefined) throw new StrataError("INVALID_ARGUMENT", `server "${to}" is unknown to this coordinator; name a registered server (see: strata servers)`);
    if (!leases.isLive(to, this.d.clock())) throw new StrataError("UNAVAILABLE", `server "${to}" is not live (its lease is ${leases.status(to, this.d.clock())}); start it, or move to a live server`);
    if (a.server === to) return { server: to, epoch: a.epoch, from: to };
    const r = await this.relocate(a.server, [location], (now) => (leases.isLive(to, now) ? to : undefined));
    const done = r.moved[0];
    if (done === undefined) {
      throw new HolderError(a.server, `location "${location}" could not be moved: its holder "${a.server}" did not hand it over and may still act on it (or "${to}" stopped); retry`);
    }
    const after = await state.read(location);
    return { server: done[1], epoch: after?.epoch ?? a.epoch, from: a.server };
  }

  async drain(server: string): Promise<DrainReply> {
    const { state, limits } = this.d;
    if (state.server(server) === undefined) throw new StrataError("INVALID_ARGUMENT", `server "${server}" is unknown to this coordinator; nothing to drain`);
    if (candidates(this.d, this.d.clock(), server).length === 0) {
      throw new StrataError("UNAVAILABLE", `no other live server to drain "${server}" to; start one and drain again`);
    }
    await state.setDraining(server, true);
    this.d.event({ event: "drain_started", server }, `draining server ${server}`);
    const moved: Array<[string, string]> = [];
    let movedCount = 0;
    let left = 0;
    let after: string | undefined;
    for (;;) {
      const batch = state.locationsOf(server, limits.locationsPerRequestMax, after);
      if (batch.length === 0) break;
      after = batch[batch.length - 1];
      const r = await this.relocate(server, batch, (now, location) => place(this.d, location, now, server));
      movedCount += r.moved.length;
      left += r.left.length;
      for (const m of r.moved) if (moved.length < limits.drainListMax) moved.push(m);
    }
    this.d.event({ event: "drain_finished", server, moved: movedCount, left }, `drained server ${server}: ${movedCount} moved, ${left} left`);
    return { moved: movedCount, locations: moved, left };
  }

  /**
   * Moves `locations` away from `holder` to `target(now, location)`: asks the holder to hand over
   * those it may still act on (current incarnation, live), waits out the lease of those it may
   * act on without answering, and moves the rest at once.
   */
  private async relocate(holder: string, locations: string[], target: (now: number, location: string) => string | undefined): Promise<Relocated> {
    const { state, leases, limits } = this.d;
    const records = await Promise.all(locations.map((l) => state.read(l)));
    let now = this.d.clock();
    const ask: Array<[string, number]> = [];
    const asked = new Map<string, Assignment>();
    let waitUntil = -Infinity;
    records.forEach((a, i) => {
      if (a === undefined || a.server !== holder) return;
      const until = leases.mayActUntil(holder, a.incarnation, now);
      if (now >= until) return;
      if (leases.isLive(holder, now) && a.incarnation === leases.current(holder)) {
        ask.push([locations[i]!, a.epoch]);
        asked.set(locations[i]!, a);
      } else {
        waitUntil = Math.max(waitUntil, until);
      }
    });
    const cuts = new Map<string, number | null>();
    for (let i = 0; i < ask.length; i += limits.locationsPerRequestMax) {
      const part = ask.slice(i, i + limits.locationsPerRequestMax);
      try {
        const reply = await this.d.askHandover(holder, part);
        for (const [l, c] of reply.cuts) if (asked.has(l)) cuts.set(l, c);
      } catch (err) {
        this.d.warn({ event: "handover_failed", server: holder, locations: part.length, error: (err as Error).message }, `server ${holder} did not hand over ${part.length} location(s): ${(err as Error).message}`);
      }
    }
    for (const [l] of ask) if (!cuts.has(l)) waitUntil = Math.max(waitUntil, leases.mayActUntil(holder, asked.get(l)!.incarnation, this.d.clock()));
    now = this.d.clock();
    // A holder that may still act but did not answer is waited out like a death (at most one
    // lease); if it renewed meanwhile it is alive after all, and its locations stay where they are.
    if (waitUntil > now) {
      await this.d.sleep(Math.min(waitUntil - now, limits.leaseMs + limits.leaseMarginMs) + 1);
    }
    return state.change(locations, (tx) => {
      const t = this.d.clock();
      const out: Relocated = { moved: [], left: [] };
      for (const location of locations) {
        const a = tx.get(location);
        if (a === undefined || a.server !== holder) continue;
        let source: Source | undefined;
        const handed = asked.get(location);
        const cut = cuts.get(location);
        if (handed !== undefined && cuts.has(location) && a.incarnation === handed.incarnation && a.epoch === handed.epoch) {
          source = cut === null || cut === undefined ? sourceAfter(a) : { server: a.server, incarnation: a.incarnation, cut };
        } else if (t >= leases.mayActUntil(holder, a.incarnation, t)) {
          source = sourceAfter(a);
          // Moved because its holder can act no more: that incarnation must never renew again.
          if (a.incarnation > 0) tx.endIncarnation(holder, a.incarnation);
        } else {
          out.left.push(location);
          continue;
        }
        const to = target(t, location);
        if (to === undefined || to === holder) {
          out.left.push(location);
          continue;
        }
        tx.put(location, movedTo(a, to, source));
        out.moved.push([location, to]);
        this.d.event({ event: "location_moved", location, from: holder, to, reason: "handover", ...(cut !== undefined && cut !== null ? { cut } : {}) }, `location ${location} moved from ${holder} to ${to}${cut !== undefined && cut !== null ? ` (cut ${cut})` : ""}`);
      }
      return out;
    });
  }

  view(): ServerView[] {
    const now = this.d.clock();
    return this.d.state.serverRecords().map((s) => ({
      id: s.id,
      live: this.d.leases.isLive(s.id, now),
      incarnation: s.incarnation,
      lease: this.d.leases.status(s.id, now) ?? "over",
      leaseLeftMs: Math.max(0, Math.ceil(this.d.leases.leaseEnd(s.id, now) - now)),
      assigned: s.assigned,
      epochsHeld: s.held,
      draining: s.draining,
      startedAt: s.startedAt,
      firstSeenAt: s.firstSeenAt,
      registeredAt: s.registeredAt,
      load: s.load,
    }));
  }
}
