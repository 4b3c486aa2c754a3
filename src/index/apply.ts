/**
 * Applying one log record to the index. This is the only code that changes the index's view of
 * a location, and it runs both for live writes (after the record is durable in the log) and for
 * replay during recovery or reindex, so both paths produce the same index by construction.
 * It runs inside `LmdbIndex.write`, a batch of records per transaction.
 */
import { assert } from "../assert.js";
import type { LogRecord, Pointer } from "../log/record.js";
import type { Kind } from "../types.js";
import type { KvIndexEntry, LmdbIndex, LocMeta } from "./lmdb-index.js";

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

  constructor(
    private readonly index: LmdbIndex,
    private readonly opts: ApplyOptions,
  ) {}

  /**
   * Returns how many stream entries a deleteAll removed (0 for other records), or -1 when a
   * replayed record was skipped because the index already reflects it or it conflicts with it.
   */
  apply(rec: LogRecord, ptr: Pointer): number {
    if (rec.t === "chunk") return 0;
    const kind: Kind = rec.t === "kset" || rec.t === "kdel" ? "kv" : "stream";
    const meta = this.locationFor(rec.loc, kind);
    if (meta.kind !== kind || rec.rev <= meta.rev) {
      assert(this.opts.replay, `live record for ${rec.loc} does not follow the index (kind ${meta.kind}, rev ${meta.rev} → ${rec.rev})`);
      return -1;
    }
    const removed = applyToLocation(this.index, meta, rec, ptr, this.opts);
    meta.rev = rec.rev;
    this.index.revs.put([meta.id, rec.rev], rec.t === "sdelall" ? [ptr.seg, ptr.off, ptr.len, removed] : [ptr.seg, ptr.off, ptr.len]);
    return removed;
  }

  /** Writes the metadata of every location the batch touched; returns it (committed or not). */
  finish(): ReadonlyMap<string, LocMeta> {
    for (const [loc, meta] of this.metas) this.index.locs.put(loc, meta);
    this.index.metasWritten(this.metas);
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

function applyToLocation(index: LmdbIndex, meta: LocMeta, rec: Exclude<LogRecord, { t: "chunk" }>, ptr: Pointer, opts: ApplyOptions): number {
  switch (rec.t) {
    case "sset": {
      const key: [number, number] = [meta.id, rec.seq];
      // Nothing was ever written above lastSeq, so an append needs no lookup of an old entry.
      const old = rec.seq > meta.lastSeq ? undefined : index.seqs.get(key);
      if (old) meta.bytes -= old[3];
      else meta.count += 1;
      meta.bytes += rec.size;
      index.seqs.put(key, [ptr.seg, ptr.off, ptr.len, rec.size]);
      if (rec.seq > meta.lastSeq) meta.lastSeq = rec.seq;
      const at = rec.at ?? rec.ts;
      if (rec.msgId !== undefined && opts.now - at <= opts.dedupWindowMs) {
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
        index.seqs.remove(key);
      }
      return 0;
    }
    case "sdelall": {
      let removed = 0;
      for (const { key, value } of index.seqs.getRange({ start: [meta.id, 0], end: [meta.id, rec.endSeq + 1] })) {
        meta.count -= 1;
        meta.bytes -= value[3];
        index.seqs.remove(key);
        removed += 1;
      }
      return removed;
    }
    case "kset": {
      const key: [number, string] = [meta.id, rec.key];
      removeKv(index, meta, rec.key, index.kvs.get(key), false);
      meta.count += 1;
      meta.bytes += rec.size;
      const entry: KvIndexEntry = [ptr.seg, ptr.off, ptr.len, rec.size, rec.rev, rec.expiresAt ?? 0];
      index.kvs.put(key, entry);
      if (rec.expiresAt !== undefined) index.ttl.put([rec.expiresAt, meta.id, rec.key], rec.rev);
      return 0;
    }
    case "kdel": {
      const key: [number, string] = [meta.id, rec.key];
      removeKv(index, meta, rec.key, index.kvs.get(key), true);
      return 0;
    }
  }
}

function removeKv(index: LmdbIndex, meta: LocMeta, key: string, old: KvIndexEntry | undefined, removeEntry: boolean): void {
  if (!old) return;
  meta.count -= 1;
  meta.bytes -= old[3];
  if (old[5] !== 0) index.ttl.remove([old[5], meta.id, key]);
  if (removeEntry) index.kvs.remove([meta.id, key]);
}
