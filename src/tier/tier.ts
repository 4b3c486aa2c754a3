/**
 * The cold tier of one store: ships sealed segments to the object store, resolves `ack: "object"`
 * writes once their segment is there (the waits: ./upload-waiters.ts), keeps local segment files
 * within the `cacheBytes` budget (./local-cache.ts evicts uploaded ones least-recently-used first),
 * reads evicted segments back a block at a time, and uploads index checkpoints.
 *
 * Invariants:
 * - Segments are uploaded in id order, one at a time (the loop: ./upload-loop.ts). A transient
 *   failure (object store down, a read error) is retried with backoff until it succeeds or the
 *   store closes; a permanent one is not retried: the segment is quarantined (./ship-faults.ts:
 *   kept locally, never uploaded or evicted, its object-ack writes answered CORRUPT), and the
 *   segments after it go on being shipped. Local-ack writes never wait for any of it.
 * - Segment objects are written create-only (./segment-ship.ts): an object already under a
 *   segment's name is taken as shipped only if it holds exactly that segment (a put whose success
 *   was not recorded); otherwise the segment is quarantined for a conflict, never overwritten.
 *   The one segment replaced with a plain put is the one active at open whose older version is in
 *   the object store (`start`; the states at open: ./tier-open.ts). No checkpoint covers a
 *   segment quarantined for a conflict.
 * - A segment with damaged ranges is shipped with them (./sealed-segment.ts carries them as raw
 *   bytes), loudly, and is marked "damaged": it was not shipped whole, so it is never evicted.
 * - A segment is handed to the local cache as evictable only once its upload succeeded whole and
 *   undamaged; the cache evicts after every seal and every upload (./local-cache.ts keeps the
 *   `cacheBytes` budget).
 * - A checkpoint is uploaded only after every segment its index snapshot points into is in the
 *   object store (./checkpoints.ts), so a restore from it never finds the index pointing at a
 *   segment it cannot get.
 * - Foreign segments (ids ≥ 2^32: another server's, pointed at by an imported location,
 *   ../index/foreign-logs.ts) are in the object store by definition: never local, never uploaded,
 *   evicted, counted in cacheBytes or recorded in `segs`; reads fault them in from that server's
 *   keys a block at a time.
 * - Object sizes of uploaded segments are handed to the block reader (from the upload, or from the
 *   listing recovery makes at open), so faulting a segment in needs no HEAD request.
 */
import fs from "node:fs";
import { StrataError } from "../errors.js";
import { errorFields, type Logger } from "../logger.js";
import type { LmdbIndex } from "../index/lmdb-index.js";
import type { Pointer } from "../log/record.js";
import { SEGMENT_HEADER_BYTES, segmentPath } from "../log/segment-files.js";
import type { Limits } from "../limits.js";
import { BlockReader } from "./block-reader.js";
import { uploadCheckpoint } from "./checkpoints.js";
import type { ObjectStore } from "./object-store.js";
import { sealSegmentAsync } from "./sealed-segment.js";
import { shipSegment } from "./segment-ship.js";
import type { DamagedRange } from "../log/frame-scan.js";
import { compactionMarkerKey, segmentKey } from "./segment-keys.js";
import { isCompacted } from "../log/segment-set.js";
import { loadSegmentStates } from "./tier-open.js";
import { UploadLoop } from "./upload-loop.js";
import { ForeignLogNames, assertOwnSegment, isForeign, localSeg, logOf } from "../index/foreign-logs.js";
import { LocalCache, type LocalCacheHooks } from "./local-cache.js";
import { UploadWaiters } from "./upload-waiters.js";
import type { StoreMetrics } from "../metrics/store-metrics.js";
import { conflictWarning, damagedWarning, quarantinedError, unsealableWarning, type QuarantineReason } from "./ship-faults.js";

export interface TierHooks extends LocalCacheHooks {
  /** Seal the active segment soon (an object-ack write is waiting on it). */
  requestSeal: () => void;
  logger: Logger;
}

export class Tier {
  readonly reader: BlockReader;
  private readonly pending: number[] = [];
  private readonly uploaded = new Set<number>();
  /**
   * Segments that cannot be shipped, and why: "unsealable" (a permanent failure to seal) or
   * "conflict" (the object store holds other bytes under its name). Skipped, kept locally, never
   * evicted; object acks of their records are answered CORRUPT.
   */
  private readonly quarantined = new Map<number, QuarantineReason>();
  /** The segment active at open whose older version is in the object store: replaced, not created. */
  private replaceAtOpen: number | undefined;
  /** Damaged ranges of the segments shipped with damage since this start (for object acks). */
  private readonly damagedRanges = new Map<number, DamagedRange[]>();
  private readonly cache: LocalCache;
  private readonly waiters: UploadWaiters;
  private closed = false;
  private readonly loop: UploadLoop;
  private checkpointing: Promise<void> | undefined;
  /** Counters for tests, the benchmark and operators: uploadedBytes are sealed (compressed) bytes. */
  /** Upload and fault-in latency, cache hits and misses, when the store records metrics (Store.instrument). */
  metrics: StoreMetrics | undefined;
  stats = { uploads: 0, uploadedBytes: 0, uploadedRawBytes: 0, uploadFailures: 0, evictions: 0, checkpoints: 0, checkpointFailures: 0, quarantined: 0, damagedUploads: 0, uploadConflicts: 0 };

  constructor(
    readonly objects: ObjectStore,
    readonly serverId: string,
    private readonly segmentsDir: string,
    private readonly index: LmdbIndex,
    private readonly limits: Limits,
    private readonly hooks: TierHooks,
  ) {
    const names = new ForeignLogNames(index);
    this.reader = new BlockReader(objects, (seg) => (isForeign(seg) ? segmentKey(names.serverOf(logOf(seg)), localSeg(seg)) : segmentKey(serverId, seg)), limits);
    this.cache = new LocalCache(segmentsDir, index, limits.cacheBytes, hooks, () => void this.stats.evictions++);
    this.waiters = new UploadWaiters(limits.objectAckTimeoutMs);
    this.loop = new UploadLoop(this.pending, limits, {
      upload: (seg) => this.upload(seg),
      permanent: (seg, err) => this.quarantine(seg, "unsealable", unsealableWarning(seg, err), errorFields(err)),
      drained: () => this.waiters.resolveDrained(),
      closed: () => this.closed,
      failed: () => void this.stats.uploadFailures++,
      logger: hooks.logger,
    });
  }

  /**
   * Loads segment states from the index and queues what still has to be uploaded (./tier-open.ts).
   * `inTier` are the segment ids found in the object store (`sizes`: their object sizes where the
   * listing gave them, so a first read of an evicted segment needs no HEAD request); `local` those
   * on the local disk.
   */
  start(local: number[], inTier: number[], sizes: ReadonlyMap<number, number> = new Map()): void {
    const state = { index: this.index, segmentsDir: this.segmentsDir, cache: this.cache, reader: this.reader, uploaded: this.uploaded, pending: this.pending };
    loadSegmentStates({ ...state, replaceAtOpen: (seg) => (this.replaceAtOpen = seg) }, this.hooks.activeSegment(), local, inTier, sizes);
    this.kick();
    this.evictIfNeeded();
  }

  /**
   * The first own segment not in the object store (a segment waiting to be shipped, one that
   * cannot be, or else the active one): records from there on were never shipped.
   */
  firstUnshipped(active: number): number {
    let first = active;
    for (const seg of this.pending) first = Math.min(first, seg);
    for (const seg of this.quarantined.keys()) first = Math.min(first, seg);
    return first;
  }

  /**
   * A compaction output, written locally and put in the object store whole by the compactor
   * (../compact.ts): local, uploaded, evictable like any shipped segment.
   */
  adoptOutput(seg: number, rawBytes: number, sealedBytes: number): void {
    this.uploaded.add(seg);
    this.reader.noteSize(seg, sealedBytes);
    this.cache.noteSealed(seg, rawBytes);
    this.cache.noteUploaded(seg);
    this.cache.touch(seg);
    this.evictIfNeeded();
  }

  /** Inputs of a compaction's switch: never evicted again (the reclaim deletes them). */
  superseded(segs: readonly number[]): void {
    for (const seg of segs) this.cache.keep(seg);
  }

  /** The reclaim deleted `seg`'s local file. */
  localDeleted(seg: number): void {
    this.cache.localGone(seg);
  }

  /** The reclaim deleted `seg`'s object: it is in the object store no more. */
  objectDeleted(seg: number): void {
    this.uploaded.delete(seg);
  }

  /** Checkpoints started so far, and the start number of the newest one that was uploaded. */
  checkpointStarts = 0;
  checkpointUploadedStart = 0;

  /** Whether sealed segment `seg` is in the object store. */
  isUploaded(seg: number): boolean {
    return isForeign(seg) || this.uploaded.has(seg);
  }

  /** Whether segment `seg` is read from the local disk (a foreign segment never is). */
  isLocal(seg: number): boolean {
    return !isForeign(seg) && this.cache.isLocal(seg);
  }

  /** Notes a read of a local segment, for least-recently-used eviction. */
  touch(seg: number): void {
    this.metrics?.cacheHits?.inc();
    this.cache.touch(seg);
  }

  /** Reads one record from the object store (a fault-in: the segment is not local). */
  readBody(ptr: Pointer): Promise<Buffer> {
    const m = this.metrics;
    if (m === undefined) return this.reader.readBody(ptr);
    m.cacheMisses?.inc();
    const startedMs = performance.now();
    return this.reader.readBody(ptr).finally(() => m.faultInSeconds?.observe((performance.now() - startedMs) / 1000));
  }

  /** Bytes of local segment files (the cacheBytes budget's measure; stats the active file). */
  get localBytes(): number {
    return this.cache.bytes;
  }

  /** A segment stopped taking appends: ship it. */
  onSealed(seg: number, bytes: number): void {
    assertOwnSegment(seg + 1);
    this.index.write(() => this.index.segs.put(seg, { state: "sealed", bytes }));
    this.cache.noteSealed(seg, bytes);
    this.pending.push(seg);
    this.kick();
    this.evictIfNeeded();
  }

  /**
   * Resolves once the records at `ptrs` are in the object store whole: as `waitUploaded` for their
   * segments, then CORRUPT when one of them was shipped inside a damaged range (its bytes were
   * damaged on the local disk after it was written, so the object store does not hold it either).
   */
  async waitRecordsUploaded(ptrs: readonly Pointer[]): Promise<void> {
    for (const seg of new Set(ptrs.map((p) => p.seg))) await this.waitUploaded(seg);
    for (const p of ptrs) {
      const hit = this.damagedRanges.get(p.seg)?.find((d) => d.off < p.off + p.len && p.off < d.off + d.bytes);
      if (hit) {
        throw new StrataError("CORRUPT", `the record at segment ${p.seg} offset ${p.off} was damaged on the local disk before it was shipped; it is not in the object store. Write it again.`);
      }
    }
  }

  /** Resolves once `seg` is in the object store; rejects with UNAVAILABLE after objectAckTimeoutMs. */
  waitUploaded(seg: number): Promise<void> {
    if (this.isUploaded(seg)) return Promise.resolve();
    const why = this.quarantined.get(seg);
    if (why !== undefined) return Promise.reject(quarantinedError(seg, why));
    if (this.closed) return Promise.reject(new StrataError("CLOSED", "the store closed before the write reached the object store; it is durable locally"));
    if (seg === this.hooks.activeSegment()) this.hooks.requestSeal();
    return this.waiters.waitSegment(seg);
  }

  private kick(): void {
    this.loop.kick();
  }

  /**
   * A segment that can never be sealed, or whose object name another process holds with other
   * bytes (a conflict): skipped so the ones after it are shipped. It stays on the
   * local disk (never evicted) and is tried again at the next start; object acks waiting for it
   * are answered CORRUPT.
   */
  private quarantine(seg: number, why: QuarantineReason, warning: string, fields: Record<string, unknown>): void {
    this.pending.shift();
    this.quarantined.set(seg, why);
    this.stats.quarantined++;
    this.hooks.logger.error({ event: "segment_quarantined", code: "CORRUPT", segment: seg, reason: why, ...fields }, warning);
    this.waiters.rejectSegment(seg, () => quarantinedError(seg, why));
    if (this.pending.length === 0) this.waiters.resolveDrained();
  }

  /** Ships one segment; false when it was quarantined for a conflict instead. */
  private async upload(seg: number): Promise<boolean> {
    const startedMs = performance.now();
    const file = segmentPath(this.segmentsDir, seg);
    // Read off the event loop: a whole segment is tens of MiB (readFileSync held the loop ~100 ms).
    const raw = await fs.promises.readFile(file);
    const damaged: DamagedRange[] = [];
    const sealed = await sealSegmentAsync(seg, raw, this.limits.blockBytes, this.limits.recordBytesMax, (d) => damaged.push(d));
    const key = segmentKey(this.serverId, seg);
    const outcome = await shipSegment(this.objects, key, seg, sealed, raw, seg === this.replaceAtOpen);
    if (outcome.kind === "conflict") {
      this.stats.uploadConflicts++;
      this.quarantine(seg, "conflict", conflictWarning({ seg, key, objectBytes: outcome.objectBytes, sealedBytes: sealed.byteLength, file, serverId: this.serverId }), { key, objectBytes: outcome.objectBytes, sealedBytes: sealed.byteLength, file });
      return false;
    }
    if (seg === this.replaceAtOpen) this.replaceAtOpen = undefined;
    if (isCompacted(seg)) {
      // An output compacted while the store had no tier: valid in the object store only with its
      // marker (docs/compaction.md), put once the output itself is there.
      const info = this.index.segs.get(seg);
      if (info?.lo !== undefined && info.hi !== undefined) await this.objects.putIfAbsent(compactionMarkerKey(this.serverId, { id: seg, lo: info.lo, hi: info.hi }), Buffer.alloc(0));
    }
    if (damaged.length > 0) {
      this.damagedRanges.set(seg, damaged);
      this.stats.damagedUploads++;
      this.hooks.logger.error({ event: "segment_shipped_damaged", code: "CORRUPT", segment: seg, ranges: damaged.map((d) => ({ offset: d.off, bytes: d.bytes, reason: d.reason })) }, damagedWarning(seg, damaged));
    }
    this.uploaded.add(seg);
    this.reader.noteSize(seg, sealed.byteLength);
    this.stats.uploads++;
    this.stats.uploadedBytes += sealed.byteLength;
    this.stats.uploadedRawBytes += raw.byteLength;
    this.metrics?.uploadSeconds?.observe((performance.now() - startedMs) / 1000);
    const state = damaged.length > 0 ? "damaged" : "uploaded";
    if (!this.closed) this.index.write(() => this.index.segs.put(seg, { state, bytes: raw.byteLength }));
    if (damaged.length === 0) {
      this.cache.noteUploaded(seg);
      this.cache.touch(seg);
    }
    this.waiters.resolveShipped((s) => this.uploaded.has(s));
    this.evictIfNeeded();
    return true;
  }

  /** Keeps local segment files within cacheBytes (./local-cache.ts); nothing is deleted once closed. */
  evictIfNeeded(): void {
    if (!this.closed) this.cache.evict();
  }

  /** Bytes of local segment files: the active one, those waiting for upload, and uploaded ones not evicted. */
  get localSegmentBytes(): number {
    return this.cache.bytes;
  }

  /**
   * Resolves once the log up to `pos` is in the object store. A position at the very start of a
   * segment (an empty active segment, as after a reopen) needs only the segments before it:
   * waiting for that segment itself would wait for a seal that never comes.
   */
  private waitLogUploaded(pos: { seg: number; off: number }): Promise<void> {
    // A quarantined segment is settled: the object store will not have it, whatever we wait for.
    // But once the object store holds someone else's version of one of our segments, our log and
    // it have parted there: a checkpoint at or after that point would describe a log nobody can
    // read back. So none is taken (older checkpoints stay valid).
    for (const [seg, why] of this.quarantined) {
      if (why === "conflict" && (seg < pos.seg || (seg === pos.seg && pos.off > SEGMENT_HEADER_BYTES))) return Promise.reject(quarantinedError(seg, why));
    }
    if (this.quarantined.has(pos.seg)) return Promise.resolve();
    if (pos.off > SEGMENT_HEADER_BYTES) return this.waitUploaded(pos.seg);
    const before = this.pending.filter((seg) => seg < pos.seg);
    return before.length === 0 ? Promise.resolve() : this.waitUploaded(before[before.length - 1]!);
  }

  /**
   * Uploads a checkpoint of the index (at most one at a time). Checkpoints keep plain puts: a
   * checkpoint's name is the log position it describes, and it is put only once every segment up
   * to there is verified in the object store (`waitLogUploaded`: a segment whose object is someone
   * else's blocks it). So two writers of one name, this server's twins included, describe the same
   * shipped log prefix, and either's object is a correct checkpoint of it.
   */
  checkpoint(): Promise<void> {
    if (this.checkpointing) return this.checkpointing;
    // Numbered so the reclaim can tell a checkpoint started after a compaction's switch (../compact.ts).
    const start = ++this.checkpointStarts;
    this.checkpointing = uploadCheckpoint(this.index, this.objects, this.serverId, this.limits, (pos) => this.waitLogUploaded(pos))
      .then(
        () => {
          this.stats.checkpoints++;
          this.checkpointUploadedStart = Math.max(this.checkpointUploadedStart, start);
        },
        (err: unknown) => {
          this.stats.checkpointFailures++;
          throw err;
        },
      )
      .finally(() => (this.checkpointing = undefined));
    return this.checkpointing;
  }

  /** Resolves once no sealed segment is waiting for upload (rejects CLOSED if the store closes first). */
  drained(): Promise<void> {
    if (this.pending.length === 0) return Promise.resolve();
    return this.waiters.waitDrained();
  }

  /** Number of sealed segments not yet in the object store. */
  get backlog(): number {
    return this.pending.length;
  }

  /** Waits (bounded) for pending uploads, then stops. Unfinished uploads resume at the next start. */
  async close(): Promise<void> {
    const deadline = Date.now() + this.limits.closeUploadWaitMs;
    while (this.pending.length > 0 && Date.now() < deadline && !this.loop.failing) {
      await Promise.race([this.loop.uploading, new Promise((r) => setTimeout(r, 50))]);
    }
    this.closed = true;
    this.loop.wake();
    this.waiters.close();
    await this.loop.uploading?.catch(() => undefined);
    await this.checkpointing?.catch(() => undefined);
    await this.objects.close();
  }
}
