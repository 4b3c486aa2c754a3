/**
 * Applying an `import` record (a takeover, docs/failover.md) to the index: the location's rows
 * are reset and replaced by the rows prepared beforehand from another server's object-store data
 * (../tier/takeover.ts). This runs inside `IndexBatch.apply` (./apply.ts), in the same index
 * transaction as the records around it, for a live import and for replay alike.
 *
 * Prepared rows use their own segment-id space, so they can be built before the transaction that
 * allocates foreign log numbers: an id below FOREIGN_SEG_SPAN is a segment of this server's own
 * log; `k × span + s` (k ≥ 1) is segment `s` of server `logs[k - 1]`, renumbered here to this
 * index's foreign log of that server (./foreign-logs.ts), allocated in this transaction if new.
 *
 * Invariants: after the apply, every row of the location in locs/locIds/seqs/kvs/revs/dedup/
 * dedupAge/ttl/conf/confAge is one of the prepared rows (the source's configuration comes along) (the old ones are gone, the location has a new locId,
 * so nothing keyed by the old id can leak into it); msgIds already outside the dedup window are
 * left out, as a replayed append leaves them out; the location has no moved-away quarantine
 * entry (./quarantine.ts) any more; its epoch lineage (./lineage.ts) is the source's with the
 * record's own [epoch, rev] appended, at most `lineageMax` entries (replay and a takeover that
 * replays this server's records come to the same lineage: it depends only on the record and the
 * source's data).
 */
import { assert } from "../assert.js";
import type { ImportRecord } from "../log/record.js";
import type { Kind } from "../types.js";
import { locationEnd } from "./codecs.js";
import { foreignLog, foreignSeg, localSeg, logOf } from "./foreign-logs.js";
import type { ConfEntry, DedupEntry, KvIndexEntry, LmdbIndex, LocMeta, RevEntry, SeqEntry } from "./lmdb-index.js";
import { dropConf, putConf } from "./location-conf.js";
import { dropQuarantine } from "./quarantine.js";
import { appendLineage, putLineage, type LineageEntry } from "./lineage.js";

/** A location's rows, ready to be written by an import (segment ids in the prepared space above). */
export interface ImportRows {
  /** Absent: the location is empty (it never existed at the source up to the cut). */
  meta?: { kind: Kind; rev: number; lastSeq: number; count: number; bytes: number };
  /** Servers named by prepared segment ids ≥ FOREIGN_SEG_SPAN (never this server itself). */
  logs: string[];
  seqs: Array<[seq: number, entry: SeqEntry]>;
  kvs: Array<[key: string, entry: KvIndexEntry]>;
  revs: Array<[rev: number, entry: RevEntry]>;
  dedup: Array<[msgId: string, entry: DedupEntry]>;
  /** The location's configuration (limits) at the source, if it had one. */
  conf?: ConfEntry;
  /** The location's epoch lineage at the source (./lineage.ts), at most `lineageMax - 1` entries. */
  lineage: LineageEntry[];
  /** Entries kept once the import's own is appended (Limits `epochLineageMax`). */
  lineageMax: number;
  /** The checkpoint key of the source the rows were built from, if any. */
  ckpt?: string;
  /** Rough bytes held (for caches and reports). */
  bytes: number;
}

/**
 * The rows prepared for each import record about to be applied. Keyed by the record object itself:
 * the commit queue and replay hand `IndexBatch.apply` the very object that was registered.
 */
const prepared = new WeakMap<ImportRecord, ImportRows>();

export function registerImport(rec: ImportRecord, rows: ImportRows): void {
  prepared.set(rec, rows);
}

/** Inside an index write transaction: deletes every row of `loc` (its metadata included). */
export function resetLocation(index: LmdbIndex, loc: string, meta: LocMeta | undefined): void {
  if (meta === undefined) return;
  const id = meta.id;
  for (const key of index.seqs.getKeys({ start: [id, 0], end: locationEnd(id) })) index.seqs.remove(key);
  for (const { key, value } of index.kvs.getRange({ start: [id, ""], end: [id + 1, ""] })) {
    if (value[5] !== 0) index.ttl.remove([value[5], id, key[1] as string]);
    index.kvs.remove(key);
  }
  for (const key of index.revs.getKeys({ start: [id, 0], end: locationEnd(id) })) index.revs.remove(key);
  for (const { key, value } of index.dedup.getRange({ start: [id], end: [id + 1] } as never)) {
    const [, msgId] = key as [number, string];
    index.dedupAge.remove([value[3], id, msgId]);
    index.dedup.remove(key);
  }
  dropConf(index, id);
  index.locIds.remove(id);
  index.locs.remove(loc);
}

/**
 * Inside an index write transaction: resets `rec.loc` and writes its prepared rows. Returns the
 * location's new metadata (undefined when it is empty now).
 */
export function applyImport(index: LmdbIndex, rec: ImportRecord, old: LocMeta | undefined, opts: { now: number; dedupWindowMs: number }): LocMeta | undefined {
  const rows = prepared.get(rec);
  assert(rows !== undefined, `the rows of the import of ${rec.loc} were prepared before it is applied`);
  resetLocation(index, rec.loc, old);
  // The location came back to this server: its history is the imported one now (./quarantine.ts).
  dropQuarantine(index, rec.loc);
  // Even an empty location gets its entry; a record of an earlier release has no `rev`: the rows hold it.
  putLineage(index, rec.loc, appendLineage(rows.lineage, rec.epoch, rec.rev ?? rows.meta?.rev ?? 0, rows.lineageMax));
  if (rows.meta === undefined) return undefined;
  const logs = rows.logs.map((server) => foreignLog(index, server));
  const seg = (p: number): number => {
    const k = logOf(p);
    if (k === 0) return p;
    const f = logs[k - 1];
    assert(f !== undefined, "a prepared pointer names a prepared log");
    return foreignSeg(f, localSeg(p));
  };
  const id = index.nextLocId();
  index.locIds.put(id, rec.loc);
  for (const [seq, e] of rows.seqs) index.seqs.put([id, seq], [seg(e[0]), e[1], e[2], e[3]]);
  for (const [key, e] of rows.kvs) {
    index.kvs.put([id, key], [seg(e[0]), e[1], e[2], e[3], e[4], e[5]]);
    if (e[5] !== 0) index.ttl.put([e[5], id, key], e[4]);
  }
  for (const [rev, e] of rows.revs) index.revs.put([id, rev], e[3] === undefined ? [seg(e[0]), e[1], e[2]] : [seg(e[0]), e[1], e[2], e[3]]);
  if (rows.conf) putConf(index, id, rows.conf.limits, { seg: seg(rows.conf.seg), off: rows.conf.off, len: rows.conf.len });
  const window = rows.conf?.limits.dedupWindowMs ?? opts.dedupWindowMs;
  for (const [msgId, e] of rows.dedup) {
    if (opts.now - e[3] > window) continue;
    index.dedup.put([id, msgId], e);
    index.dedupAge.put([e[3], id, msgId], null);
  }
  return { id, ...rows.meta };
}
