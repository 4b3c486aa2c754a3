/**
 * The coordinator's durable state, one LMDB environment (`<dataDir>/coordinator.mdb`):
 *
 * - `assign`:   location → Assignment { server, incarnation, epoch, source?, confirmed } (location-rules.ts)
 * - `byServer`: "<server>\0<location>" → true, the locations of each server (drain walks it)
 * - `servers`:  server id → ServerRecord { incarnation, startedAt, assigned, held, draining, … }
 * - `sys`:      "format", "nextIncarnation"
 *
 * Invariants:
 * - Every change is decided inside a write transaction (`change`) whose callback reads the current
 *   values (earlier decisions of the same batch included) and runs synchronously, so two
 *   concurrent requests can never both decide from the same old value. The changes asked for in
 *   one turn of the event loop are decided one after another in ONE transaction (a batch: one
 *   commit, one flush, and each server record written once however many of its locations
 *   changed). Every reply waits for the commit AND the flush (`root.flushed`) of its batch:
 *   nothing told to anyone is lost by a crash, so an epoch a server was granted (or a client was
 *   told) never goes backwards after a restart.
 * - Grants a decision asks to push (`pushGrant`) are handed to `onGrants` after the batch is
 *   flushed and before any reply of the batch is released: a pushed grant is durable, and it is
 *   published ahead of the reply to the client that will use it.
 * - Readers outside a transaction (locate's fast path) first wait for the flush of any change in
 *   flight for that location (`pending`), so they never answer from a commit that is not durable.
 * - `assigned` (locations assigned to the server) and `held` (of those, bound to its current
 *   incarnation) are changed only in the transaction that changes the assignments they count, and
 *   `byServer` likewise, so all three agree with `assign` after any crash. `held` restarts at 0
 *   with each registration, which binds no location.
 * - Incarnation numbers come from `nextIncarnation`, incremented in the registering transaction:
 *   never reused, always increasing.
 * - The data directory lock (`<dataDir>/LOCK`) keeps a second coordinator process out.
 *
 * Format 2 (this one) came with failover. A format-1 directory (heartbeat era) is migrated in
 * place in one transaction when opened: each location becomes bound to nobody at epoch 0 with its
 * server as confirmed holder, each server gets incarnation 0 (it must register).
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { open, type Database, type RootDatabase } from "lmdb";
import { assert } from "../../assert.js";
import { acquireDataLock } from "../../data-lock.js";
import { StrataError, ioError } from "../../errors.js";
import type { RegisterRequest, ServerLoad } from "../wire/coordinator-protocol.js";
import { batchView, indexKey, type AssignTx, type BatchCache, type Job, type ServerRecord } from "./coordinator-batch.js";
import type { Assignment } from "./location-rules.js";

export type { AssignTx, ServerRecord };

export const COORDINATOR_FORMAT = 2;
const MAP_BYTES = 16 * 1024 * 1024 * 1024;

export interface StateOptions {
  /** Most servers remembered; registrations of further new ids are refused. */
  serversMax: number;
  /** Most changes waiting to become durable at once; beyond, UNAVAILABLE. */
  pendingChangesMax: number;
  /** Wall clock (ms since the epoch), for the informational times in records. */
  now: () => number;
  /**
   * Grants decided with `pushGrant`, per server and incarnation, once their batch is flushed and
   * before its replies go out. Must not throw.
   */
  onGrants?: (server: string, incarnation: number, grants: Array<[string, number]>) => void;
}

export class CoordinatorState {
  private readonly servers = new Map<string, ServerRecord>();
  private readonly pending = new Map<string, Promise<unknown>>();
  private pendingChanges = 0;
  private queue: Job[] = [];
  private batchScheduled = false;
  private batchRunning: Promise<void> | undefined;
  private closed = false;
  private assignedTotal = 0;

  private constructor(
    private readonly root: RootDatabase,
    private readonly assignDb: Database<Assignment, string>,
    private readonly byServerDb: Database<boolean, string>,
    private readonly serverDb: Database<ServerRecord, string>,
    private readonly sys: Database<unknown, string>,
    private readonly releaseLock: () => void,
    private readonly opts: StateOptions,
  ) {}

  static open(dataDir: string, opts: StateOptions): CoordinatorState {
    fs.mkdirSync(dataDir, { recursive: true });
    const release = acquireDataLock(dataDir);
    let root: RootDatabase | undefined;
    try {
      root = open({ path: path.join(dataDir, "coordinator.mdb"), noSubdir: true, maxDbs: 8, mapSize: MAP_BYTES });
      const sys = root.openDB<unknown, string>({ name: "sys", cache: false });
      const state = new CoordinatorState(
        root,
        root.openDB<Assignment, string>({ name: "assign", cache: false }),
        root.openDB<boolean, string>({ name: "byServer", cache: false }),
        root.openDB<ServerRecord, string>({ name: "servers", cache: false }),
        sys,
        release,
        opts,
      );
      const format = sys.get("format");
      if (format === undefined) {
        root.transactionSync(() => {
          sys.put("format", COORDINATOR_FORMAT);
          sys.put("nextIncarnation", 1);
        });
      } else if (format === 1) {
        state.migrateFromFormat1();
      } else if (format !== COORDINATOR_FORMAT) {
        throw new StrataError(
          "CORRUPT",
          `the coordinator data at ${dataDir} has format ${String(format)}; this Strata reads formats 1 and ${COORDINATOR_FORMAT}. Run the Strata version that wrote it, or restore a backup`,
        );
      }
      for (const { value } of state.serverDb.getRange()) state.servers.set(value.id, value);
      state.assignedTotal = (state.assignDb.getStats() as { entryCount?: number }).entryCount ?? 0;
      return state;
    } catch (err) {
      void root?.close();
      release();
      if (StrataError.is(err)) throw err;
      throw new StrataError("CORRUPT", `the coordinator data at ${dataDir} cannot be opened (${(err as Error).message}); restore it from a backup`, { cause: err });
    }
  }

  /** Format 1 → 2, all or nothing (one synchronous transaction, flushed at commit). */
  private migrateFromFormat1(): void {
    this.root.transactionSync(() => {
      const held = new Map<string, number>();
      for (const { key, value } of this.assignDb.getRange()) {
        const old = value as unknown as { server: string };
        this.assignDb.put(key, { server: old.server, incarnation: 0, epoch: 0, confirmed: true });
        this.byServerDb.put(indexKey(old.server, key), true);
        held.set(old.server, (held.get(old.server) ?? 0) + 1);
      }
      for (const { key, value } of this.serverDb.getRange()) {
        const old = value as unknown as { id: string; startedAt: number; firstSeenAt: number; lastHeartbeatAt?: number; load?: ServerLoad };
        this.serverDb.put(key, {
          id: old.id,
          incarnation: 0,
          startedAt: old.startedAt,
          firstSeenAt: old.firstSeenAt,
          registeredAt: old.lastHeartbeatAt ?? old.firstSeenAt,
          assigned: held.get(old.id) ?? 0,
          held: 0,
          draining: false,
          over: false,
          load: old.load ?? {},
        });
      }
      this.sys.put("nextIncarnation", 1);
      this.sys.put("format", COORDINATOR_FORMAT);
    });
  }

  // ─── Servers ──────────────────────────────────────────────────────────────────────

  server(id: string): ServerRecord | undefined {
    return this.servers.get(id);
  }

  serverRecords(): ServerRecord[] {
    return [...this.servers.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Every known server with its current incarnation and whether it ended (what a restarted lease table starts from). */
  knownIncarnations(): Array<[string, number, boolean]> {
    return [...this.servers.values()].map((s) => [s.id, s.incarnation, s.over === true]);
  }

  /** Records the server's last reported load (memory only; it is informational). */
  setLoad(id: string, load: ServerLoad): void {
    const s = this.servers.get(id);
    if (s !== undefined) s.load = load;
  }

  /**
   * A new incarnation for `req.id`, durable before it resolves. `onCommit` runs inside the
   * transaction, right after the record is written, so the caller can switch its lease table in
   * the same synchronous step (no request sees the new record with the old lease or vice versa).
   */
  async register(req: RegisterRequest, onCommit: (incarnation: number) => void): Promise<ServerRecord> {
    assert(!this.closed, "register after close");
    if (!this.servers.has(req.id) && this.servers.size >= this.opts.serversMax) {
      throw new StrataError("TOO_LARGE", `the coordinator already knows ${this.servers.size} servers (serversMax); server "${req.id}" was not registered`);
    }
    return this.write(async () => {
      const record = await this.root.transaction(() => {
        const incarnation = this.sys.get("nextIncarnation") as number;
        const wallNow = this.opts.now();
        const before = this.serverDb.get(req.id);
        const next: ServerRecord = {
          id: req.id,
          incarnation,
          startedAt: req.startedAt,
          firstSeenAt: before?.firstSeenAt ?? wallNow,
          registeredAt: wallNow,
          assigned: before?.assigned ?? 0,
          held: 0,
          draining: false,
          over: false,
          load: req.load,
        };
        if (req.push === true) next.pushKey = randomBytes(18).toString("base64url");
        this.sys.put("nextIncarnation", incarnation + 1);
        this.serverDb.put(req.id, next);
        this.servers.set(req.id, next);
        onCommit(incarnation);
        return next;
      });
      return record;
    });
  }

  async setDraining(id: string, draining: boolean): Promise<void> {
    await this.write(() =>
      this.root.transaction(() => {
        const s = this.serverDb.get(id);
        if (s === undefined || s.draining === draining) return;
        const next = { ...s, draining };
        this.serverDb.put(id, next);
        this.servers.set(id, next);
      }),
    );
  }

  // ─── Assignments ──────────────────────────────────────────────────────────────────

  /** The durable assignment of `location`, after any change in flight for it is flushed. */
  async read(location: string): Promise<Assignment | undefined> {
    const p = this.pending.get(location);
    if (p !== undefined) await p.catch(() => undefined);
    return this.assignDb.get(location);
  }

  /** Assignments on disk (and being written). */
  assignmentCount(): number {
    return this.assignedTotal;
  }

  /** Up to `max` locations assigned to `server`, in key order after `after`. */
  locationsOf(server: string, max: number, after?: string): string[] {
    const prefix = `${server}\u0000`;
    const out: string[] = [];
    for (const key of this.byServerDb.getKeys({ start: after === undefined ? prefix : indexKey(server, after) + "\u0000", end: `${server}\u0001`, limit: max })) {
      out.push(key.slice(prefix.length));
    }
    return out;
  }

  /**
   * Runs `decide` inside one write transaction and resolves with its result once that
   * transaction is committed and flushed. `decide` must not throw for expected outcomes (it
   * returns them); `locations` are the ones it may write, so readers can wait for them.
   * `sync`, if given, gets the result synchronously right after the batch's grants are pushed:
   * a reply sent from there leaves in the same socket write as the pushes (nats.js flushes its
   * outbound buffer once per microtask turn).
   */
  change<T>(locations: readonly string[], decide: (tx: AssignTx) => T, sync?: (result: T) => void): Promise<T> {
    assert(!this.closed, "change after close");
    if (this.pendingChanges >= this.opts.pendingChangesMax) {
      return Promise.reject(new StrataError("UNAVAILABLE", `the coordinator is busy (${this.pendingChanges} changes being recorded); retry shortly`));
    }
    this.pendingChanges += 1;
    const done = new Promise<T>((resolve, reject) =>
      this.queue.push({ decide, sync: sync as ((result: unknown) => void) | undefined, resolve: resolve as (value: unknown) => void, reject }),
    );
    this.scheduleBatch();
    const settled = done.catch(() => undefined);
    for (const location of locations) this.pending.set(location, settled);
    void settled.then(() => {
      for (const location of locations) if (this.pending.get(location) === settled) this.pending.delete(location);
    });
    return done;
  }

  /**
   * Group commit: one batch at a time. A batch starts after this turn's I/O callbacks (every
   * request that arrived with the first one joins it), or, while one is being committed and
   * flushed, right after that one: what arrived meanwhile shares the next commit and flush.
   */
  private scheduleBatch(): void {
    if (this.batchScheduled || this.batchRunning !== undefined) return;
    this.batchScheduled = true;
    setImmediate(() => {
      this.batchScheduled = false;
      this.batchRunning = this.runBatch().finally(() => {
        this.batchRunning = undefined;
        if (this.queue.length > 0) this.scheduleBatch();
      });
    });
  }

  /**
   * Decides every queued change in one transaction, waits for its flush, hands the grants to push
   * to `onGrants`, then settles each change (`sync` first). A decision that throws (a bug: `decide`
   * returns its expected outcomes) fails alone; a failed commit or flush fails the whole batch.
   */
  private async runBatch(): Promise<void> {
    const jobs = this.queue;
    this.queue = [];
    const results: unknown[] = new Array(jobs.length);
    const failed: unknown[] = new Array(jobs.length);
    const cache: BatchCache = { assign: new Map(), servers: new Map(), pushes: new Map() };
    try {
      await this.root.transaction(() => {
        const tx = batchView(
          { assignDb: this.assignDb, byServerDb: this.byServerDb, serverDb: this.serverDb, mirror: this.servers, assignedTotal: () => this.assignedTotal, countNew: () => void (this.assignedTotal += 1) },
          cache,
        );
        for (let i = 0; i < jobs.length; i++) {
          try {
            results[i] = jobs[i]!.decide(tx);
          } catch (err) {
            failed[i] = err ?? new Error("a coordinator decision threw");
          }
        }
        for (const record of cache.servers.values()) this.serverDb.put(record.id, record);
      });
      // The transaction promise resolves at commit; the replies must wait until it is on disk too.
      await this.root.flushed;
    } catch (cause) {
      // The in-memory copies were updated inside the callback; re-read what really committed.
      this.reloadMirror();
      const err = StrataError.is(cause) ? cause : ioError("recording the coordinator's state", cause);
      this.pendingChanges -= jobs.length;
      for (const job of jobs) job.reject(err);
      return;
    }
    this.pendingChanges -= jobs.length;
    const onGrants = this.opts.onGrants;
    if (onGrants !== undefined) {
      for (const [server, byIncarnation] of cache.pushes) for (const [incarnation, grants] of byIncarnation) onGrants(server, incarnation, grants);
    }
    for (let i = 0; i < jobs.length; i++) {
      const job = jobs[i]!;
      if (failed[i] !== undefined) {
        job.reject(failed[i]);
        continue;
      }
      try {
        job.sync?.(results[i]);
      } catch {
        // A reply that cannot be sent now: the caller still gets the result below.
      }
      job.resolve(results[i]);
    }
  }

  /** Runs a write transaction, waits for its flush, and maps failures to IO (reloading the mirror). */
  private async write<T>(run: () => Promise<T>): Promise<T> {
    this.pendingChanges += 1;
    try {
      const result = await run();
      // The transaction promise resolves at commit; the reply must wait until it is on disk too.
      await this.root.flushed;
      return result;
    } catch (cause) {
      // The in-memory copies were updated inside the callback; re-read what really committed.
      this.reloadMirror();
      throw StrataError.is(cause) ? cause : ioError("recording the coordinator's state", cause);
    } finally {
      this.pendingChanges -= 1;
    }
  }

  private reloadMirror(): void {
    try {
      this.servers.clear();
      for (const { value } of this.serverDb.getRange()) this.servers.set(value.id, value);
      this.assignedTotal = (this.assignDb.getStats() as { entryCount?: number }).entryCount ?? 0;
    } catch {
      // Closed under us; nothing to keep in step any more.
    }
  }

  /** Waits for changes in flight, flushes and closes LMDB, releases the data lock. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.pending.values()]);
    // Changes that name no location are not in `pending`; their batch may still be running.
    while (this.batchScheduled || this.batchRunning !== undefined || this.queue.length > 0) {
      await Promise.allSettled([this.batchRunning, new Promise((resolve) => setImmediate(resolve))]);
    }
    try {
      await this.root.flushed;
      await this.root.close();
    } finally {
      this.releaseLock();
    }
  }
}
