/**
 * The `Store`: one data directory's segment log and LMDB index, used in-process or served over
 * NATS. It owns the write path (validated handles → commit queue → log → index → change hook),
 * object acknowledgements and sealing, the TTL sweeper, compaction's entry point, metrics and the
 * store's lifecycle (open, close: nothing is accepted once closing, CLOSED).
 * It implements `Engine` (./engine.ts), the narrow interface the handles depend on; its index,
 * log, queue and tier are internal (callers outside the engine use the typed reads instead).
 * Its parts live next to it: the read path (index → verified record, the record reads in
 * ./record-reader.ts) is ./store-reads.ts, the class it extends; opening (recovery and its report
 * in the log, the tier, compactor and timers wired up) is ./store-open.ts; the change feed of
 * `onChange` is ./store-changes.ts. What a server asks of it for ownership and takeovers
 * (fencing, quarantine, handover, import) is in ./store-ownership.ts; the methods here delegate
 * to it in one line each.
 */
import fs from "node:fs";
import path from "node:path";
import { CommitQueue, type Committed } from "./commit-queue.js";
import { resolveStoreConfig, type StoreConfig, type StoreOptions } from "./config.js";
import { acquireDataLock } from "./data-lock.js";
import { StrataError } from "./errors.js";
import { errorFields } from "./logger.js";
import { chunksAbandoned } from "./index/dead-chunks.js";
import * as reads from "./index/index-reads.js";
import { lineageOf, type LineageEntry } from "./index/lineage.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import { removeUnsyncedMarker } from "./index/unsynced-marker.js";
import type { Pointer } from "./log/record.js";
import { SEGMENT_HEADER_BYTES } from "./log/segment-files.js";
import type { SegmentLog } from "./log/segment-log.js";
import { sweepExpired } from "./maintenance.js";
import { AgeSweep } from "./age-sweep.js";
import type { Compactor, CompactOptions, CompactReport } from "./compact.js";
import type { RecoveryReport } from "./recovery.js";
import { ChangeFeed, type ChangeListener } from "./store-changes.js";
import { newCompactor, openIndexAndLog, startStoreMaintenance, startTier } from "./store-open.js";
import { StoreOwnership } from "./store-ownership.js";
import { StoreReads } from "./store-reads.js";
import type { ObjectStore } from "./tier/object-store.js";
import type { Importer } from "./tier/takeover.js";
import type { ImportItem, ImportResult } from "./import-locations.js";
import { noteQuarantine, savedQuarantine, type QuarantineEntry, type QuarantineInfo } from "./index/quarantine.js";
import { KvHandle } from "./kv-handle.js";
import type { Metrics } from "./metrics/metrics.js";
import { StoreMetrics } from "./metrics/store-metrics.js";
import { StreamHandle } from "./stream-handle.js";
import type { AckMode } from "./types.js";
import { validateLocation, validateOptionsObject } from "./validate.js";
import type { WriteOp } from "./write-ops.js";

export type { ChangeListener } from "./store-changes.js";
export type { LargeRead } from "./engine.js";

// Store implements `Engine` structurally (checked where it hands itself to the handles) rather
// than with `implements`: its Engine members are internal, left out of the published .d.ts.
// Its read members are in ./store-reads.ts, the class it extends.
export class Store extends StoreReads {
  private readonly changes = new ChangeFeed(this.config.logger);
  private stopMaintenance: (() => void) | undefined;
  private sweeping = false;
  /** The maxAgeMs part of the sweep, with its round-robin cursor (age-sweep.ts). */
  private readonly ageSweep = new AgeSweep();
  private sealRequested = false;
  private closing: Promise<void> | undefined;
  /** Ownership and takeovers, which the methods below delegate to (store-ownership.ts). */
  private readonly ownership = new StoreOwnership(this, () => this.checkOpen());
  /** @internal Takeovers' reader of other servers' object-store data (tier/takeover.ts), with a tier. */
  importer: Importer | undefined;
  /** @internal Compaction and the reclaim of compacted segments (compact.ts). */
  compactor!: Compactor;

  private constructor(
    config: StoreConfig,
    index: LmdbIndex,
    /** @internal */ readonly log: SegmentLog,
    /** @internal */ readonly queue: CommitQueue,
    readonly recovery: RecoveryReport,
    private readonly releaseLock: () => void,
  ) {
    super(config, index, log);
  }

  static async open(options: StoreOptions): Promise<Store> {
    const config = resolveStoreConfig(options);
    fs.mkdirSync(config.dir, { recursive: true });
    const release = acquireDataLock(config.dir);
    try {
      return await Store.openLocked(config, release, false, options.objectStore);
    } catch (err) {
      release();
      throw err;
    }
  }

  /** Rebuilds the index of a closed data directory from its log (`strata reindex`). */
  static async reindex(options: StoreOptions): Promise<RecoveryReport> {
    const config = resolveStoreConfig({ ...options, sweepTimers: false });
    const release = acquireDataLock(config.dir);
    try {
      // The moved-away quarantine is not in the log (index/quarantine.ts): carried over by hand.
      const carried = await savedQuarantine(path.join(config.dir, "index"), config.logger);
      const store = await Store.openLocked(config, () => undefined, true, options.objectStore);
      try {
        if (carried.length > 0) store.index.write(() => carried.forEach(({ location, ...info }) => noteQuarantine(store.index, location, info)));
      } finally {
        await store.close();
      }
      return store.recovery;
    } finally {
      release();
    }
  }

  private static async openLocked(config: StoreConfig, release: () => void, forceRebuild: boolean, given: ObjectStore | undefined): Promise<Store> {
    const parts = await openIndexAndLog(config, forceRebuild, given);
    const { objects, importer, index, report, log } = parts;
    let store: Store | undefined;
    const queue = new CommitQueue(log, index, config.limits, (batch) => store!.committed(batch), config.clock, config.logger);
    store = new Store(config, index, log, queue, report, release);
    store.importer = importer;
    if (objects) {
      const s = store;
      store.tier = startTier(objects, config, parts, () => s.requestSeal());
    }
    store.compactor = newCompactor(config, parts, store.tier, queue);
    if (config.sweepTimers) store.stopMaintenance = startStoreMaintenance(store, config, log);
    return store;
  }

  stream(location: string): StreamHandle {
    this.checkOpen();
    return new StreamHandle(this, validateLocation(location, this.limits));
  }

  kv(location: string): KvHandle {
    this.checkOpen();
    return new KvHandle(this, validateLocation(location, this.limits));
  }

  /** Reports every committed change, in commit order. Returns a function that unsubscribes. */
  onChange(listener: ChangeListener): () => void {
    return this.changes.add(listener);
  }

  /** @internal Queues a write on the group commit. */
  submit(op: WriteOp): Promise<{ result?: unknown; committed?: Committed }> {
    if (this.closing) return Promise.reject(closedError());
    const chunks = "chunks" in op ? op.chunks : undefined;
    if (chunks === undefined) return this.queue.submit(op);
    // A large value's chunks are referenced only by its set record: when that is not written
    // (refused, failed, or a repeated msgId answered with the original), they are dead at once.
    return this.queue.submit(op).then(
      (outcome) => {
        if (outcome.committed === undefined) this.abandonChunks(chunks);
        return outcome;
      },
      (err: unknown) => {
        this.abandonChunks(chunks);
        throw err;
      },
    );
  }

  /** @internal Marks chunks of a value that will never be made visible as dead (index/dead-chunks.ts). */
  abandonChunks(chunks: Pointer[]): void {
    chunksAbandoned(this.index, chunks);
  }

  /**
   * @internal Completes a write's acknowledgement: for `ack: "object"`, waits until the segment
   * holding the record is in the object store.
   */
  async acked(ack: AckMode, committed: Committed | undefined): Promise<void> {
    if (ack !== "object" || committed === undefined) return;
    if (!this.tier) throw new StrataError("INVALID_ARGUMENT", "ack: \"object\" needs a cold tier; open the store with a tier");
    const rec = committed.record;
    const chunks = (rec.t === "sset" || rec.t === "kset") && rec.chunks ? rec.chunks : [];
    await this.tier.waitRecordsUploaded([...chunks, committed.ptr]);
    if (rec.t !== "chunk") await this.objectCommit?.(rec.loc);
  }

  /**
   * @internal The acknowledgement of a repeated msgId with `ack: "object"`: waits until the
   * original message's record is in the object store. If the message has been deleted since,
   * there is nothing of it left to ship, and the repeat is acknowledged at once.
   */
  async ackedSeq(location: string, seq: number): Promise<void> {
    if (!this.tier) throw new StrataError("INVALID_ARGUMENT", "ack: \"object\" needs a cold tier; open the store with a tier");
    const meta = this.index.meta(location);
    const entry = meta ? reads.streamPointer(this.index, meta.id, seq) : undefined;
    if (entry) await this.tier.waitRecordsUploaded([entry.ptr]);
    await this.objectCommit?.(location);
  }

  /**
   * @internal Set by a server under a coordinator: called after an `ack: "object"` write's segment
   * is in the object store and before the write is acknowledged, to confirm the location is still
   * held under the epoch it was written at (docs/failover.md). A rejection fails the ack.
   */
  objectCommit: ((location: string) => Promise<void>) | undefined;

  /** @internal Ownership and takeovers (store-ownership.ts `firstUnshipped`). */
  firstUnshipped(): number {
    return this.ownership.firstUnshipped();
  }

  /** @internal Ownership and takeovers (store-ownership.ts `recordsFrom`). */
  recordsFrom(location: string, seg: number, max: number): number {
    return this.ownership.recordsFrom(location, seg, max);
  }

  /** @internal Ownership and takeovers (store-ownership.ts `locationsFrom`). */
  locationsFrom(seg: number, max: number): string[] {
    return this.ownership.locationsFrom(seg, max);
  }

  /** @internal Ownership and takeovers (store-ownership.ts `quarantine`). */
  quarantine(location: string, info: Omit<QuarantineInfo, "at">): void {
    this.ownership.quarantine(location, info);
  }

  /** @internal The location's epoch lineage: [epoch, start revision] of each takeover along its chain of owners (index/lineage.ts). */
  lineage(location: string): LineageEntry[] {
    return lineageOf(this.index, location);
  }

  /** @internal Ownership and takeovers (store-ownership.ts `unquarantine`). */
  unquarantine(location: string): void {
    this.ownership.unquarantine(location);
  }

  /** Locations that moved away while this store held records of them it never shipped (`strata stat` lists them too). */
  quarantined(): QuarantineEntry[] {
    return this.ownership.quarantined();
  }

  /** @internal Ownership and takeovers (store-ownership.ts `shipAll`). */
  shipAll(): Promise<number> {
    return this.ownership.shipAll();
  }

  /**
   * Takes locations over from another server's object-store data (docs/failover.md, step 6): each
   * location is reset here and becomes what `from`'s segments up to `cut` (inclusive) hold of it,
   * pointing at `from`'s segments (no value is copied). Resolves once every import record is
   * fsync'd and applied; the location is then served from this store. An origin with nothing in
   * the object store gives an empty location. Needs a tier (INVALID_ARGUMENT without one).
   */
  importLocations(items: ImportItem[]): Promise<ImportResult[]> {
    return this.ownership.importLocations(items);
  }

  /** The last segment of server `from` in the object store (a takeover's cut), undefined when it has none. */
  lastSegmentOf(from: string): Promise<number | undefined> {
    return this.ownership.lastSegmentOf(from);
  }

  /** Resolves once the records at `ptrs` (e.g. import records) are in the object store. */
  waitUploaded(ptrs: Pointer[]): Promise<void> {
    return this.ownership.waitUploaded(ptrs);
  }

  /** @internal Refuses `ack: "object"` up front when there is no tier, before anything is written. */
  checkAck(ack: AckMode): void {
    if (ack === "object" && !this.tier) {
      throw new StrataError("INVALID_ARGUMENT", "ack: \"object\" needs a cold tier; open the store with { tier: \"dir:/path\" } or --tier");
    }
  }

  /**
   * Seals the active segment now if it holds records (it is then shipped to the tier). No batch is
   * in flight here and every record is in the index, so the index checkpoint moves to the start of
   * the new active segment: the sealed one is then wholly behind it, which compaction requires of
   * its inputs (docs/compaction.md), and a checkpoint never names a segment compaction may replace.
   */
  sealActive(): Promise<void> {
    return this.queue.exclusive(() => {
      // The switch is immediate; `sealed` settles once the segment left behind is sealed (its zero
      // tail cut) and announced to the tier, which is what a caller of sealActive waits for.
      const sealed = this.log.activeSize > SEGMENT_HEADER_BYTES ? this.log.roll() : undefined;
      const cp = this.index.checkpoint();
      if (cp !== undefined && cp.seg < this.log.activeId && this.log.activeSize === SEGMENT_HEADER_BYTES) {
        this.index.write(() => this.index.setCheckpoint({ seg: this.log.activeId, off: SEGMENT_HEADER_BYTES }));
      }
      return sealed;
    }).then(() => undefined);
  }

  private requestSeal(): void {
    if (this.sealRequested) return;
    this.sealRequested = true;
    // Object-ack writes issued together share one seal and one upload.
    setImmediate(() => {
      this.sealRequested = false;
      if (!this.closing) this.sealActive().catch((err) => this.config.logger.warn({ event: "seal_failed", ...errorFields(err) }, `sealing failed: ${(err as Error).message}`));
    });
  }

  private committed(batch: Committed[]): void {
    this.metrics?.committed(batch);
    this.changes.publish(batch);
  }

  /**
   * Turns kv entries whose TTL has passed into expiry records (they are already invisible to
   * reads), forgets msgIds older than the dedup window and drops stream messages older than their
   * stream's maxAgeMs (age-sweep.ts). Runs on a timer; tests call it directly.
   */
  async sweep(): Promise<{ expired: number }> {
    if (this.sweeping || this.closing) return { expired: 0 };
    this.sweeping = true;
    try {
      const expired = await sweepExpired(this, this.index);
      await this.ageSweep.run({ limits: this.limits, now: () => this.now(), submit: (op) => this.submit(op), readStreamRun: (l, e, s) => this.readStreamRun(l, e, s), logger: this.config.logger }, this.index);
      return { expired };
    } finally {
      this.sweeping = false;
    }
  }

  /**
   * Compacts sealed segments (docs/compaction.md): rewrites runs of them without the records the
   * index no longer needs, switches the index to the outputs and reclaims the inputs that nothing
   * needs any more. One compaction at a time (this waits for a background one). `sealActive`
   * seals the active segment first (with a tier: waits for its upload and a checkpoint, so it is
   * eligible); `all` (default true) compacts every eligible run whatever its dead fraction.
   */
  async compact(opts: CompactOptions = {}): Promise<CompactReport> {
    this.checkOpen();
    const o = validateOptionsObject(opts, ["dryRun", "sealActive", "all", "onProgress"], "compact");
    for (const flag of ["dryRun", "sealActive", "all"]) {
      if (o[flag] !== undefined && typeof o[flag] !== "boolean") throw new StrataError("INVALID_ARGUMENT", `compact option ${flag} must be true or false`);
    }
    if (o.onProgress !== undefined && typeof o.onProgress !== "function") throw new StrataError("INVALID_ARGUMENT", "compact option onProgress must be a function");
    return this.compactor.compact(opts, async () => {
      await this.sealActive();
      if (this.tier) {
        await this.tier.drained();
        await this.tier.checkpoint();
      }
    });
  }

  /**
   * Records this store's metrics into `metrics` (src/metrics/store-metrics.ts): a server calls it
   * with its registry; an in-process user may too. Once per store.
   */
  instrument(metrics: Metrics): void {
    this.checkOpen();
    if (this.metrics !== undefined) throw new StrataError("INVALID_ARGUMENT", "this store already records its metrics into a registry");
    const index = this.index;
    const entries = (db: { getStats(): unknown }) => (db.getStats() as { entryCount?: number }).entryCount ?? 0;
    const m = new StoreMetrics(metrics, {
      queueDepth: () => this.queue.depth,
      locations: () => entries(index.locs),
      dedupEntries: () => entries(index.dedup),
      fsyncs: () => this.log.fsyncCount,
    });
    this.queue.metrics = m;
    const tier = this.tier;
    if (tier) {
      m.tier({ stats: () => tier.stats, cacheBytes: () => tier.localBytes, cacheLimitBytes: this.limits.cacheBytes });
      tier.metrics = m;
    }
    this.metrics = m;
  }

  /** Number of fsyncs and of committed records so far (the benchmark reports fsyncs per write). */
  stats(): { fsyncs: number; records: number; batches: number } {
    return { fsyncs: this.log.fsyncCount, ...this.queue.stats };
  }

  /** Finishes the writes in flight, then closes the log and index. Later calls wait for the same close. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopMaintenance?.();
      await this.compactor.close();
      this.queue.requestClose();
      await this.queue.idle();
      try {
        await this.importer?.close().catch(() => undefined);
        if (this.tier) {
          // Ship what is dirty so that a restore elsewhere finds it; bounded by closeUploadWaitMs.
          if (this.log.activeSize > SEGMENT_HEADER_BYTES) await this.queue.exclusive(() => this.log.roll()).catch(() => undefined);
          await this.tier.close();
        }
      } finally {
        this.queue.fail(closedError());
        try {
          await this.log.close();
          await this.index.close();
          removeUnsyncedMarker(this.index.dir);
        } finally {
          this.releaseLock();
        }
      }
    })();
    return this.closing;
  }

  get closed(): boolean {
    return this.closing !== undefined;
  }

  protected override checkOpen(): void {
    if (this.closing) throw closedError();
  }
}

function closedError(): StrataError {
  return new StrataError("CLOSED", "the store is closed; open it again to continue");
}

