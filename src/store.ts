/**
 * The `Store`: one data directory's segment log and LMDB index, used in-process or served over
 * NATS. It owns the write path (validated handles → commit queue → log → index → change hook),
 * the read path (index → verified record), the TTL sweeper and the store's lifecycle.
 */
import fs from "node:fs";
import path from "node:path";
import { assert } from "./assert.js";
import { CommitQueue, type Committed } from "./commit-queue.js";
import { resolveStoreConfig, type StoreConfig, type StoreOptions } from "./config.js";
import { acquireDataLock } from "./data-lock.js";
import { StrataError } from "./errors.js";
import type { LmdbIndex, LocMeta } from "./index/lmdb-index.js";
import { decodeRecord, type LogRecord, type Pointer } from "./log/record.js";
import { SegmentLog } from "./log/segment-log.js";
import type { Limits } from "./limits.js";
import { openIndexAndRecover, type RecoveryReport } from "./recovery.js";
import { KvHandle } from "./kv-handle.js";
import { StreamHandle } from "./stream-handle.js";
import type { Change, Inventory, KvEntry, Kind, StoredMessage } from "./types.js";
import { validateLocation } from "./validate.js";
import type { WriteOp } from "./write-ops.js";

export type ChangeListener = (change: Change) => void;

export class Store {
  private readonly listeners = new Set<ChangeListener>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private closing: Promise<void> | undefined;

  private constructor(
    readonly config: StoreConfig,
    /** @internal */ readonly index: LmdbIndex,
    /** @internal */ readonly log: SegmentLog,
    /** @internal */ readonly queue: CommitQueue,
    readonly recovery: RecoveryReport,
    private readonly releaseLock: () => void,
  ) {}

  get limits(): Limits {
    return this.config.limits;
  }

  static async open(options: StoreOptions): Promise<Store> {
    const config = resolveStoreConfig(options);
    fs.mkdirSync(config.dir, { recursive: true });
    const release = acquireDataLock(config.dir);
    try {
      return Store.openLocked(config, release, false);
    } catch (err) {
      release();
      throw err;
    }
  }

  /** Rebuilds the index of a closed data directory from its log (`strata reindex`). */
  static async reindex(options: StoreOptions): Promise<RecoveryReport> {
    const config = resolveStoreConfig(options);
    const release = acquireDataLock(config.dir);
    try {
      const store = Store.openLocked(config, () => undefined, true);
      await store.close();
      return store.recovery;
    } finally {
      release();
    }
  }

  private static openLocked(config: StoreConfig, release: () => void, forceRebuild: boolean): Store {
    const { index, report } = openIndexAndRecover(
      path.join(config.dir, "index"),
      path.join(config.dir, "segments"),
      config.limits,
      config.clock(),
      { forceRebuild },
    );
    if (report.rebuilt && report.rebuildReason !== "requested" && report.replayed > 0) {
      config.onWarning(`index rebuilt from the log (${report.rebuildReason}); ${report.replayed} records replayed`);
    }
    if (report.cut) {
      const c = report.cut;
      config.onWarning(`cut ${c.bytes} bytes of unacknowledged tail from segment ${c.seg} at offset ${c.off}: ${c.reason}`);
    }
    const log = SegmentLog.open(path.join(config.dir, "segments"), config.limits, report.active);
    let store: Store | undefined;
    const queue = new CommitQueue(log, index, config.limits, (batch) => store!.committed(batch), config.clock);
    store = new Store(config, index, log, queue, report, release);
    if (config.sweepTimers) store.startTimers();
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
    return this.queue.submit(op);
  }

  /** @internal The location's metadata, checking its kind. Undefined while nothing was written. */
  meta(location: string, kind: Kind): LocMeta | undefined {
    this.checkOpen();
    const meta = this.index.locs.get(location);
    if (meta !== undefined && meta.kind !== kind) {
      throw new StrataError("WRONG_KIND", `location "${location}" is a ${meta.kind}, not a ${kind}; a location's kind is fixed by its first write`);
    }
    return meta;
  }

  /** @internal Reads and verifies the record at `ptr`. */
  readRecord(ptr: Pointer): LogRecord {
    return decodeRecord(this.log.readBody(ptr));
  }

  /** @internal Assembles a value: inline, or the concatenation of its chunk records. */
  valueOf(rec: { value: Uint8Array; chunks?: Pointer[]; size: number }): Uint8Array {
    if (!rec.chunks) return rec.value;
    const out = Buffer.allocUnsafe(rec.size);
    let at = 0;
    for (const ptr of rec.chunks) {
      const chunk = this.readRecord(ptr);
      if (chunk.t !== "chunk" || at + chunk.data.byteLength > rec.size) throw corruptPointer(ptr, "a chunk of a large value");
      out.set(chunk.data, at);
      at += chunk.data.byteLength;
    }
    if (at !== rec.size) throw corruptPointer(rec.chunks[0]!, `a large value (${at} of ${rec.size} bytes)`);
    return out;
  }

  /** @internal Reads the stream message an index entry points to, checking it is the one asked for. */
  readMessage(location: string, seq: number, ptr: Pointer): StoredMessage {
    const rec = this.readRecord(ptr);
    if (rec.t !== "sset" || rec.loc !== location || rec.seq !== seq) throw corruptPointer(ptr, `${location} seq ${seq}`);
    const msg: StoredMessage = { seq, value: this.valueOf(rec), timestamp: rec.ts };
    if (rec.headers) msg.headers = rec.headers;
    return msg;
  }

  /** @internal Reads the kv entry an index entry points to, checking it is the one asked for. */
  readKvEntry(location: string, key: string, ptr: Pointer): KvEntry {
    const rec = this.readRecord(ptr);
    if (rec.t !== "kset" || rec.loc !== location || rec.key !== key) throw corruptPointer(ptr, `${location} key ${key}`);
    const entry: KvEntry = { key, value: this.valueOf(rec), revision: rec.rev, timestamp: rec.ts };
    if (rec.headers) entry.headers = rec.headers;
    if (rec.expiresAt !== undefined) entry.expiresAt = rec.expiresAt;
    return entry;
  }

  /** Count, bytes, first/last seq, revision and limits of a location. */
  inventory(location: string): Inventory {
    this.checkOpen();
    validateLocation(location, this.limits);
    const meta = this.index.locs.get(location);
    const l = this.limits;
    const inv: Inventory = {
      location,
      count: meta?.count ?? 0,
      bytes: meta?.bytes ?? 0,
      lastSeq: meta?.lastSeq ?? 0,
      revision: meta?.rev ?? 0,
      limits: { valueBytesMax: l.valueBytesMax, headersBytesMax: l.headersBytesMax, keyBytesMax: l.keyBytesMax, dedupWindowMs: l.dedupWindowMs },
    };
    if (meta) {
      inv.kind = meta.kind;
      if (meta.kind === "stream") {
        for (const key of this.index.seqs.getKeys({ start: [meta.id, 0], end: [meta.id, Number.MAX_SAFE_INTEGER], limit: 1 })) {
          inv.firstSeq = key[1] as number;
        }
      }
    }
    return inv;
  }

  /**
   * The committed changes of a location with revision > `afterRevision`, oldest first, at most
   * `limit`. Used by watchers to fill a gap. Changes are reconstructed from the log records.
   */
  changesSince(location: string, afterRevision: number, limit: number): Change[] {
    this.checkOpen();
    const meta = this.index.locs.get(location);
    if (!meta) return [];
    const out: Change[] = [];
    for (const { key, value } of this.index.revs.getRange({ start: [meta.id, afterRevision + 1], end: [meta.id, Number.MAX_SAFE_INTEGER], limit })) {
      const ptr = { seg: value[0], off: value[1], len: value[2] };
      const rec = this.readRecord(ptr);
      assert(rec.t !== "chunk" && rec.rev === key[1], "revision index points at its record");
      out.push(this.changeOf(rec, ptr, 0));
    }
    return out;
  }

  private changeOf(rec: LogRecord, ptr: Pointer, removed: number): Change {
    assert(rec.t !== "chunk", "chunks are not changes");
    const base = { location: rec.loc, revision: rec.rev, timestamp: rec.ts };
    switch (rec.t) {
      case "sset": {
        const message: StoredMessage = { seq: rec.seq, value: rec.chunks ? new Uint8Array(0) : rec.value, timestamp: rec.ts };
        if (rec.headers) message.headers = rec.headers;
        return { ...base, kind: "stream", op: "set", seq: rec.seq, message, size: rec.size, chunked: rec.chunks !== undefined };
      }
      case "sdel":
        return { ...base, kind: "stream", op: "delete", seq: rec.seq };
      case "sdelall":
        return { ...base, kind: "stream", op: "deleteAll", endSeq: rec.endSeq, count: removed };
      case "kset": {
        const entry: KvEntry = { key: rec.key, value: rec.chunks ? new Uint8Array(0) : rec.value, revision: rec.rev, timestamp: rec.ts };
        if (rec.headers) entry.headers = rec.headers;
        if (rec.expiresAt !== undefined) entry.expiresAt = rec.expiresAt;
        return { ...base, kind: "kv", op: "set", key: rec.key, entry, size: rec.size, chunked: rec.chunks !== undefined };
      }
      case "kdel":
        return { ...base, kind: "kv", op: rec.expired ? "expire" : "delete", key: rec.key };
    }
    void ptr;
  }

  private committed(batch: Committed[]): void {
    if (this.listeners.size === 0) return;
    for (const c of batch) {
      if (c.record.t === "chunk") continue;
      const change = this.changeOf(c.record, c.ptr, c.removed);
      for (const listener of this.listeners) {
        try {
          listener(change);
        } catch (err) {
          this.config.onWarning(`a change listener threw: ${(err as Error).message}`);
        }
      }
    }
  }

  /**
   * Turns kv entries whose TTL has passed into expiry records (they are already invisible to
   * reads) and forgets msgIds older than the dedup window. Runs on a timer; tests call it directly.
   */
  async sweep(): Promise<{ expired: number }> {
    if (this.sweeping || this.closing) return { expired: 0 };
    this.sweeping = true;
    try {
      const now = this.config.clock();
      const due: WriteOp[] = [];
      for (const { key, value } of this.index.ttl.getRange({ start: [0, 0, ""], end: [now + 1, 0, ""], limit: this.limits.ttlSweepBatchMax })) {
        const [, locId, k] = key;
        const loc = this.index.locIds.get(locId);
        if (loc !== undefined) due.push({ op: "kexpire", loc, key: k, rev: value });
      }
      const results = await Promise.all(due.map((op) => this.submit(op)));
      this.pruneDedup(now);
      return { expired: results.filter((r) => r.committed !== undefined).length };
    } finally {
      this.sweeping = false;
    }
  }

  private pruneDedup(now: number): void {
    const cutoff = now - this.limits.dedupWindowMs;
    const old = [...this.index.dedupAge.getKeys({ start: [0, 0, ""], end: [cutoff, 0, ""], limit: this.limits.ttlSweepBatchMax })];
    if (old.length === 0) return;
    this.index.write(() => {
      for (const key of old) {
        const [ts, locId, msgId] = key;
        const hit = this.index.dedup.get([locId, msgId]);
        if (hit && hit[2] === ts) this.index.dedup.remove([locId, msgId]);
        this.index.dedupAge.remove(key);
      }
    });
  }

  private startTimers(): void {
    this.sweepTimer = setInterval(() => {
      this.sweep().catch((err) => this.config.onWarning(`TTL sweep failed: ${(err as Error).message}`));
    }, this.limits.ttlSweepIntervalMs);
    this.sweepTimer.unref();
  }

  /** Number of fsyncs and of committed records so far (the benchmark reports fsyncs per write). */
  stats(): { fsyncs: number; records: number; batches: number } {
    return { fsyncs: this.log.fsyncCount, ...this.queue.stats };
  }

  /** Finishes the writes in flight, then closes the log and index. Later calls wait for the same close. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.sweepTimer) clearInterval(this.sweepTimer);
      await this.queue.idle();
      this.queue.fail(closedError());
      try {
        await this.log.close();
        await this.index.close();
      } finally {
        this.releaseLock();
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

function corruptPointer(ptr: Pointer, what: string): StrataError {
  return new StrataError("CORRUPT", `the index entry for ${what} points at segment ${ptr.seg} offset ${ptr.off}, which holds something else; run \`strata reindex\``);
}
