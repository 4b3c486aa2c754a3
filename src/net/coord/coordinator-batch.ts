/**
 * One batch of the coordinator's decisions inside its LMDB write transaction (coordinator-state.ts
 * `change` queues them, runs a batch per turn and settles it after the flush): the records a
 * decision reads and writes, and the view (`AssignTx`) through which it does.
 *
 * Invariants:
 * - Decisions of a batch run one after another and each reads through the batch's cache, so it
 *   sees exactly what the decisions before it wrote, as separate transactions in that order would.
 * - `assigned` and `held` of a server record, the `byServer` index and `assign` change together in
 *   `put`; a server record changed by the batch is written once, at the end of the batch's
 *   transaction (coordinator-state.ts), and mirrored in memory at once.
 */
import type { Database } from "lmdb";
import { assert } from "../../assert.js";
import type { ServerLoad } from "../wire/coordinator-protocol.js";
import type { Assignment } from "./location-rules.js";

export interface ServerRecord {
  id: string;
  /** The current incarnation; 0 for a server known from format 1 that has not registered since. */
  incarnation: number;
  startedAt: number;
  firstSeenAt: number;
  /** Wall-clock ms of the current incarnation's registration. */
  registeredAt: number;
  /** Locations assigned to it. */
  assigned: number;
  /** Of those, how many are bound to its current incarnation. */
  held: number;
  /** Set by a drain; placement skips it until it registers again. */
  draining: boolean;
  /**
   * The current incarnation's lease ended and a location was moved away from it: it must stay
   * over after a restart (see leases.ts). Reset by the next registration.
   */
  over: boolean;
  load: ServerLoad;
  /**
   * The current incarnation takes pushed grants (it registered with `push`): locate grants new
   * locations to it at once, and every push carries this key (a push from anyone else is ignored).
   */
  pushKey?: string;
}

/** What a decision may read and write inside its transaction. */
export interface AssignTx {
  get(location: string): Assignment | undefined;
  /** Writes `next` for `location`, keeping counts and the server index in step. */
  put(location: string, next: Assignment): void;
  server(id: string): ServerRecord | undefined;
  /** Assignments in total (what `assignmentsMax` bounds), this transaction's writes included. */
  assignmentCount(): number;
  /** Records that `incarnation` (if still `id`'s current one) is over for good. */
  endIncarnation(id: string, incarnation: number): void;
  /** Asks for `location`'s grant to `server`'s `incarnation` at `epoch` to be pushed once durable. */
  pushGrant(server: string, incarnation: number, location: string, epoch: number): void;
}

export interface Job {
  decide: (tx: AssignTx) => unknown;
  /** Called with the result right after the batch's pushes are published (see `change`). */
  sync: ((result: unknown) => void) | undefined;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** What one batch has read and written, so each record is decoded and encoded at most once. */
export interface BatchCache {
  assign: Map<string, Assignment | undefined>;
  /** Server records changed by the batch, written once at its end. */
  servers: Map<string, ServerRecord>;
  /** server → incarnation → grants to push. */
  pushes: Map<string, Map<number, Array<[string, number]>>>;
}

/** The databases and in-memory mirrors a batch writes through. */
export interface BatchStores {
  assignDb: Database<Assignment, string>;
  byServerDb: Database<boolean, string>;
  serverDb: Database<ServerRecord, string>;
  /** The in-memory copy of every server record, kept equal to what the transaction wrote. */
  mirror: Map<string, ServerRecord>;
  /** Assignments in total, this batch's new ones included. */
  assignedTotal: () => number;
  /** One more assignment. */
  countNew: () => void;
}

/**
 * The view of one batch's transaction. Reads and writes of assignments go through the batch's
 * cache (the decisions before in the batch are seen); server records changed are kept there and
 * written once at the end of the batch, and mirrored in `servers` at once as before.
 */
export function batchView(stores: BatchStores, cache: BatchCache): AssignTx {
  const getAssign = (location: string): Assignment | undefined => {
    if (cache.assign.has(location)) return cache.assign.get(location);
    const a = stores.assignDb.get(location);
    cache.assign.set(location, a);
    return a;
  };
  const getServer = (id: string): ServerRecord | undefined => cache.servers.get(id) ?? stores.serverDb.get(id);
  /** The batch's own copy of a server record, changed in place (one copy per server per batch). */
  const ownServer = (id: string): ServerRecord | undefined => {
    const mine = cache.servers.get(id);
    if (mine !== undefined) return mine;
    const stored = stores.serverDb.get(id);
    if (stored === undefined) return undefined;
    const copy = { ...stored };
    cache.servers.set(id, copy);
    stores.mirror.set(id, copy);
    return copy;
  };
  return {
    get: getAssign,
    server: (id) => stores.mirror.get(id),
    assignmentCount: stores.assignedTotal,
    endIncarnation: (id, incarnation) => {
      const s = getServer(id);
      if (s === undefined || s.incarnation !== incarnation || s.over === true) return;
      ownServer(id)!.over = true;
    },
    pushGrant: (server, incarnation, location, epoch) => {
      let byIncarnation = cache.pushes.get(server);
      if (byIncarnation === undefined) cache.pushes.set(server, (byIncarnation = new Map()));
      let list = byIncarnation.get(incarnation);
      if (list === undefined) byIncarnation.set(incarnation, (list = []));
      list.push([location, epoch]);
    },
    put: (location, next) => {
      const before = getAssign(location);
      const to = ownServer(next.server);
      assert(to !== undefined, `server ${next.server} must be known before it is assigned locations`);
      if (before !== undefined) {
        const from = ownServer(before.server);
        assert(from !== undefined, `server ${before.server} of an assignment must be known`);
        from.assigned -= before.server !== next.server ? 1 : 0;
        from.held -= heldBy(before, from) ? 1 : 0;
        if (before.server !== next.server) stores.byServerDb.remove(indexKey(before.server, location));
      } else {
        stores.countNew();
      }
      to.assigned += before === undefined || before.server !== next.server ? 1 : 0;
      to.held += heldBy(next, to) ? 1 : 0;
      if (before === undefined || before.server !== next.server) stores.byServerDb.put(indexKey(next.server, location), true);
      stores.assignDb.put(location, next);
      cache.assign.set(location, next);
    },
  };
}

function heldBy(a: Assignment, server: ServerRecord): boolean {
  return a.incarnation > 0 && a.incarnation === server.incarnation && a.server === server.id;
}

export function indexKey(server: string, location: string): string {
  return `${server}\u0000${location}`;
}
