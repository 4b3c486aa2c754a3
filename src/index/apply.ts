/**
 * Applying one log record to the index. This is the only code that changes the index's view of
 * a location, and it runs both for live writes (after the record is durable in the log) and for
 * replay during recovery or reindex, so both paths produce the same index by construction.
 * It runs inside `LmdbIndex.write`, a batch of records per transaction.
 *
 * One record that cannot be applied must not make the log unusable: `applyRecords` applies a batch
 * in one transaction and, when that throws, applies its records one at a time; a record that fails
 * alone is quarantined (skipped, remembered in `sys` under `quarantine/<seg>/<off>` with the reason,
 * and returned so the caller reports it) and every other record applies. Replay goes through the
 * same function and skips a remembered record, so a record whose writer got an error stays absent.
 * Only an AssertionError or StrataError quarantines a record; any other failure (the index cannot
 * be written at all: its disk is full, LMDB refuses) is thrown, and the commit queue retries.
 *
 * Every record an overwrite, delete, deleteAll, expiry, config or import supersedes has its frame
 * length added to its segment's dead bytes (once per batch, ./dead-chunks.ts `DeadBytes`), for
 * compaction's dead fraction; replay runs the same code, so a rebuilt index counts the same.
 */
import { AssertionError, assert } from "../assert.js";
import { StrataError } from "../errors.js";
import type { LogRecord, Pointer } from "../log/record.js";
import type { Checkpoint } from "./lmdb-index.js";
import type { Kind } from "../types.js";
import { locationEnd } from "./codecs.js";
import { DeadBytes, chunkWritten, chunksReferenced } from "./dead-chunks.js";
import { applyImport } from "./import-rows.js";
import { dedupWindowOf, putConf } from "./location-conf.js";
import type { KvIndexEntry, LmdbIndex, LocMeta } from "./lmdb-index.js";

/**
 * Test-only: when set, called for each record before it is applied; a throw simulates a record
 * the index cannot take (see test/engine/seq-bounds.test.ts). Never set in production code.
 */
export const applyFaultHook: { fn?: (rec: LogRecord) => void } = {};

export interface Quarantined {
  /** Position of the record in the batch given to `applyRecords`. */
  i: number;
  loc: string;
  ptr: Pointer;
  reason: string;
}

export interface Applied {
  /** Per record, as `IndexBatch.apply` returns (-1 when skipped or quarantined). */
  removed: number[];
  quarantined: Quarantined[];
}

const QUARANTINE_PREFIX = "quarantine/";
const QUARANTINE_END = "quarantine0"; // "0" follows "/": the end of the prefix's key range

function quarantineKey(ptr: Pointer): string {
  return `${QUARANTINE_PREFIX}${ptr.seg}/${ptr.off}`;
}

/** Whether the record at `ptr` was quarantined (replay skips it; compaction drops it). */
export function isQuarantined(index: LmdbIndex, ptr: Pointer): boolean {
  return index.sys.get(quarantineKey(ptr)) !== undefined;
}

/** Inside a write transaction: forgets the quarantine entries of segment `seg` (it was deleted). */
export function dropSegmentQuarantine(index: LmdbIndex, seg: number): void {
  const start = `${QUARANTINE_PREFIX}${seg}/`;
  for (const key of index.sys.getKeys({ start, end: `${QUARANTINE_PREFIX}${seg}0` })) index.sys.remove(key);
}

/**
 * Applies durable records to the index with the recovery checkpoint `checkpoint`, isolating a
 * record that cannot be applied (see the file comment). Throws only when the index cannot take a
 * write at all (then no record is to blame, and nothing is quarantined).
 */
export function applyRecords(index: LmdbIndex, items: ReadonlyArray<{ rec: LogRecord; ptr: Pointer }>, opts: ApplyOptions, checkpoint: Checkpoint): Applied {
  // Replay skips what was quarantined before; one range probe spares the lookups when nothing was.
  let any = false;
  if (opts.replay) for (const _ of index.sys.getKeys({ start: QUARANTINE_PREFIX, end: QUARANTINE_END, limit: 1 })) any = true;
  const known = any ? items.map(({ ptr }) => index.sys.get(quarantineKey(ptr)) !== undefined) : [];
  try {
    return index.write(() => {
      const batch = new IndexBatch(index, opts);
      const removed = items.map(({ rec, ptr }, i) => (known[i] ? -1 : batch.apply(rec, ptr)));
      batch.finish();
      index.setCheckpoint(checkpoint);
      return { removed, quarantined: [] };
    });
  } catch {
    // Some record broke the transaction (nothing of it committed): find which, one at a time.
  }
  const removed: number[] = [];
  const quarantined: Quarantined[] = [];
  items.forEach(({ rec, ptr }, i) => {
    if (known[i]) return void removed.push(-1);
    try {
      removed.push(
        index.write(() => {
          const batch = new IndexBatch(index, opts);
          const n = batch.apply(rec, ptr);
          batch.finish();
          return n;
        }),
      );
    } catch (err) {
      // Only Strata's own refusals blame the record. Anything else (the index's disk is full, an
      // LMDB error) is the environment's: no record is quarantined for it, and the caller tries
      // the batch again later (records applied meanwhile are skipped then, as replay does).
      if (!(err instanceof AssertionError || err instanceof StrataError)) throw err;
      removed.push(-1);
      quarantined.push({ i, loc: rec.t === "chunk" ? "" : rec.loc, ptr, reason: err instanceof Error ? err.message : String(err) });
    }
  });
  // This write succeeding shows the index works, so the failures were the records' own.
  index.write(() => {
    for (const q of quarantined) index.sys.put(quarantineKey(q.ptr), { loc: q.loc, reason: q.reason });
    index.setCheckpoint(checkpoint);
  });
  return { removed, quarantined };
}

export interface ApplyOptions {
  /** Replay tolerates records of a kind other than the location's (a damaged log) by skipping them. */
  replay: boolean;
  dedupWindowMs: number;
  now: number;
}

/**
 * The records applied in one index transaction. Each location's metadata is read once and written
 * once, at `finish`, however many of the batch's records touch it. Create it, `apply` records in
 * log order and `finish` it, all inside one `LmdbIndex.write`.
 */
export class IndexBatch {
  private readonly metas = new Map<string, LocMeta>();
  /** Locations an import of this batch left empty (their metadata is removed, not written). */
  private readonly emptied = new Set<string>();
  /** Frames the batch's records superseded, per segment, written once at `finish` (./dead-chunks.ts). */
  private readonly dead = new DeadBytes();

  constructor(
    private readonly index: LmdbIndex,
    private readonly opts: ApplyOptions,
  ) {}

  /**
   * Returns how many stream entries a deleteAll removed (0 for other records), or -1 when a
   * replayed record was skipped because the index already reflects it or it conflicts with it.
   */
  apply(rec: LogRecord, ptr: Pointer): number {
    applyFaultHook.fn?.(rec);
    // Chunks stay "open" until the set record listing them is applied (./dead-chunks.ts).
    if (rec.t === "chunk") {
      chunkWritten(this.index, ptr);
      return 0;
    }
    if (rec.t === "import") {
      // A takeover replaces the location whatever this index held of it (./import-rows.ts).
      const old = this.metas.get(rec.loc) ?? this.index.locs.get(rec.loc);
      if (old) this.dead.location(this.index, old.id);
      const meta = applyImport(this.index, rec, old, this.opts);
      if (meta === undefined) {
        this.metas.delete(rec.loc);
        this.emptied.add(rec.loc);
      } else {
        this.metas.set(rec.loc, meta);
        this.emptied.delete(rec.loc);
      }
      return 0;
    }
    if (rec.t === "config") {
      // Limits take no revision (docs/compaction.md); a config on a new location creates it.
      const meta = this.locationFor(rec.loc, rec.kind);
      this.emptied.delete(rec.loc);
      if (meta.kind !== rec.kind) {
        assert(this.opts.replay, `live config for ${rec.loc} does not follow the index (kind ${meta.kind}, not ${rec.kind})`);
        return -1;
      }
      const prev = this.index.conf.get(meta.id);
      if (prev) this.dead.add(prev.seg, prev.len);
      putConf(this.index, meta.id, rec.limits, ptr);
      return 0;
    }
    if ((rec.t === "sset" || rec.t === "kset") && rec.chunks) {
      chunksReferenced(this.index, rec.chunks);
      this.dead.span(ptr.seg, rec.chunks);
    }
    const kind: Kind = rec.t === "kset" || rec.t === "kdel" ? "kv" : "stream";
    const meta = this.locationFor(rec.loc, kind);
    this.emptied.delete(rec.loc);
    if (meta.kind !== kind || rec.rev <= meta.rev) {
      assert(this.opts.replay, `live record for ${rec.loc} does not follow the index (kind ${meta.kind}, rev ${meta.rev} → ${rec.rev})`);
      return -1;
    }
    const removed = applyToLocation(this.index, meta, rec, ptr, this.opts, this.dead);
    meta.rev = rec.rev;
    this.index.revs.put([meta.id, rec.rev], rec.t === "sdelall" ? [ptr.seg, ptr.off, ptr.len, removed] : [ptr.seg, ptr.off, ptr.len]);
    return removed;
  }

  /** Writes the metadata of every location the batch touched; returns it (committed or not). */
  finish(): ReadonlyMap<string, LocMeta> {
    for (const [loc, meta] of this.metas) this.index.locs.put(loc, meta);
    this.dead.flush(this.index);
    this.index.metasWritten(this.metas, [...this.emptied].filter((loc) => !this.metas.has(loc)));
    return this.metas;
  }

  private locationFor(loc: string, kind: Kind): LocMeta {
    let meta = this.metas.get(loc) ?? this.index.locs.get(loc);
    if (meta === undefined) {
      const id = this.index.nextLocId();
      this.index.locIds.put(id, loc);
      meta = { id, kind, rev: 0, lastSeq: 0, count: 0, bytes: 0 };
    }
    this.metas.set(loc, meta);
    return meta;
  }
}

function applyToLocation(index: LmdbIndex, meta: LocMeta, rec: Exclude<LogRecord, { t: "chunk" | "import" | "config" }>, ptr: Pointer, opts: ApplyOptions, dead: DeadBytes): number {
  switch (rec.t) {
    case "sset": {
      const key: [number, number] = [meta.id, rec.seq];
      // Nothing was ever written above lastSeq, so an append needs no lookup of an old entry.
      const old = rec.seq > meta.lastSeq ? undefined : index.seqs.get(key);
      if (old) {
        meta.bytes -= old[3];
        dead.add(old[0], old[2]);
      } else meta.count += 1;
      meta.bytes += rec.size;
      index.seqs.put(key, [ptr.seg, ptr.off, ptr.len, rec.size]);
      if (rec.seq > meta.lastSeq) meta.lastSeq = rec.seq;
      const at = rec.at ?? rec.ts;
      const window = rec.msgId === undefined ? 0 : dedupWindowOf(index, meta.id, opts.dedupWindowMs);
      if (rec.msgId !== undefined && window > 0 && opts.now - at <= window) {
        index.dedup.put([meta.id, rec.msgId], [rec.seq, rec.rev, rec.ts, at]);
        index.dedupAge.put([at, meta.id, rec.msgId], null);
      }
      return 0;
    }
    case "sdel": {
      const key: [number, number] = [meta.id, rec.seq];
      const old = index.seqs.get(key);
      if (old) {
        meta.count -= 1;
        meta.bytes -= old[3];
        dead.add(old[0], old[2]);
        index.seqs.remove(key);
      }
      // A no-op for live writes (seq <= lastSeq); after a compaction dropped the deleted set
      // records, it keeps the stream's lastSeq on a rebuild (docs/compaction.md).
      if (rec.seq > meta.lastSeq) meta.lastSeq = rec.seq;
      return 0;
    }
    case "sdelall": {
      let removed = 0;
      // endSeq + 1 is exact only below 2^53 − 1; a deleteAll up to there covers the whole stream.
      const end: [number, number] = rec.endSeq < Number.MAX_SAFE_INTEGER ? [meta.id, rec.endSeq + 1] : locationEnd(meta.id);
      for (const { key, value } of index.seqs.getRange({ start: [meta.id, 0], end })) {
        meta.count -= 1;
        meta.bytes -= value[3];
        dead.add(value[0], value[2]);
        index.seqs.remove(key);
        removed += 1;
      }
      if (rec.endSeq > meta.lastSeq) meta.lastSeq = rec.endSeq; // as for sdel
      return removed;
    }
    case "kset": {
      const key: [number, string] = [meta.id, rec.key];
      removeKv(index, meta, rec.key, index.kvs.get(key), false, dead);
      meta.count += 1;
      meta.bytes += rec.size;
      const entry: KvIndexEntry = [ptr.seg, ptr.off, ptr.len, rec.size, rec.rev, rec.expiresAt ?? 0];
      index.kvs.put(key, entry);
      if (rec.expiresAt !== undefined) index.ttl.put([rec.expiresAt, meta.id, rec.key], rec.rev);
      return 0;
    }
    case "kdel": {
      const key: [number, string] = [meta.id, rec.key];
      removeKv(index, meta, rec.key, index.kvs.get(key), true, dead);
      return 0;
    }
  }
}

function removeKv(index: LmdbIndex, meta: LocMeta, key: string, old: KvIndexEntry | undefined, removeEntry: boolean, dead: DeadBytes): void {
  if (!old) return;
  dead.add(old[0], old[2]);
  meta.count -= 1;
  meta.bytes -= old[3];
  if (old[5] !== 0) index.ttl.remove([old[5], meta.id, key]);
  if (removeEntry) index.kvs.remove([meta.id, key]);
}
