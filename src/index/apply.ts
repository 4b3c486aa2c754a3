/**
 * Applying one log record to the index. This is the only code that changes the index's view of
 * a location, and it runs both for live writes (after the record is durable in the log) and for
 * replay during recovery or reindex, so both paths produce the same index by construction.
 * It must run inside `LmdbIndex.write`.
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

function locationFor(index: LmdbIndex, loc: string, kind: Kind): LocMeta {
  const meta = index.locs.get(loc);
  if (meta !== undefined) return meta;
  const id = index.nextLocId();
  index.locIds.put(id, loc);
  return { id, kind, rev: 0, lastSeq: 0, count: 0, bytes: 0 };
}

/**
 * Returns how many stream entries a deleteAll removed (0 for other records), or -1 when a
 * replayed record was skipped because the index already reflects it or it conflicts with it.
 */
export function applyRecord(index: LmdbIndex, rec: LogRecord, ptr: Pointer, opts: ApplyOptions): number {
  if (rec.t === "chunk") return 0;
  const kind: Kind = rec.t === "kset" || rec.t === "kdel" ? "kv" : "stream";
  const meta = locationFor(index, rec.loc, kind);
  if (meta.kind !== kind || rec.rev <= meta.rev) {
    assert(opts.replay, `live record for ${rec.loc} does not follow the index (kind ${meta.kind}, rev ${meta.rev} → ${rec.rev})`);
    return -1;
  }
  let removed = 0;
  switch (rec.t) {
    case "sset": {
      const key: [number, number] = [meta.id, rec.seq];
      const old = index.seqs.get(key);
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
      break;
    }
    case "sdel": {
      const key: [number, number] = [meta.id, rec.seq];
      const old = index.seqs.get(key);
      if (old) {
        meta.count -= 1;
        meta.bytes -= old[3];
        index.seqs.remove(key);
      }
      break;
    }
    case "sdelall": {
      for (const { key, value } of index.seqs.getRange({ start: [meta.id, 0], end: [meta.id, rec.endSeq + 1] })) {
        meta.count -= 1;
        meta.bytes -= value[3];
        index.seqs.remove(key);
        removed += 1;
      }
      break;
    }
    case "kset": {
      const key: [number, string] = [meta.id, rec.key];
      const old = index.kvs.get(key);
      removeKv(index, meta, rec.key, old, false);
      meta.count += 1;
      meta.bytes += rec.size;
      const entry: KvIndexEntry = [ptr.seg, ptr.off, ptr.len, rec.size, rec.rev, rec.expiresAt ?? 0];
      index.kvs.put(key, entry);
      if (rec.expiresAt !== undefined) index.ttl.put([rec.expiresAt, meta.id, rec.key], rec.rev);
      break;
    }
    case "kdel": {
      const key: [number, string] = [meta.id, rec.key];
      removeKv(index, meta, rec.key, index.kvs.get(key), true);
      break;
    }
  }
  meta.rev = rec.rev;
  index.locs.put(rec.loc, meta);
  index.revs.put([meta.id, rec.rev], rec.t === "sdelall" ? [ptr.seg, ptr.off, ptr.len, removed] : [ptr.seg, ptr.off, ptr.len]);
  return removed;
}

function removeKv(index: LmdbIndex, meta: LocMeta, key: string, old: KvIndexEntry | undefined, removeEntry: boolean): void {
  if (!old) return;
  meta.count -= 1;
  meta.bytes -= old[3];
  if (old[5] !== 0) index.ttl.remove([old[5], meta.id, key]);
  if (removeEntry) index.kvs.remove([meta.id, key]);
}
