/**
 * The engine side of a takeover (docs/failover.md, "A location's life" step 6): the index rows of
 * a location as another server's object-store data holds it up to a cut, ready for an `import`
 * record (../index/import-rows.ts), with no value copied: every pointer stays a pointer into the
 * segments that hold the value, of whichever server wrote it.
 *
 * How, for location L from server `from` up to segment `cut` (inclusive):
 * 1. The newest checkpoint of `from` whose key names a position in a segment <= cut (a damaged one
 *    is skipped for the next older, as restore does; none: an empty index) is opened as an
 *    origin copy (./origin-copy.ts).
 * 2. `from`'s segments from the copy's own log position up to the cut are fetched, unsealed and
 *    scanned once each; their records of L (values left out: only size and chunk pointers matter
 *    to an index) are applied to the copy with the index's own apply code, so dedup, TTLs,
 *    revisions, deletes and deleteAll come out as they did at `from`. An `import` record of L
 *    there means `from` had imported L itself: its rows are prepared the same way (recursively,
 *    for `from` as the importing server, from that record's source, cut and checkpoint) and
 *    applied to the copy as `from` applied them. Damaged ranges are skipped like recovery skips
 *    them and reported; a segment object that fails its checksum fails the import (CORRUPT),
 *    never imports silently.
 * 3. L's rows are read out of the copy and translated for the importing server (`self`).
 * Replaying the importing server's log redoes exactly this (../replay.ts), so the result of an
 * import depends only on `from`'s object-store data up to the cut, which nothing changes.
 *
 * Compaction (docs/compaction.md): before anything of `from` is read for a cut, the pin
 * `from/pins/<reader>-<cut>` is put (./pins.ts; once per server, origin and cut), so `from`'s
 * reclaim keeps every input whose cover starts at or below the cut. Which of `from`'s segments are
 * read, in which order, and from where, is ./origin-segments.ts; scanning one is ./origin-scan.ts.
 *
 * Costs: imports come in small batches, so opened copies (disk, `importCheckpointCacheBytes`) and
 * scanned segments (memory, `importScanCacheBytes`) are kept for `importCacheTtlMs` after their
 * last use, in lru-caches; many locations from one origin read its checkpoint and each of its
 * segments once. A segment's values are held only while it is scanned. Object-store failures that
 * may pass are retried with the one backoff (../backoff.ts) for up to `importRetryMs`.
 * Imports run one at a time (`prepare` serialises them), so a copy is never changed by two.
 */
import path from "node:path";
import fs from "node:fs";
import { LRUCache } from "lru-cache";
import { backoff } from "../backoff.js";
import { StrataError } from "../errors.js";
import { applyRecords } from "../index/apply.js";
import type { ImportRows } from "../index/import-rows.js";
import { registerImport } from "../index/import-rows.js";
import { FOREIGN_SEG_SPAN } from "../index/foreign-logs.js";
import type { ImportRecord, LogRecord, Pointer } from "../log/record.js";
import { SEGMENT_HEADER_BYTES } from "../log/segment-files.js";
import { isCompacted, resolveSegments } from "../log/segment-set.js";
import type { Limits } from "../limits.js";
import type { Logger } from "../logger.js";
import { listCheckpoints, readCheckpoint } from "./checkpoints.js";
import { OriginCopy, extractRows } from "./origin-copy.js";
import { scanOriginSegment, type ScannedSegment } from "./origin-scan.js";
import { originEntries, startOf, type OriginSegments } from "./origin-segments.js";
import type { ObjectStore } from "./object-store.js";
import { unsealSegment } from "./sealed-segment.js";
import { writePin } from "./pins.js";
import { segmentKey } from "./segment-keys.js";
import { listSegments as listServerSegments } from "./tier-listing.js";

/** One location to import. `ckpt`: the checkpoint an import record names (a hint; any <= cut gives the same rows). */
export interface ImportRequest {
  loc: string;
  from: string;
  cut: number;
  ckpt?: string;
}

/** Listings made once per top-level import call. */
interface Call {
  /** The importing server (whose id names the pins), whatever level of a chain of imports is prepared. */
  reader: string;
  segments: Map<string, Promise<OriginSegments>>;
  checkpoints: Map<string, Promise<Array<{ key: string; pos: { seg: number; off: number } }>>>;
  /** Checkpoints found damaged in this call: skipped without reading them again. */
  damaged: Set<string>;
  now: number;
}

/** Deepest chain of imports followed (a location moved this many times without a checkpoint in between). */
const IMPORT_DEPTH_MAX = 64;
/** A pause between object-store retries starts here and doubles up to uploadRetryMaxMs. */
const RETRY_FIRST_MS = 50;

export class Importer {
  private readonly copies: LRUCache<string, OriginCopy>;
  private readonly scans: LRUCache<string, ScannedSegment>;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Pins put by this importer (`reader\0from\0cut`): put once each. */
  private readonly pinned = new Set<string>();
  /** Counters for tests, the benchmark and operators. */
  readonly stats = { imports: 0, checkpointsRead: 0, segmentsRead: 0, bytesRead: 0, damagedRanges: 0, damagedCheckpoints: 0 };

  constructor(
    private readonly objects: ObjectStore,
    private readonly limits: Limits,
    private readonly tmpRoot: string,
    private readonly logger: Logger,
  ) {
    // Directories of copies a previous process left behind (a crash) are of no use.
    fs.rmSync(tmpRoot, { recursive: true, force: true });
    const ttl = limits.importCacheTtlMs;
    this.copies = new LRUCache<string, OriginCopy>({
      maxSize: limits.importCheckpointCacheBytes,
      // A copy larger than the budget is still kept while in use (it evicts everything else).
      sizeCalculation: (c) => Math.max(1, Math.min(c.bytes, limits.importCheckpointCacheBytes)),
      ttl,
      ttlAutopurge: true,
      updateAgeOnGet: true,
      dispose: (copy) => this.release(copy, true),
    });
    this.scans = new LRUCache<string, ScannedSegment>({
      maxSize: limits.importScanCacheBytes,
      sizeCalculation: (s) => Math.max(1, Math.min(s.bytes, limits.importScanCacheBytes)),
      ttl,
      ttlAutopurge: true,
      updateAgeOnGet: true,
    });
  }

  /**
   * The rows of each requested location for an index whose own server is `self`, in order. Runs
   * after every import before it (one at a time).
   */
  prepare(self: string, requests: readonly ImportRequest[], now: number): Promise<ImportRows[]> {
    const run = this.queue.then(async () => {
      if (this.closed) throw new StrataError("CLOSED", "the store is closed; open it again to continue");
      const call: Call = { reader: self, segments: new Map(), checkpoints: new Map(), damaged: new Set(), now };
      const out: ImportRows[] = [];
      for (const r of requests) out.push(await this.prepareOne(call, self, r, 0));
      this.stats.imports += requests.length;
      return out;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * The last normal segment position of `from` in the object store (a cut: an output counts as the
   * last segment it covers), undefined when it has none.
   */
  async lastSegment(from: string): Promise<number | undefined> {
    const s = await this.listSegments(from);
    let last: number | undefined;
    for (const e of resolveSegments(s.normals, s.outputs, s.markers).entries) last = Math.max(last ?? 0, e.hi);
    return last;
  }

  /** Drops every cached copy and scan, closing the copies (removing their directories). */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    const copies = [...this.copies.values()];
    this.copies.clear();
    this.scans.clear();
    await Promise.all(copies.map((c) => c.close()));
    fs.rmSync(this.tmpRoot, { recursive: true, force: true });
  }

  private async prepareOne(call: Call, self: string, req: ImportRequest, depth: number): Promise<ImportRows> {
    if (depth > IMPORT_DEPTH_MAX) {
      throw new StrataError("CORRUPT", `importing "${req.loc}" follows more than ${IMPORT_DEPTH_MAX} imports of it from server to server without a checkpoint; the chain is refused`);
    }
    await this.pin(call.reader, req.from, req.cut);
    let copy = await this.originCopy(call, req);
    try {
      // A cached copy may hold this location past the cut asked for now: start from a fresh one.
      if ((copy.applied.get(req.loc) ?? -1) > req.cut) {
        this.release(copy, false);
        copy = await this.originCopy(call, req, true);
      }
      await this.catchUp(call, copy, req, depth);
      return extractRows(copy, req.loc, self, this.limits.epochLineageMax);
    } finally {
      this.release(copy, false);
    }
  }

  /** A pinned origin copy for `req` (newest usable checkpoint, cached); `fresh`: never a cached one. */
  private async originCopy(call: Call, req: ImportRequest, fresh = false): Promise<OriginCopy> {
    const all = (await this.memo(call.checkpoints, req.from, () => this.retrying(`listing the checkpoints of server "${req.from}"`, () => listCheckpoints(this.objects, req.from)))).filter(
      (c) => c.pos.seg <= req.cut,
    );
    // The checkpoint the import record names first, when it is still there; then newest first.
    const order = all.reverse();
    const hinted = order.findIndex((c) => c.key === req.ckpt);
    if (hinted > 0) order.unshift(...order.splice(hinted, 1));
    for (const { key } of order) {
      const cacheKey = `${req.from}\0${key}`;
      const cached = fresh ? undefined : this.copies.get(cacheKey);
      if (cached) return pin(cached);
      if (call.damaged.has(key)) continue;
      let raw: Buffer | undefined;
      try {
        raw = await this.retrying(`reading checkpoint ${key}`, () => readCheckpoint(this.objects, key));
      } catch (err) {
        if (!StrataError.is(err, "CORRUPT")) throw err;
        call.damaged.add(key);
        this.stats.damagedCheckpoints++;
        this.logger.error({ event: "takeover_checkpoint_damaged", code: "CORRUPT", location: req.loc, from: req.from, checkpoint: key, error: err.message }, `CORRUPT: ${err.message} (taking over "${req.loc}" from server "${req.from}")`);
        continue;
      }
      if (raw === undefined) continue; // deleted since the listing (pruned): an older one will do
      let copy: OriginCopy;
      try {
        copy = OriginCopy.open(this.tmpRoot, req.from, key, raw);
      } catch (err) {
        if (!StrataError.is(err, "CORRUPT")) throw err;
        call.damaged.add(key);
        this.stats.damagedCheckpoints++;
        this.logger.error({ event: "takeover_checkpoint_damaged", code: "CORRUPT", location: req.loc, from: req.from, checkpoint: key, error: err.message }, `CORRUPT: checkpoint ${key} of server "${req.from}" cannot be opened (${err.message}); an older one is used`);
        continue;
      }
      this.stats.checkpointsRead++;
      this.stats.bytesRead += raw.byteLength;
      return this.remember(cacheKey, copy, fresh);
    }
    const cacheKey = `${req.from}\0`;
    const cached = fresh ? undefined : this.copies.get(cacheKey);
    if (cached) return pin(cached);
    return this.remember(cacheKey, OriginCopy.open(this.tmpRoot, req.from, undefined, undefined), fresh);
  }

  private remember(cacheKey: string, copy: OriginCopy, fresh: boolean): OriginCopy {
    pin(copy);
    if (!fresh || !this.copies.has(cacheKey)) this.copies.set(cacheKey, copy);
    else copy.evicted = true; // a one-off copy: closed once released
    return copy;
  }

  /** Unpins `copy` (`evicted`: the cache let go of it); closes it once neither holds it. */
  private release(copy: OriginCopy, evicted: boolean): void {
    if (evicted) copy.evicted = true;
    else copy.users -= 1;
    if (copy.users <= 0 && copy.evicted) void copy.close();
  }

  /** Puts the pin of `reader`'s import of `from` up to `cut` before anything of it is read (once). */
  private async pin(reader: string, from: string, cut: number): Promise<void> {
    const key = `${reader}\0${from}\0${cut}`;
    if (this.pinned.has(key)) return;
    await this.retrying(`pinning the segments of server "${from}" up to ${cut}`, () => writePin(this.objects, from, reader, cut));
    this.pinned.add(key);
  }

  /** Applies `from`'s records of `req.loc` after the copy's position, up to the cut, to the copy. */
  private async catchUp(call: Call, copy: OriginCopy, req: ImportRequest, depth: number): Promise<void> {
    const done = copy.applied.get(req.loc);
    const { entries, known } = originEntries(await this.listSegments(req.from, call), copy, req, this.logger);
    const start = done === undefined ? startOf(copy.start, entries, known) : { order: done + 1, seg: -1, off: SEGMENT_HEADER_BYTES };
    for (const { id, order } of entries) {
      if (order < start.order) continue;
      const scanned = await this.scan(req.from, id);
      const from = id === start.seg ? start.off : SEGMENT_HEADER_BYTES;
      let batch: Array<{ rec: LogRecord; ptr: Pointer }> = [];
      const flush = () => {
        if (batch.length > 0) this.applyToCopy(copy, batch, call.now);
        batch = [];
      };
      for (const { rec, ptr } of scanned.records) {
        if (rec.loc !== req.loc || ptr.off < from) continue;
        if (rec.t !== "import") {
          batch.push({ rec, ptr });
          continue;
        }
        flush();
        // `from` imported the location here: prepare its rows as `from` did, then apply them.
        const rows = await this.prepareOne(call, req.from, importRequestOf(rec), depth + 1);
        const applied: ImportRecord = { ...rec };
        registerImport(applied, rows);
        this.applyToCopy(copy, [{ rec: applied, ptr }], call.now);
      }
      flush();
      copy.applied.set(req.loc, order);
    }
    if ((copy.applied.get(req.loc) ?? -1) < req.cut) copy.applied.set(req.loc, req.cut);
  }

  private applyToCopy(copy: OriginCopy, items: Array<{ rec: LogRecord; ptr: Pointer }>, now: number): void {
    const last = items[items.length - 1]!.ptr;
    const applied = applyRecords(copy.index, items, { replay: true, dedupWindowMs: this.limits.dedupWindowMs, now }, { seg: last.seg, off: last.off + last.len });
    for (const q of applied.quarantined) {
      this.logger.warn({ event: "takeover_record_skipped", location: q.loc, segment: q.ptr.seg, offset: q.ptr.off, from: copy.from, reason: q.reason }, `a record of "${q.loc}" at segment ${q.ptr.seg} offset ${q.ptr.off} of server "${copy.from}" could not be applied (${q.reason}); the takeover skips it`);
    }
  }

  /** The records of segment `id` of `from`, values left out (cached). */
  private async scan(from: string, id: number): Promise<ScannedSegment> {
    const cacheKey = `${from}\0${id}`;
    const hit = this.scans.get(cacheKey);
    if (hit) return hit;
    const key = segmentKey(from, id);
    const raw = await this.retrying(`reading segment ${key}`, async () => {
      const obj = await this.objects.get(key);
      if (!obj) throw new StrataError("UNAVAILABLE", `segment ${key} was listed in the object store but could not be read; retry`);
      this.stats.bytesRead += obj.byteLength;
      try {
        return unsealSegment(id, obj);
      } catch (err) {
        // Read once more (a flip in transit is not damage of the object), then report it.
        const again = await this.objects.get(key);
        if (!again) throw err;
        return unsealSegment(id, again);
      }
    });
    this.stats.segmentsRead++;
    const out = scanOriginSegment(raw, id, from, this.limits.recordBytesMax, this.logger, this.stats);
    this.scans.set(cacheKey, out);
    return out;
  }

  private listSegments(from: string, call?: Call): Promise<OriginSegments> {
    const list = () =>
      this.retrying(`listing the segments of server "${from}"`, async () => {
        const { ids, markers } = await listServerSegments(this.objects, from);
        const own = ids.filter((id) => id < FOREIGN_SEG_SPAN);
        return { normals: own.filter((id) => !isCompacted(id)), outputs: own.filter((id) => isCompacted(id)), markers };
      });
    return call ? this.memo(call.segments, from, list) : list();
  }

  private memo<T>(map: Map<string, Promise<T>>, key: string, make: () => Promise<T>): Promise<T> {
    let p = map.get(key);
    if (!p) {
      p = make();
      map.set(key, p);
      p.catch(() => map.delete(key));
    }
    return p;
  }

  /** Runs `fn`, retrying retryable failures (object store down) with backoff for up to importRetryMs. */
  private async retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.limits.importRetryMs;
    const delays = backoff({ initialMs: Math.min(RETRY_FIRST_MS, this.limits.uploadRetryMaxMs), maxMs: this.limits.uploadRetryMaxMs });
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        const retryable = StrataError.is(err) && err.retryable && err.code !== "CLOSED";
        if (!retryable || Date.now() >= deadline || this.closed) {
          if (StrataError.is(err)) throw err;
          throw new StrataError("IO", `${what} failed: ${(err as Error).message}`, { cause: err });
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(delays.next(), Math.max(1, deadline - Date.now()))));
      }
    }
  }
}

function pin(copy: OriginCopy): OriginCopy {
  copy.users += 1;
  return copy;
}

export function importRequestOf(rec: ImportRecord): ImportRequest {
  const r: ImportRequest = { loc: rec.loc, from: rec.from, cut: rec.cut };
  if (rec.ckpt !== undefined) r.ckpt = rec.ckpt;
  return r;
}

/** Where a store keeps its origin copies. */
export function importTmpDir(dataDir: string): string {
  return path.join(dataDir, "import-tmp");
}
