/**
 * What the coordinator answers, request by request, once the wire layer (coordinator.ts) has
 * parsed the request: registrations and renewals (leases), locate, claim, cut, confirm, release,
 * and the operator's move, drain and servers. Each method takes checked values and returns a reply
 * body or throws a StrataError; a `HolderError` also names the server that holds the location.
 *
 * Every decision about a location is made inside the state's write transaction (`state.change`)
 * with the pure rules of location-rules.ts and the lease table of leases.ts, read at that instant
 * of the monotonic clock; the reply is sent only after that transaction is flushed. The lease table
 * lives in memory only: the coordinator builds it at start with every known server renewed "now".
 *
 * Move and drain ask the holder to hand over (`P.s.<id>.handover`) when it may still act on the
 * locations; a holder that cannot act any more (lease over, released, bound to nobody) is not
 * asked, and one that may still act but does not answer is waited out (at most leaseMs +
 * leaseMarginMs), exactly as a death would be.
 */
import { StrataError } from "../../errors.js";
import type { CoordinatorLimits } from "../../limits.js";
import { pickServer, type Candidate } from "./coordinator-placement.js";
import type { AssignTx, CoordinatorState } from "./coordinator-state.js";
import type { LeaseTable } from "./leases.js";
import { claim, confirm, created, fixCut, handoffFor, holderState, movedTo, sourceAfter, type Assignment, type Source } from "./location-rules.js";
import type {
  ClaimReply,
  ClaimRequest,
  ConfirmReply,
  ConfirmRequest,
  CutReply,
  CutRequest,
  DrainReply,
  Grant,
  HandoverReply,
  LocateReply,
  MoveReply,
  OkReply,
  Refusal,
  RegisterReply,
  RegisterRequest,
  ReleaseRequest,
  RenewRequest,
  ServerView,
} from "../wire/coordinator-protocol.js";

/** UNAVAILABLE (or another code) about a location whose holder is known; the reply names it in `Strata-Server`. */
export class HolderError extends StrataError {
  constructor(
    readonly server: string,
    message: string,
    code: "UNAVAILABLE" | "TOO_LARGE" = "UNAVAILABLE",
  ) {
    super(code, message);
  }
}

export interface CoreDeps {
  state: CoordinatorState;
  leases: LeaseTable;
  limits: CoordinatorLimits;
  /** Monotonic ms (performance.now() in production). */
  clock: () => number;
  /** Asks server `id` to let go of these locations; rejects on timeout or no responders. */
  askHandover: (id: string, epochs: Array<[string, number]>) => Promise<HandoverReply>;
  /** Waits `ms` unless the coordinator stops meanwhile. */
  sleep: (ms: number) => Promise<void>;
  warn: (message: string) => void;
  event: (message: string) => void;
}

/**
 * Moves `a` (whose holder can act no more) to `target`, and records in the same transaction that
 * the incarnation it was bound to is over, so a coordinator restart cannot revive that incarnation
 * while another one holds the location (found by the model test: coordinator-lease-model.test.ts).
 */
function moveFromEnded(tx: AssignTx, location: string, a: Assignment, target: string): Assignment {
  const next = movedTo(a, target, sourceAfter(a));
  tx.put(location, next);
  if (a.incarnation > 0) tx.endIncarnation(a.server, a.incarnation);
  return next;
}

interface Relocated {
  moved: Array<[string, string]>;
  left: string[];
}

export class CoordinatorCore {
  constructor(private readonly d: CoreDeps) {}

  // ─── Leases ───────────────────────────────────────────────────────────────────────

  async register(req: RegisterRequest): Promise<RegisterReply> {
    const { state, leases, limits } = this.d;
    const before = state.server(req.id);
    if (before !== undefined && req.startedAt < before.startedAt) {
      this.d.warn(`server "${req.id}" registered with an older startedAt than its current incarnation: two processes may use the same --id; each server needs its own`);
    }
    const record = await state.register(req, (incarnation) => leases.register(req.id, incarnation, this.d.clock()));
    this.d.event(`server ${req.id} ${before === undefined ? "joined" : "registered again"} as incarnation ${record.incarnation}`);
    return { incarnation: record.incarnation, leaseMs: limits.leaseMs, leaseRenewMs: limits.leaseRenewMs, leaseMarginMs: limits.leaseMarginMs };
  }

  renew(req: RenewRequest, receivedAt: number): OkReply {
    if (this.d.leases.renew(req.id, req.incarnation, receivedAt) !== "ok") throw this.fenced(req.id, req.incarnation);
    this.d.state.setLoad(req.id, req.load);
    return { ok: true };
  }

  async release(req: ReleaseRequest): Promise<OkReply> {
    const { leases, state } = this.d;
    if (req.locations === undefined) {
      if (leases.release(req.id, req.incarnation, this.d.clock()) !== "ok") throw this.fenced(req.id, req.incarnation);
      this.d.event(`server ${req.id} released its lease (incarnation ${req.incarnation})`);
      return { ok: true };
    }
    const locations = req.locations;
    const outcome = await state.change(locations, (tx) => {
      if (!leases.isCurrent(req.id, req.incarnation, this.d.clock())) return this.fenced(req.id, req.incarnation);
      for (const location of locations) {
        const a = tx.get(location);
        if (a === undefined || a.server !== req.id || a.incarnation !== req.incarnation) continue;
        tx.put(location, movedTo(a, a.server, sourceAfter(a)));
      }
      return undefined;
    });
    if (outcome !== undefined) throw outcome;
    return { ok: true };
  }

  private fenced(id: string, incarnation: number): StrataError {
    const now = this.d.clock();
    const current = this.d.leases.current(id);
    const why =
      current === undefined
        ? `server "${id}" is not registered with this coordinator`
        : current !== incarnation
          ? `incarnation ${incarnation} of server "${id}" is over (incarnation ${current} registered since)`
          : `the lease of incarnation ${incarnation} of server "${id}" is ${this.d.leases.status(id, now)}`;
    return new StrataError("FENCED", `${why}; stop serving, register again (P.coord.register) and claim your locations anew`);
  }

  // ─── Locations ────────────────────────────────────────────────────────────────────

  /** Live, non-draining servers as placement candidates (`except` left out). */
  private candidates(now: number, except?: string): Candidate[] {
    const out: Candidate[] = [];
    for (const s of this.d.state.serverRecords()) {
      if (s.id !== except && !s.draining && this.d.leases.isLive(s.id, now)) out.push({ id: s.id, assigned: s.assigned });
    }
    return out;
  }

  private place(location: string, now: number, except?: string): string | undefined {
    const c = this.candidates(now, except);
    return c.length === 0 ? undefined : pickServer(location, c);
  }

  noLiveServer(): StrataError {
    const known = this.d.state.serverRecords().map((s) => s.id);
    const which = known.length === 0 ? "no server has ever registered" : `known but not live or draining: ${known.slice(0, 20).join(", ")}`;
    return new StrataError("UNAVAILABLE", `no persistence server is live (${which}); start one with: strata server --id ID --data DIR --nats URL`);
  }

  private waiting(location: string, server: string, until: number, now: number): HolderError {
    return new HolderError(
      server,
      `location "${location}" is held by server "${server}", which is not live; its lease may hold for ${Math.ceil(until - now)} ms more, then the location moves to a live server. Retry then, or start server "${server}" again`,
    );
  }

  describeWait(until: number): string {
    return `for ${Math.max(0, Math.ceil(until - this.d.clock()))} ms more`;
  }

  /** The holder of `location`, after moving it if its holder can act no more; `admit` runs before a new location is placed. */
  async locate(location: string, admit: () => void): Promise<LocateReply> {
    const { state, leases, limits } = this.d;
    const known = await state.read(location);
    if (known !== undefined && leases.isLive(known.server, this.d.clock())) return { server: known.server, epoch: known.epoch };
    if (known === undefined) {
      if (this.candidates(this.d.clock()).length === 0) throw this.noLiveServer();
      if (state.assignmentCount() >= limits.assignmentsMax) throw this.full();
      admit();
    }
    const result = await state.change([location], (tx): LocateReply | StrataError => {
      const now = this.d.clock();
      const a = tx.get(location);
      if (a === undefined) {
        if (tx.assignmentCount() >= limits.assignmentsMax) return this.full();
        const target = this.place(location, now);
        if (target === undefined) return this.noLiveServer();
        tx.put(location, created(target));
        return { server: target, epoch: 0 };
      }
      const hs = holderState(a, leases, now);
      if (hs.kind === "live") return { server: a.server, epoch: a.epoch };
      if (hs.kind === "wait") return this.waiting(location, a.server, hs.until, now);
      const target = this.place(location, now);
      if (target === undefined) return new HolderError(a.server, `location "${location}" is held by server "${a.server}", which is down, and ${this.noLiveServer().message}`);
      moveFromEnded(tx, location, a, target);
      this.d.event(`location ${location} moved from ${a.server} (down) to ${target}`);
      return { server: target, epoch: a.epoch };
    });
    if (result instanceof StrataError) throw result;
    return result;
  }

  private full(): StrataError {
    return new StrataError("TOO_LARGE", `the coordinator holds ${this.d.state.assignmentCount()} locations (assignmentsMax); no new location can be placed. Raise assignmentsMax or run another cluster`);
  }

  async claim(req: ClaimRequest): Promise<ClaimReply> {
    const { state, leases, limits } = this.d;
    const result = await state.change(req.locations, (tx): ClaimReply | StrataError => {
      const now = this.d.clock();
      if (!leases.isCurrent(req.id, req.incarnation, now)) return this.fenced(req.id, req.incarnation);
      const grants = req.locations.map((location): Grant | Refusal => {
        let a = tx.get(location);
        if (a === undefined) {
          if (tx.assignmentCount() >= limits.assignmentsMax) return { location, code: "TOO_LARGE", message: this.full().message };
          a = created(req.id);
          tx.put(location, a);
        } else if (a.server !== req.id && holderState(a, leases, now).kind === "free") {
          const target = this.place(location, now);
          if (target !== undefined) {
            a = moveFromEnded(tx, location, a, target);
            this.d.event(`location ${location} moved from a down server to ${target}`);
          }
        }
        const o = claim(a, req.id, req.incarnation, leases, now, (until) => `for ${Math.max(0, Math.ceil(until - now))} ms more`);
        if (o.kind === "refuse") {
          const r: Refusal = { location, code: o.error.code, message: o.error.message };
          if (o.server !== undefined) r.server = o.server;
          return r;
        }
        if (o.changed) tx.put(location, o.next);
        const g: Grant = { location, epoch: o.next.epoch };
        const h = handoffFor(o.next, req.id);
        if (h !== undefined) g.handoff = h;
        return g;
      });
      return { grants };
    });
    if (result instanceof StrataError) throw result;
    return result;
  }

  async cut(req: CutRequest): Promise<CutReply> {
    const { state, leases } = this.d;
    const result = await state.change([req.location], (tx): CutReply | StrataError => {
      if (!leases.isCurrent(req.id, req.incarnation, this.d.clock())) return this.fenced(req.id, req.incarnation);
      const a = tx.get(req.location);
      const r = fixCut(a, req.id, req.incarnation, req.epoch, req.from, req.cut);
      if (r instanceof StrataError) return r;
      if (r.next !== a) tx.put(req.location, r.next);
      return { cut: r.cut };
    });
    if (result instanceof StrataError) throw result;
    return result;
  }

  async confirm(req: ConfirmRequest): Promise<ConfirmReply> {
    const { state, leases } = this.d;
    // Fast path, no write: every epoch is current and already confirmed (the usual case, one
    // confirm per upload). The records read are durable (read() waits for changes in flight).
    const current = await Promise.all(req.epochs.map(([location]) => state.read(location)));
    if (!leases.isCurrent(req.id, req.incarnation, this.d.clock())) throw this.fenced(req.id, req.incarnation);
    if (req.epochs.every(([, epoch], i) => { const a = current[i]; return a !== undefined && confirm(a, req.id, req.incarnation, epoch) === a; })) return { stale: [] };
    const result = await state.change(
      req.epochs.map(([l]) => l),
      (tx): ConfirmReply | StrataError => {
        if (!leases.isCurrent(req.id, req.incarnation, this.d.clock())) return this.fenced(req.id, req.incarnation);
        const stale: string[] = [];
        for (const [location, epoch] of req.epochs) {
          const a = tx.get(location);
          const next = confirm(a, req.id, req.incarnation, epoch);
          if (next === null) stale.push(location);
          else if (next !== a) tx.put(location, next);
        }
        return { stale };
      },
    );
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
    if (this.candidates(this.d.clock(), server).length === 0) {
      throw new StrataError("UNAVAILABLE", `no other live server to drain "${server}" to; start one and drain again`);
    }
    await state.setDraining(server, true);
    this.d.event(`draining server ${server}`);
    const moved: Array<[string, string]> = [];
    let movedCount = 0;
    let left = 0;
    let after: string | undefined;
    for (;;) {
      const batch = state.locationsOf(server, limits.locationsPerRequestMax, after);
      if (batch.length === 0) break;
      after = batch[batch.length - 1];
      const r = await this.relocate(server, batch, (now, location) => this.place(location, now, server));
      movedCount += r.moved.length;
      left += r.left.length;
      for (const m of r.moved) if (moved.length < limits.drainListMax) moved.push(m);
    }
    this.d.event(`drained server ${server}: ${movedCount} moved, ${left} left`);
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
        this.d.warn(`server ${holder} did not hand over ${part.length} location(s): ${(err as Error).message}`);
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
        this.d.event(`location ${location} moved from ${holder} to ${to}${cut !== undefined && cut !== null ? ` (cut ${cut})` : ""}`);
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
