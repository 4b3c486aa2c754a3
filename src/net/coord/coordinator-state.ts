/**
 * The coordinator's state: which server holds which location, and which servers exist, kept in
 * one LMDB environment (`<dataDir>/coordinator.mdb`) so that both survive a restart unchanged.
 *
 * Databases:
 * - `assign`:  location → AssignmentRecord. Written once, never moved or removed by this version.
 * - `servers`: server id → ServerRecord (first/last heartbeat, startedAt, last load, assigned count).
 * - `sys`:     "format".
 *
 * Invariants:
 * - An assignment is on disk (committed and flushed) before anyone is told about it, so a reply
 *   can never be contradicted after a crash.
 * - A location has at most one assignment. Within this process a new location's assignment is
 *   "pending" from the moment it is chosen until it is durable; concurrent lookups of the same
 *   location wait for that pending promise instead of choosing again. Across processes the data
 *   directory lock (`<dataDir>/LOCK`) keeps a second coordinator out.
 * - The durable `assigned` count of a server is only ever changed in the same transaction as the
 *   assignment it counts (read-modify-write inside the transaction), so it equals the number of
 *   its assignments even after a crash. Heartbeat writes never overwrite it.
 * - Liveness is in memory (a monotonic deadline per server). After a restart it is seeded from
 *   the last recorded heartbeat, so servers that were live a moment ago stay live without a gap.
 */
import fs from "node:fs";
import path from "node:path";
import { open, type Database, type RootDatabase } from "lmdb";
import { assert } from "../../assert.js";
import { acquireDataLock } from "../../data-lock.js";
import { StrataError, ioError } from "../../errors.js";
import type { Candidate } from "./coordinator-placement.js";
import type { HeartbeatBody, ServerLoad, ServerView } from "../wire/coordinator-protocol.js";

export const COORDINATOR_FORMAT = 1;
const MAP_BYTES = 16 * 1024 * 1024 * 1024;

export interface AssignmentRecord {
  server: string;
  /** Wall-clock ms when the location was first assigned. */
  assignedAt: number;
}

interface ServerRecord {
  id: string;
  startedAt: number;
  firstSeenAt: number;
  lastHeartbeatAt: number;
  assigned: number;
  load: ServerLoad;
}

interface ServerState {
  record: ServerRecord;
  /** Assigned locations including pending ones; what placement weighs. */
  assigned: number;
  /** Monotonic ms until which the server counts as live. */
  liveUntil: number;
  /** Wall-clock ms of the heartbeat last written to disk (heartbeats are written throttled). */
  persistedHeartbeatAt: number;
}

export interface StateOptions {
  serverTtlMs: number;
  /** Most servers remembered; heartbeats from further new ids are refused. */
  serversMax: number;
  /** Most new assignments waiting to become durable at once. */
  pendingAssignmentsMax: number;
  now: () => number;
  monotonicNow: () => number;
}

export class CoordinatorState {
  private readonly servers = new Map<string, ServerState>();
  private readonly pending = new Map<string, Promise<AssignmentRecord>>();
  private closed = false;
  /** Durable assignments plus pending ones; what `assignmentsMax` bounds. */
  private assignedTotal = 0;

  private constructor(
    private readonly root: RootDatabase,
    private readonly assignDb: Database<AssignmentRecord, string>,
    private readonly serverDb: Database<ServerRecord, string>,
    private readonly releaseLock: () => void,
    private readonly opts: StateOptions,
  ) {}

  static open(dataDir: string, opts: StateOptions): CoordinatorState {
    fs.mkdirSync(dataDir, { recursive: true });
    const release = acquireDataLock(dataDir);
    let root: RootDatabase | undefined;
    try {
      root = open({ path: path.join(dataDir, "coordinator.mdb"), noSubdir: true, maxDbs: 4, mapSize: MAP_BYTES });
      const sys = root.openDB<unknown, string>({ name: "sys", cache: false });
      const format = sys.get("format");
      if (format === undefined) {
        root.transactionSync(() => sys.put("format", COORDINATOR_FORMAT));
      } else if (format !== COORDINATOR_FORMAT) {
        throw new StrataError("CORRUPT", `the coordinator data at ${dataDir} has format ${String(format)}; this Strata reads format ${COORDINATOR_FORMAT}`);
      }
      const state = new CoordinatorState(
        root,
        root.openDB<AssignmentRecord, string>({ name: "assign", cache: false }),
        root.openDB<ServerRecord, string>({ name: "servers", cache: false }),
        release,
        opts,
      );
      state.loadServers();
      state.assignedTotal = (state.assignDb.getStats() as { entryCount?: number }).entryCount ?? 0;
      return state;
    } catch (err) {
      void root?.close();
      release();
      if (StrataError.is(err)) throw err;
      throw new StrataError("CORRUPT", `the coordinator data at ${dataDir} cannot be opened (${(err as Error).message}); restore it from a backup`, { cause: err });
    }
  }

  /** Reads every known server (there are few) and seeds liveness from its last heartbeat. */
  private loadServers(): void {
    const wallNow = this.opts.now();
    const mono = this.opts.monotonicNow();
    for (const { value } of this.serverDb.getRange()) {
      const remaining = value.lastHeartbeatAt + this.opts.serverTtlMs - wallNow;
      this.servers.set(value.id, {
        record: value,
        assigned: value.assigned,
        liveUntil: remaining > 0 ? mono + remaining : -Infinity,
        persistedHeartbeatAt: value.lastHeartbeatAt,
      });
    }
  }

  /** The assignment of `location`: a record, a promise while it is being made durable, or undefined. */
  assignment(location: string): AssignmentRecord | Promise<AssignmentRecord> | undefined {
    return this.pending.get(location) ?? this.assignDb.get(location);
  }

  /** Records that `location` belongs to `server`; resolves once that is durable on disk. */
  assign(location: string, server: string): Promise<AssignmentRecord> {
    assert(!this.closed, "assign after close");
    assert(!this.pending.has(location), `location ${location} already has a pending assignment`);
    const state = this.servers.get(server);
    assert(state !== undefined, `assign to unknown server ${server}`);
    if (this.pending.size >= this.opts.pendingAssignmentsMax) {
      return Promise.reject(new StrataError("UNAVAILABLE", `the coordinator is busy (${this.pending.size} new locations being recorded); retry shortly`));
    }
    const record: AssignmentRecord = { server, assignedAt: this.opts.now() };
    state.assigned += 1;
    this.assignedTotal += 1;
    const done = this.commitAssignment(location, record).then(
      () => record,
      (cause: unknown) => {
        state.assigned -= 1;
        this.assignedTotal -= 1;
        throw StrataError.is(cause) ? cause : ioError("recording the assignment", cause);
      },
    );
    const tracked = done.finally(() => this.pending.delete(location));
    this.pending.set(location, tracked);
    return tracked;
  }

  private async commitAssignment(location: string, record: AssignmentRecord): Promise<void> {
    await this.root.transaction(() => {
      assert(this.assignDb.get(location) === undefined, `location ${location} is already assigned on disk`);
      // The server's heartbeat transaction normally precedes this one; should that write have
      // failed, the in-memory record stands in so the count is still kept with the assignment.
      const inMemory = this.servers.get(record.server)?.record;
      assert(inMemory !== undefined, `server ${record.server} must be known before it is assigned locations`);
      const server = this.serverDb.get(record.server) ?? { ...inMemory, assigned: 0 };
      this.assignDb.put(location, record);
      this.serverDb.put(record.server, { ...server, assigned: server.assigned + 1 });
    });
    // The transaction promise resolves at commit; the reply must wait until it is on disk too.
    await this.root.flushed;
  }

  /**
   * Records a heartbeat. A new or restarted server is written at once (it must be on disk before
   * locations are assigned to it); otherwise the heartbeat time is written at most every TTL/4,
   * which bounds both disk writes and how stale the liveness seed after a restart can be.
   */
  heartbeat(hb: HeartbeatBody): "new" | "restarted" | "seen" | "duplicate" {
    assert(!this.closed, "heartbeat after close");
    const wallNow = this.opts.now();
    const liveUntil = this.opts.monotonicNow() + this.opts.serverTtlMs;
    const existing = this.servers.get(hb.id);
    if (existing === undefined && this.servers.size >= this.opts.serversMax) {
      throw new StrataError("TOO_LARGE", `the coordinator already knows ${this.servers.size} servers (serversMax); heartbeat from ${hb.id} ignored`);
    }
    if (existing !== undefined && hb.startedAt < existing.record.startedAt) {
      // A restart only ever moves startedAt forward; an older one means a second process is
      // heartbeating with the same id. Keep the newer record and let the caller warn.
      existing.liveUntil = liveUntil;
      return "duplicate";
    }
    const kind = existing === undefined ? "new" : existing.record.startedAt !== hb.startedAt ? "restarted" : "seen";
    const state: ServerState = existing ?? {
      record: { id: hb.id, startedAt: hb.startedAt, firstSeenAt: wallNow, lastHeartbeatAt: wallNow, assigned: 0, load: hb.load },
      assigned: 0,
      liveUntil,
      persistedHeartbeatAt: -Infinity,
    };
    state.record = { ...state.record, startedAt: hb.startedAt, lastHeartbeatAt: wallNow, load: hb.load };
    state.liveUntil = liveUntil;
    this.servers.set(hb.id, state);
    if (kind !== "seen" || wallNow - state.persistedHeartbeatAt >= this.opts.serverTtlMs / 4) {
      state.persistedHeartbeatAt = wallNow;
      this.persistHeartbeat(state.record);
    }
    return kind;
  }

  private persistHeartbeat(record: ServerRecord): void {
    // Async and batched by lmdb; ordered before any later assignment transaction. The durable
    // `assigned` count is kept from disk: only assignment transactions change it.
    void this.root
      .transaction(() => {
        const onDisk = this.serverDb.get(record.id);
        this.serverDb.put(record.id, { ...record, firstSeenAt: onDisk?.firstSeenAt ?? record.firstSeenAt, assigned: onDisk?.assigned ?? 0 });
      })
      .catch(() => {
        // Liveness is kept in memory; a lost heartbeat write only makes the post-restart seed older.
      });
  }

  /** Assignments on disk and pending, across all servers. */
  assignmentCount(): number {
    return this.assignedTotal;
  }

  isLive(id: string): boolean {
    const s = this.servers.get(id);
    return s !== undefined && s.liveUntil > this.opts.monotonicNow();
  }

  /** Wall-clock ms of the last heartbeat seen from `id`, if it is known at all. */
  lastHeartbeatAt(id: string): number | undefined {
    return this.servers.get(id)?.record.lastHeartbeatAt;
  }

  liveCandidates(): Candidate[] {
    const mono = this.opts.monotonicNow();
    const out: Candidate[] = [];
    for (const s of this.servers.values()) if (s.liveUntil > mono) out.push({ id: s.record.id, assigned: s.assigned });
    return out;
  }

  knownServerIds(): string[] {
    return [...this.servers.keys()].sort();
  }

  view(): ServerView[] {
    const mono = this.opts.monotonicNow();
    return [...this.servers.values()]
      .map((s) => ({
        id: s.record.id,
        live: s.liveUntil > mono,
        assigned: s.assigned,
        startedAt: s.record.startedAt,
        firstSeenAt: s.record.firstSeenAt,
        lastHeartbeatAt: s.record.lastHeartbeatAt,
        load: s.record.load,
      }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Waits for pending assignments, flushes and closes LMDB, releases the data lock. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.pending.values()]);
    try {
      await this.root.flushed;
      await this.root.close();
    } finally {
      this.releaseLock();
    }
  }
}
