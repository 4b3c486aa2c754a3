/**
 * What the coordinator answers, request by request, once the wire layer (coordinator.ts) has
 * parsed the request. This file holds what every handler shares (their dependencies, HolderError,
 * placement on live servers, moving a location off a holder that can act no more) and the
 * server-facing handlers: registrations and renewals (leases), claim, cut, confirm and release.
 * The client- and operator-facing ones (locate, move, drain, servers) are in
 * coordinator-client-handlers.ts. Each method takes checked values and returns a reply body or
 * throws a StrataError; a `HolderError` also names the server that holds the location.
 *
 * Every decision about a location is made inside the state's write transaction (`state.change`)
 * with the pure rules of location-rules.ts and the lease table of leases.ts, read at that instant
 * of the monotonic clock; the reply is sent only after that transaction is flushed. The lease table
 * lives in memory only: the coordinator builds it at start with every known server renewed "now".
 */
import { StrataError } from "../../errors.js";
import type { CoordinatorLimits } from "../../limits.js";
import type { LogFields } from "../../logger.js";
import { pickServer, type Candidate } from "./coordinator-placement.js";
import type { AssignTx, CoordinatorState } from "./coordinator-state.js";
import type { LeaseTable } from "./leases.js";
import { claim, confirm, created, fixCut, handoffFor, holderState, movedTo, sourceAfter, type Assignment } from "./location-rules.js";
import type {
  ClaimReply,
  ClaimRequest,
  ConfirmReply,
  ConfirmRequest,
  CutReply,
  CutRequest,
  Grant,
  HandoverReply,
  OkReply,
  Refusal,
  RegisterReply,
  RegisterRequest,
  ReleaseRequest,
  RenewRequest,
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
  /** A warning event (throttled by the coordinator). */
  warn: (fields: LogFields, message: string) => void;
  /** A notable event (info): a server joined, a location moved. */
  event: (fields: LogFields, message: string) => void;
}

/**
 * Moves `a` (whose holder can act no more) to `target`, and records in the same transaction that
 * the incarnation it was bound to is over, so a coordinator restart cannot revive that incarnation
 * while another one holds the location (found by the model test: coordinator-lease-model.test.ts).
 */
export function moveFromEnded(tx: AssignTx, location: string, a: Assignment, target: string): Assignment {
  const next = movedTo(a, target, sourceAfter(a));
  tx.put(location, next);
  if (a.incarnation > 0) tx.endIncarnation(a.server, a.incarnation);
  return next;
}

/** What a handler's decision hands to `early` from inside the state's batch: a reply, never a refusal. */
export function unlessRefused<T>(early: ((reply: T) => void) | undefined): ((result: T | StrataError) => void) | undefined {
  if (early === undefined) return undefined;
  return (result) => {
    if (!(result instanceof StrataError)) early(result);
  };
}

/** Live, non-draining servers as placement candidates (`except` left out). */
export function candidates(d: CoreDeps, now: number, except?: string): Candidate[] {
  const out: Candidate[] = [];
  for (const s of d.state.serverRecords()) {
    if (s.id !== except && !s.draining && d.leases.isLive(s.id, now)) out.push({ id: s.id, assigned: s.assigned });
  }
  return out;
}

export function place(d: CoreDeps, location: string, now: number, except?: string): string | undefined {
  const c = candidates(d, now, except);
  return c.length === 0 ? undefined : pickServer(location, c);
}

export function noLiveServer(d: CoreDeps): StrataError {
  const known = d.state.serverRecords().map((s) => s.id);
  const which = known.length === 0 ? "no server has ever registered" : `known but not live or draining: ${known.slice(0, 20).join(", ")}`;
  return new StrataError("UNAVAILABLE", `no persistence server is live (${which}); start one with: strata server --id ID --data DIR --nats URL`);
}

/** TOO_LARGE: no new location can be placed (`assignmentsMax`). */
export function assignmentsFull(d: CoreDeps): StrataError {
  return new StrataError("TOO_LARGE", `the coordinator holds ${d.state.assignmentCount()} locations (assignmentsMax); no new location can be placed. Raise assignmentsMax or run another cluster`);
}

/** Answers a server's own requests: `P.coord.register`, `renew`, `claim`, `cut`, `confirm`, `release`. */
export class ServerHandlers {
  constructor(private readonly d: CoreDeps) {}

  // ─── Leases ───────────────────────────────────────────────────────────────────────

  async register(req: RegisterRequest): Promise<RegisterReply> {
    const { state, leases, limits } = this.d;
    const before = state.server(req.id);
    if (before !== undefined && req.startedAt < before.startedAt) {
      this.d.warn({ event: "server_id_reused", server: req.id, startedAt: req.startedAt, currentStartedAt: before.startedAt }, `server "${req.id}" registered with an older startedAt than its current incarnation: two processes may use the same --id; each server needs its own`);
    }
    const record = await state.register(req, (incarnation) => leases.register(req.id, incarnation, this.d.clock()));
    this.d.event({ event: before === undefined ? "server_joined" : "server_registered_again", server: req.id, incarnation: record.incarnation }, `server ${req.id} ${before === undefined ? "joined" : "registered again"} as incarnation ${record.incarnation}`);
    const reply: RegisterReply = { incarnation: record.incarnation, leaseMs: limits.leaseMs, leaseRenewMs: limits.leaseRenewMs, leaseMarginMs: limits.leaseMarginMs };
    if (record.pushKey !== undefined) reply.grantKey = record.pushKey;
    return reply;
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
      this.d.event({ event: "server_left", server: req.id, incarnation: req.incarnation }, `server ${req.id} released its lease (incarnation ${req.incarnation})`);
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

  describeWait(until: number): string {
    return `for ${Math.max(0, Math.ceil(until - this.d.clock()))} ms more`;
  }

  /** Grants, refuses or moves each location; a reply decided in a state batch goes to `early` from inside it. */
  async claim(req: ClaimRequest, early?: (reply: ClaimReply) => void): Promise<ClaimReply> {
    const { state, leases, limits } = this.d;
    const result = await state.change(req.locations, (tx): ClaimReply | StrataError => {
      const now = this.d.clock();
      if (!leases.isCurrent(req.id, req.incarnation, now)) return this.fenced(req.id, req.incarnation);
      const grants = req.locations.map((location): Grant | Refusal => {
        let a = tx.get(location);
        if (a === undefined) {
          if (tx.assignmentCount() >= limits.assignmentsMax) return { location, code: "TOO_LARGE", message: assignmentsFull(this.d).message };
          a = created(req.id);
          tx.put(location, a);
        } else if (a.server !== req.id && holderState(a, leases, now).kind === "free") {
          const target = place(this.d, location, now);
          if (target !== undefined) {
            a = moveFromEnded(tx, location, a, target);
            this.d.event({ event: "location_moved", location, from: a.server, to: target, reason: "holder_down" }, `location ${location} moved from a down server to ${target}`);
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
    }, unlessRefused(early));
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
}
