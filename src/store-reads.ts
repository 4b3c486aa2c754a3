/**
 * The read side of the `Store` (./store.ts extends this class, so the methods stay the store's):
 * the `Engine` members the handles read through (./engine.ts): typed index reads
 * (./index/index-reads.ts), verified record reads (./record-reader.ts) with their metrics, a
 * location's `meta` and `inventory`, and the changes a watcher fills a gap with.
 *
 * Invariants it keeps:
 * - Every read sees only committed writes: the index is applied after the fsync that makes a
 *   batch durable, and reads start at the index.
 * - `read*` verify that a record is the one its index entry names (else CORRUPT). A read whose
 *   segment a compaction reclaimed in the meantime looks its entry up again (the lookups the
 *   record reader is given here) rather than failing.
 * - `meta` throws WRONG_KIND for a location of the other kind; `meta`, `inventory` and
 *   `changesSince` throw CLOSED once the store is closing (`checkOpen`, the store's).
 */
import { assert } from "./assert.js";
import { changeOf } from "./changes.js";
import type { StoreConfig } from "./config.js";
import type { LargeRead } from "./engine.js";
import { StrataError } from "./errors.js";
import * as reads from "./index/index-reads.js";
import type { KvPointer, StreamPointer } from "./index/index-reads.js";
import type { LmdbIndex, LocMeta } from "./index/lmdb-index.js";
import { limitsOf } from "./index/location-conf.js";
import type { Limits } from "./limits.js";
import type { LogRecord, Pointer, StreamSetRecord } from "./log/record.js";
import type { SegmentLog } from "./log/segment-log.js";
import type { StoreMetrics } from "./metrics/store-metrics.js";
import { RecordReader } from "./record-reader.js";
import type { Tier } from "./tier/tier.js";
import type { Change, Inventory, KvEntry, Kind, StoredMessage } from "./types.js";
import { validateLocation } from "./validate.js";

export abstract class StoreReads {
  private readonly reader: RecordReader;
  /** @internal The cold tier, when the store has one. */
  tier: Tier | undefined;
  /** The store's metrics, once `instrument` bound them (none: nothing recorded). */
  protected metrics: StoreMetrics | undefined;

  protected constructor(
    readonly config: StoreConfig,
    /** @internal */ readonly index: LmdbIndex,
    log: SegmentLog,
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

  /** Throws CLOSED once the store is closing. */
  protected abstract checkOpen(): void;

  get limits(): Limits {
    return this.config.limits;
  }

  /** @internal The store's clock (ms since the epoch). */
  now(): number {
    return this.config.clock();
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
}
