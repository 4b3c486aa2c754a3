/**
 * The `Store`: one data directory's segment log and LMDB index, used in-process or served over
 * NATS. It owns the write path (validated handles → commit queue → log → index → change hook),
 * the read path (index → verified record, the record reads in ./record-reader.ts), the TTL sweeper
 * and the store's lifecycle.
 * It implements `Engine` (./engine.ts), the narrow interface the handles depend on; its index,
 * log, queue and tier are internal (callers outside the engine use the typed reads instead).
 * What a server asks of it for ownership and takeovers (fencing, quarantine, handover, import) is
 * in ./store-ownership.ts; the methods here delegate to it in one line each.
 */
import fs from "node:fs";
import path from "node:path";
import { assert } from "./assert.js";
import { changeOf } from "./changes.js";
import { CommitQueue, type Committed } from "./commit-queue.js";
import { resolveStoreConfig, type StoreConfig, type StoreOptions } from "./config.js";
import { acquireDataLock } from "./data-lock.js";
import { StrataError } from "./errors.js";
import { errorFields } from "./logger.js";
import type { LargeRead } from "./engine.js";
import { chunksAbandoned, sweepOpenChunks } from "./index/dead-chunks.js";
import * as reads from "./index/index-reads.js";
import type { KvPointer, StreamPointer } from "./index/index-reads.js";
import type { LmdbIndex, LocMeta } from "./index/lmdb-index.js";
import { removeUnsyncedMarker } from "./index/unsynced-marker.js";
import { limitsOf } from "./index/location-conf.js";
import type { ImportRecord, LogRecord, Pointer, StreamSetRecord } from "./log/record.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds } from "./log/segment-files.js";
import { SegmentLog } from "./log/segment-log.js";
import type { Limits } from "./limits.js";
import { startMaintenance, sweepExpired } from "./maintenance.js";
import { AgeSweep } from "./age-sweep.js";
import { RecordReader } from "./record-reader.js";
import { Compactor, type CompactOptions, type CompactReport } from "./compact.js";
import { openIndexAndRecover, type RecoveryReport } from "./recovery.js";
import { StoreOwnership } from "./store-ownership.js";
import { openObjectStore, type ObjectStore } from "./tier/object-store.js";
import { Tier } from "./tier/tier.js";
import { Importer, importRequestOf, importTmpDir } from "./tier/takeover.js";
import type { ImportItem, ImportResult } from "./import-locations.js";
import { noteQuarantine, savedQuarantine, type QuarantineEntry, type QuarantineInfo } from "./index/quarantine.js";
import { KvHandle } from "./kv-handle.js";
import type { Metrics } from "./metrics/metrics.js";
import { StoreMetrics } from "./metrics/store-metrics.js";
import { StreamHandle } from "./stream-handle.js";
import type { AckMode, Change, Inventory, KvEntry, Kind, StoredMessage } from "./types.js";
import { validateLocation, validateOptionsObject } from "./validate.js";
import type { WriteOp } from "./write-ops.js";

export type ChangeListener = (change: Change) => void;
export type { LargeRead } from "./engine.js";

// Store implements `Engine` structurally (checked where it hands itself to the handles) rather
// than with `implements`: its Engine members are internal, left out of the published .d.ts.
export class Store {
  private readonly listeners = new Set<ChangeListener>();
  private stopMaintenance: (() => void) | undefined;
  private sweeping = false;
  /** The maxAgeMs part of the sweep, with its round-robin cursor (age-sweep.ts). */
  private readonly ageSweep = new AgeSweep();
  private sealRequested = false;
  private closing: Promise<void> | undefined;
  private readonly reader: RecordReader;
  /** Ownership and takeovers, which the methods below delegate to (store-ownership.ts). */
  private readonly ownership = new StoreOwnership(this, () => this.checkOpen());
  /** @internal The cold tier, when the store has one. */
  tier: Tier | undefined;
  /** @internal Takeovers' reader of other servers' object-store data (tier/takeover.ts), with a tier. */
  importer: Importer | undefined;
  /** @internal Compaction and the reclaim of compacted segments (compact.ts). */
  compactor!: Compactor;
  /** The store's metrics, once `instrument` bound them (none: nothing recorded). */
  private metrics: StoreMetrics | undefined;

  private constructor(
    readonly config: StoreConfig,
    /** @internal */ readonly index: LmdbIndex,
    /** @internal */ readonly log: SegmentLog,
    /** @internal */ readonly queue: CommitQueue,
    readonly recovery: RecoveryReport,
    private readonly releaseLock: () => void,
  ) {
    // What a read whose segment a compaction reclaimed looks its entry up again with (record-reader.ts).
    const id = (loc: string) => index.meta(loc)?.id;
    this.reader = new RecordReader(log, config.limits, () => this.tier, {
      message: (loc, seq) => {
        const locId = id(loc);
        return locId === undefined ? undefined : reads.streamPointer(index, locId, seq)?.ptr;
      },
      kvEntry: (loc, key) => {
        const locId = id(loc);
        return locId === undefined ? undefined : reads.kvEntry(index, locId, key)?.ptr;
      },
      revision: (loc, rev) => {
        const locId = id(loc);
        const hit = locId === undefined ? undefined : reads.scanRevs(index, locId, rev - 1, 1)[0];
        return hit?.rev === rev ? hit.ptr : undefined;
      },
    });
  }

  get limits(): Limits {
    return this.config.limits;
  }

  /** @internal The store's clock (ms since the epoch). */
  now(): number {
    return this.config.clock();
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
    const objects = given ?? (config.tier !== undefined ? openObjectStore(config.tier) : undefined);
    const segmentsDir = path.join(config.dir, "segments");
    const importer = objects ? new Importer(objects, config.limits, importTmpDir(config.dir), config.logger) : undefined;
    let opened: { index: LmdbIndex; report: RecoveryReport };
    try {
      // Replay redoes the imports its log holds (replay.ts), through the same importer.
      const prepareImport = importer ? (rec: ImportRecord) => importer.prepare(config.id, [importRequestOf(rec)], config.clock()).then((rows) => rows[0]!) : undefined;
      opened = await openIndexAndRecover(path.join(config.dir, "index"), segmentsDir, config.limits, config.clock(), {
        forceRebuild,
        ...(objects ? { tier: { objects, serverId: config.id, ...(prepareImport ? { prepareImport } : {}) } } : {}),
      });
    } catch (err) {
      await importer?.close();
      await objects?.close();
      throw err;
    }
    const { index, report } = opened;
    // No write survives a restart: chunks no set record references are dead (index/dead-chunks.ts).
    sweepOpenChunks(index);
    if (report.rebuilt && report.rebuildReason !== "requested" && report.replayed > 0) {
      config.logger.warn({ event: "index_rebuilt", reason: report.rebuildReason, records: report.replayed }, `index rebuilt from the log (${report.rebuildReason}); ${report.replayed} records replayed`);
    }
    for (const q of report.quarantined ?? []) {
      config.logger.warn({ event: "record_quarantined", segment: q.seg, offset: q.off, location: q.loc, reason: q.reason, during: "replay" }, `quarantined the record at segment ${q.seg} offset ${q.off} (location "${q.loc}") during replay: the index could not apply it (${q.reason}); it is skipped`);
    }
    if (report.cut) {
      const c = report.cut;
      config.logger.warn({ event: "torn_tail_cut", segment: c.seg, offset: c.off, bytes: c.bytes, reason: c.reason }, `cut ${c.bytes} bytes of unacknowledged tail from segment ${c.seg} at offset ${c.off}: ${c.reason}`);
    }
    for (const d of report.damaged) {
      config.logger.error({ event: "segment_damaged", code: "CORRUPT", segment: d.seg, offset: d.off, bytes: d.bytes, reason: d.reason }, `CORRUPT: segment ${d.seg} is damaged at offset ${d.off} (${d.bytes} bytes: ${d.reason}); the records after it are kept, reads of the damaged range answer CORRUPT. Restore the segment from a copy if you have one.`);
    }
    for (const m of report.importMismatches ?? []) {
      config.logger.warn({ event: "import_mismatch", location: m.loc, from: m.from, expected: m.expected, got: m.got }, `the import of "${m.loc}" from server "${m.from}" was redone from the object store with revision ${m.got}, but it had revision ${m.expected} when it was made: the source's data changed since (a segment or checkpoint was replaced or removed)`);
    }
    for (const o of report.orphans) {
      config.logger.warn({ event: "compaction_orphan", output: o.id, removed: o.removed, ...(o.removed ? {} : { error: o.error }) }, o.removed ? `compaction output ${o.id} was an orphan (its compaction never switched in); deleted with its markers, its inputs are used` : `compaction output ${o.id} is an orphan but could not be deleted from the object store (${o.error}); it is never read, and deleted at the next open`);
    }
    for (const c of report.unknownOutputsKept) {
      config.logger.warn({ event: "compaction_output_kept", output: c.id, lo: c.lo, hi: c.hi }, `compaction output ${c.id} (segments ${c.lo}..${c.hi}) is unknown to the index but its inputs are gone; it is kept and replayed`);
    }
    if (report.damagedIndexMovedTo) config.logger.warn({ event: "index_damaged", movedTo: report.damagedIndexMovedTo }, `the index file was damaged; moved to ${report.damagedIndexMovedTo} and rebuilt from the log (delete it once it is no longer needed)`);
    const log = SegmentLog.open(segmentsDir, config.limits, report.active, report.nextId, {}, config.io);
    log.setFsyncMode(config.fsync);
    let store: Store | undefined;
    const queue = new CommitQueue(log, index, config.limits, (batch) => store!.committed(batch), config.clock, config.logger);
    store = new Store(config, index, log, queue, report, release);
    store.importer = importer;
    if (objects) {
      const s = store;
      const tier = new Tier(objects, config.id, segmentsDir, index, config.limits, {
        requestSeal: () => s.requestSeal(),
        forgetLocal: (seg) => log.forget(seg),
        activeSegment: () => log.activeId,
        logger: config.logger,
      });
      log.setEvents({ onSealed: (seg, bytes) => tier.onSealed(seg, bytes) });
      tier.start(listSegmentIds(segmentsDir), report.tierIds, report.tierSizes);
      store.tier = tier;
    }
    store.compactor = new Compactor({
      index,
      log,
      segmentsDir,
      limits: config.limits,
      serverId: config.id,
      clock: config.clock,
      logger: config.logger,
      tier: store.tier,
      exclusive: (fn) => queue.exclusive(fn),
    });
    if (config.sweepTimers) {
      const s = store;
      const tier = s.tier;
      store.stopMaintenance = startMaintenance({
        limits: config.limits,
        logger: config.logger,
        sweep: () => s.sweep(),
        sealActive: () => s.sealActive(),
        dirtySince: () => log.dirtySince,
        records: () => s.stats().records,
        ...(config.compaction ? { compact: () => s.compactor.background() } : {}),
        ...(tier ? { checkpoint: () => tier.checkpoint() } : {}),
      });
    }
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
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
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

  /** @internal The location's metadata, checking its kind. Undefined while nothing was written. */
  meta(location: string, kind: Kind): Readonly<LocMeta> | undefined {
    this.checkOpen();
    const meta = this.index.meta(location);
    if (meta !== undefined && meta.kind !== kind) {
      throw new StrataError("WRONG_KIND", `location "${location}" is a ${meta.kind}, not a ${kind}; a location's kind is fixed by its first write`);
    }
    return meta;
  }

  /** @internal Reads and verifies the record at `ptr` (record-reader.ts, as are the reads below). */
  readRecord(ptr: Pointer): Promise<LogRecord> {
    return this.reader.readRecord(ptr);
  }

  /** @internal The index entry of a stream message, if the stream holds `seq`. */
  streamPointer(locId: number, seq: number): StreamPointer | undefined {
    return reads.streamPointer(this.index, locId, seq);
  }

  /** @internal One page of a stream's index entries with seq >= `fromSeq`. */
  scanStream(locId: number, fromSeq: number, limit: number): StreamPointer[] {
    return reads.scanStream(this.index, locId, fromSeq, limit);
  }

  /** @internal The index entry of a kv key, expired or not (the sweeper may not have written its expiry yet). */
  kvEntry(locId: number, key: string): KvPointer | undefined {
    return reads.kvEntry(this.index, locId, key);
  }

  /** @internal The index entry of a kv key that is live at `now`. */
  liveKv(locId: number, key: string, now: number): KvPointer | undefined {
    return reads.liveKv(this.index, locId, key, now);
  }

  /** @internal One page of a kv location's index entries after `afterKey`, expired ones included. */
  scanKv(locId: number, afterKey: string | undefined, limit: number): KvPointer[] {
    return reads.scanKv(this.index, locId, afterKey, limit);
  }

  /** @internal Marks chunks of a value that will never be made visible as dead (index/dead-chunks.ts). */
  abandonChunks(chunks: Pointer[]): void {
    chunksAbandoned(this.index, chunks);
  }

  /** @internal Assembles a value: inline, or the concatenation of its chunk records. */
  valueOf(rec: { value: Uint8Array; chunks?: Pointer[]; size: number }): Promise<Uint8Array> {
    return this.reader.valueOf(rec);
  }

  /** @internal The pieces of a chunked value, one chunk at a time, checked to add up to its size. */
  valuePieces(rec: { chunks: Pointer[]; size: number }): AsyncGenerator<Uint8Array> {
    return this.reader.valuePieces(rec);
  }

  /** @internal A chunked value left unread: its size, and its pieces when asked for. */
  largeRead(chunks: Pointer[], size: number): LargeRead {
    return this.reader.largeRead(chunks, size);
  }

  /** @internal The stream message an index entry points to, verified (`lazy`: a chunked value is left unread). */
  readMessage(location: string, seq: number, ptr: Pointer, lazy = false): Promise<StoredMessage & { large?: LargeRead }> {
    this.metrics?.read("stream_get", 1, ptr.len);
    return this.reader.readMessage(location, seq, ptr, lazy);
  }

  /** @internal The back-to-back stream records of a scan page from `start` on, each verified. */
  readStreamRun(location: string, entries: ReadonlyArray<{ seq: number; ptr: Pointer }>, start: number): Promise<{ records: StreamSetRecord[]; next: number }> {
    const m = this.metrics;
    if (m === undefined) return this.reader.readStreamRun(location, entries, start);
    return this.reader.readStreamRun(location, entries, start).then((run) => {
      let bytes = 0;
      for (let i = start; i < run.next; i++) bytes += entries[i]!.ptr.len;
      m.read("stream_scan", run.next - start, bytes);
      return run;
    });
  }

  /** @internal The kv entry an index entry points to, verified (`lazy`: as readMessage). */
  readKvEntry(location: string, key: string, ptr: Pointer, lazy = false): Promise<KvEntry & { large?: LargeRead }> {
    this.metrics?.read("kv_get", 1, ptr.len);
    return this.reader.readKvEntry(location, key, ptr, lazy);
  }

  /** Count, bytes, first/last seq, revision and limits of a location. */
  inventory(location: string): Inventory {
    this.checkOpen();
    validateLocation(location, this.limits);
    const meta = this.index.meta(location);
    const l = this.limits;
    const inv: Inventory = {
      location,
      count: meta?.count ?? 0,
      bytes: meta?.bytes ?? 0,
      lastSeq: meta?.lastSeq ?? 0,
      revision: meta?.rev ?? 0,
      // The location's own configuration (`config`) after the store's limits: its dedupWindowMs wins.
      limits: { valueBytesMax: l.valueBytesMax, headersBytesMax: l.headersBytesMax, keyBytesMax: l.keyBytesMax, dedupWindowMs: l.dedupWindowMs, ...limitsOf(this.index, meta?.id) },
    };
    if (meta) {
      inv.kind = meta.kind;
      if (meta.kind === "stream") {
        const first = reads.firstSeq(this.index, meta.id);
        if (first !== undefined) inv.firstSeq = first;
      }
    }
    return inv;
  }

  /**
   * The committed changes of a location with revision > `afterRevision`, oldest first, at most
   * `limit`. Used by watchers to fill a gap. Changes are reconstructed from the log records.
   * `bytesMax`: stops before a record that would take the records read past it (the first is
   * always read), so that a page asked for over the network reads no more than it may answer.
   */
  async changesSince(location: string, afterRevision: number, limit: number, bytesMax = Infinity): Promise<Change[]> {
    this.checkOpen();
    const meta = this.index.meta(location);
    if (!meta || afterRevision >= meta.rev) return [];
    const out: Change[] = [];
    let bytes = 0;
    for (const { rev, ptr, removed } of reads.scanRevs(this.index, meta.id, afterRevision, limit)) {
      if (out.length > 0 && bytes + ptr.len > bytesMax) break;
      bytes += ptr.len;
      const rec = await this.reader.readRevision(location, rev, ptr);
      assert(rec.t !== "chunk" && rec.t !== "import" && rec.t !== "config" && rec.rev === rev, "revision index points at its record");
      out.push(changeOf(rec, removed));
    }
    this.metrics?.read("changes", out.length, bytes);
    return out;
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
    if (this.listeners.size === 0) return;
    for (const c of batch) {
      if (c.record.t === "chunk" || c.record.t === "import" || c.record.t === "config") continue;
      const change = changeOf(c.record, c.removed);
      for (const listener of this.listeners) {
        try {
          listener(change);
        } catch (err) {
          this.config.logger.warn({ event: "change_listener_threw", location: change.location, ...errorFields(err) }, `a change listener threw: ${(err as Error).message}`);
        }
      }
    }
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

  private checkOpen(): void {
    if (this.closing) throw closedError();
  }
}

function closedError(): StrataError {
  return new StrataError("CLOSED", "the store is closed; open it again to continue");
}

