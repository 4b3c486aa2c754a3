/**
 * What the coordinator decides about one location, as pure functions of its assignment record and
 * the lease table (leases.ts) at one instant. The coordinator runs them inside the LMDB write
 * transaction that records the outcome (coordinator-state.ts), and the model test runs the very
 * same functions against a simulated clock.
 *
 * Invariants kept here (docs/failover.md):
 * - The epoch of a location only grows, and grows exactly when it is granted to another
 *   incarnation than the one it is bound to.
 * - A location is granted only to an incarnation of the server it is assigned to, and only when
 *   no other incarnation may still act on it (incarnation 0 means "bound to nobody").
 * - A location moves to another server only when its holder can no longer act on it (lease over,
 *   or it handed the location over); the move records `source` — where the history is — and the
 *   grant that follows carries it as `handoff` when it lies with another server id.
 * - The cut of a handoff is fixed once: the first proposal wins.
 * - The source becomes the holder only when the holder confirms its epoch (its import is uploaded).
 * - A new location may be granted in the very decision that places it (`createdGranted`): no
 *   incarnation can have acted on a location that did not exist.
 */
import { assert } from "../../assert.js";
import { StrataError } from "../../errors.js";
import type { LeaseTable } from "./leases.js";
import type { Handoff } from "../wire/coordinator-protocol.js";

export interface Source {
  server: string;
  incarnation: number;
  /** The last segment of `server`'s log that belongs to the location; fixed once. */
  cut?: number;
}

export interface Assignment {
  server: string;
  /** The incarnation the location is granted to; 0 = granted to no incarnation yet. */
  incarnation: number;
  epoch: number;
  /** Where the location's history is, when it is not (yet) the holder itself. */
  source?: Source;
  /** The holder's takeover is confirmed (or there was nothing to take over). */
  confirmed: boolean;
}

/** A new location, placed on `server`: nothing to take over. */
export function created(server: string): Assignment {
  return { server, incarnation: 0, epoch: 0, confirmed: true };
}

/**
 * A new location placed on `server` and granted at once to its current incarnation `incarnation`
 * (live: the caller placed it there): exactly what that incarnation's first claim of
 * `created(server)` would record, decided by `claim` itself, so the two paths cannot differ.
 */
export function createdGranted(server: string, incarnation: number, leases: LeaseTable, now: number): Assignment {
  const o = claim(created(server), server, incarnation, leases, now, () => "");
  assert(o.kind === "grant", "a location bound to nobody is granted to any incarnation of its server");
  return o.next;
}

export type HolderState =
  /** The assigned server's current lease holds: it keeps the location. */
  | { kind: "live" }
  /** Nobody can act on the location any more: it may be moved at once. */
  | { kind: "free" }
  /** The holder is not live, but the incarnation bound to it may still act until `until`. */
  | { kind: "wait"; until: number };

export function holderState(a: Assignment, leases: LeaseTable, now: number): HolderState {
  if (leases.isLive(a.server, now)) return { kind: "live" };
  const until = leases.mayActUntil(a.server, a.incarnation, now);
  return now >= until ? { kind: "free" } : { kind: "wait", until };
}

/** Where the history lies once the current holder lets go: itself if it took over (or served), else its source. */
export function sourceAfter(a: Assignment, cut?: number): Source | undefined {
  if (a.confirmed && a.incarnation > 0) return cut === undefined ? { server: a.server, incarnation: a.incarnation } : { server: a.server, incarnation: a.incarnation, cut };
  return a.source;
}

/** `a` reassigned to `target`, granted to nobody yet; the epoch is bumped by the grant, not here. */
export function movedTo(a: Assignment, target: string, source: Source | undefined): Assignment {
  const next: Assignment = { server: target, incarnation: 0, epoch: a.epoch, confirmed: source === undefined || source.server === target };
  if (source !== undefined) next.source = source;
  return next;
}

/** The handoff a grant to server `id` carries: only when the history lies with another server id. */
export function handoffFor(a: Assignment, id: string): Handoff | undefined {
  if (a.source === undefined || a.source.server === id) return undefined;
  const h: Handoff = { from: a.source.server, incarnation: a.source.incarnation };
  if (a.source.cut !== undefined) h.cut = a.source.cut;
  return h;
}

export type ClaimOutcome =
  | { kind: "grant"; next: Assignment; changed: boolean }
  | { kind: "refuse"; error: StrataError; server?: string };

/**
 * A claim by the current incarnation `incarnation` of server `id` for a location assigned to `id`
 * (the caller resolves moves and new locations first).
 */
export function claim(a: Assignment, id: string, incarnation: number, leases: LeaseTable, now: number, describeWait: (until: number) => string): ClaimOutcome {
  if (a.server !== id) {
    return { kind: "refuse", server: a.server, error: new StrataError("UNAVAILABLE", `the location is assigned to server "${a.server}", not "${id}"; stop serving it`) };
  }
  if (a.incarnation === incarnation) return { kind: "grant", next: a, changed: false };
  if (a.incarnation !== 0) {
    const until = leases.mayActUntil(id, a.incarnation, now);
    if (now < until) {
      return {
        kind: "refuse",
        server: id,
        error: new StrataError("UNAVAILABLE", `the location is still granted to incarnation ${a.incarnation} of server "${id}", whose lease may hold ${describeWait(until)}; claim it again then`),
      };
    }
  }
  const next: Assignment = { ...a, incarnation, epoch: a.epoch + 1, confirmed: a.confirmed || handoffFor(a, id) === undefined };
  return { kind: "grant", next, changed: true };
}

/** Confirms `epoch` for incarnation `incarnation` of `id`: null when stale, else the (maybe unchanged) record. */
export function confirm(a: Assignment | undefined, id: string, incarnation: number, epoch: number): Assignment | null {
  if (a === undefined || a.server !== id || a.incarnation !== incarnation || a.epoch !== epoch) return null;
  if (a.confirmed && a.source?.server === id) return a;
  return { server: id, incarnation, epoch, confirmed: true, source: { server: id, incarnation } };
}

/** Fixes the cut of the handoff from `from` (the first proposal wins); a refusal is a CONFLICT. */
export function fixCut(a: Assignment | undefined, id: string, incarnation: number, epoch: number, from: string, cut: number): { next: Assignment; cut: number } | StrataError {
  if (a === undefined || a.server !== id || a.incarnation !== incarnation) {
    return new StrataError("CONFLICT", `the location is not granted to incarnation ${incarnation} of server "${id}"; claim it first`);
  }
  if (a.epoch !== epoch) return new StrataError("CONFLICT", `epoch ${epoch} is stale: the location is at epoch ${a.epoch}`);
  const h = a.confirmed ? undefined : handoffFor(a, id);
  if (h === undefined || h.from !== from) {
    return new StrataError("CONFLICT", `the grant of this location has no handoff from server "${from}"${h ? ` (it comes from "${h.from}")` : ""}; nothing to cut`);
  }
  if (h.cut !== undefined) return { next: a, cut: h.cut };
  return { next: { ...a, source: { ...a.source!, cut } }, cut };
}
