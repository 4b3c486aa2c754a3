/**
 * Compaction's two uses of the index (docs/compaction.md): the liveness decision for each record
 * of a run ("Which records are dead"), and the switch transaction that makes an output the copy
 * the index points at (step 4, the commit point).
 *
 * Invariants:
 * - The index is the judge: a set or config record is live exactly while its index entry (`seqs`,
 *   `kvs`, `conf`) points at its place; a stream message with a msgId inside its location's dedup
 *   window is kept too (a rebuild must find the msgId). Tombstones and imports are always kept,
 *   unless the index quarantined them (replay skips those by their place, which compaction changes).
 * - Entries only ever move forward (to newer records), so a record found dead stays dead; a
 *   record found live may die before the switch, which then counts it dead in the output.
 * - The switch is one transaction: every entry still pointing at a kept record's old place moves
 *   to its new one (compare-and-set), `revs` entries of dropped records go, the output is recorded
 *   with its cover and every input becomes "superseded"; it aborts (changing nothing) when an open
 *   chunk or a set record outside the run ties an input (./dead-chunks.ts).
 */
import { assert } from "../assert.js";
import type { LogRecord, Pointer } from "../log/record.js";
import { isCompacted, type Cover } from "../log/segment-set.js";
import { isQuarantined } from "./apply.js";
import { chunkSpans, setChunkSpan } from "./dead-chunks.js";
import type { LmdbIndex, SegmentState } from "./lmdb-index.js";

export type DropReason = "overwritten" | "deleted" | "expired" | "chunks" | "config";

/** Record kinds by the index entries the switch moves (a tombstone only its `revs` entry; an import none). */
export type KeptKind = "sset" | "kset" | "tomb" | "config" | "other";

/** A kept record: where it was, where it is in the output, and how to find its index entries. */
export interface Kept {
  kind: KeptKind;
  locId: number;
  /** seq (stream set) or key (kv set); unused for others. */
  seq: number;
  key: string;
  /** Revision (0: none, e.g. config or import). */
  rev: number;
  oldSeg: number;
  oldOff: number;
  neu: Pointer;
}

/** A dropped record whose `revs` entry (if it still points at it) goes at the switch. */
export interface DroppedRev {
  locId: number;
  rev: number;
  oldSeg: number;
  oldOff: number;
}

export type Verdict = { keep: true; locId: number } | { keep: false; why: DropReason; locId: number };

const points = (e: readonly (number | undefined)[] | undefined, ptr: Pointer): boolean => e !== undefined && e[0] === ptr.seg && e[1] === ptr.off;

/**
 * Whether the record at `ptr` (not a chunk: chunks follow their set records) is kept. `locId` is
 * the location's id now (0 when it has none), for the switch's lookups.
 */
export function decide(index: LmdbIndex, rec: Exclude<LogRecord, { t: "chunk" }>, ptr: Pointer, now: number, storeDedupWindowMs: number): Verdict {
  const locId = index.locs.get(rec.loc)?.id ?? 0;
  if (isQuarantined(index, ptr)) return { keep: false, why: "deleted", locId };
  switch (rec.t) {
    case "import":
    case "sdel":
    case "sdelall":
    case "kdel":
      return { keep: true, locId };
    case "config": {
      const e = locId ? index.conf.get(locId) : undefined;
      return e && e.seg === ptr.seg && e.off === ptr.off ? { keep: true, locId } : { keep: false, why: "config", locId };
    }
    case "sset": {
      const e = locId ? index.seqs.get([locId, rec.seq]) : undefined;
      if (points(e, ptr)) return { keep: true, locId };
      if (rec.msgId !== undefined && locId) {
        const window = index.conf.get(locId)?.limits.dedupWindowMs ?? storeDedupWindowMs;
        if (now - (rec.at ?? rec.ts) <= window) return { keep: true, locId };
      }
      return { keep: false, why: e ? "overwritten" : "deleted", locId };
    }
    case "kset": {
      const e = locId ? index.kvs.get([locId, rec.key]) : undefined;
      if (points(e, ptr)) return { keep: true, locId };
      if (e) return { keep: false, why: "overwritten", locId };
      return { keep: false, why: rec.expiresAt !== undefined && rec.expiresAt <= now ? "expired" : "deleted", locId };
    }
  }
}

/** The kind of a kept record, for the switch. */
export function keptKind(rec: LogRecord): KeptKind {
  switch (rec.t) {
    case "sset":
      return "sset";
    case "kset":
      return "kset";
    case "sdel":
    case "sdelall":
    case "kdel":
      return "tomb";
    case "config":
      return "config";
    default:
      return "other";
  }
}

/** Why a switch did not happen (nothing was changed). */
export class SwitchRefused extends Error {}

export interface SwitchPlan {
  out: Cover;
  /** Raw bytes of the output file. */
  outBytes: number;
  /** The output's state: "uploaded" with a tier (it is in the object store), else "sealed". */
  outState: SegmentState;
  /** Input ids, in log order, with their raw bytes. */
  inputs: ReadonlyArray<{ id: number; bytes: number }>;
  kept: readonly Kept[];
  dropped: readonly DroppedRev[];
  /** Other own segments holding chunks of kept set records (the output's chunk span). */
  outSpan: readonly number[];
  now: number;
  /** The active segment at the switch. */
  after: number;
  /** Log order (`hi`) of a segment id: for the chunk-span check. */
  orderOf: (seg: number) => number;
}

export interface SwitchResult {
  /** Kept records whose entry moved on during the compaction: dead in the output. */
  diedMeanwhile: number;
  diedBytes: number;
}

/** The switch transaction (one `LmdbIndex.write`); throws `SwitchRefused` and changes nothing when it may not happen. */
export function switchIn(index: LmdbIndex, plan: SwitchPlan): SwitchResult {
  return index.write(() => {
    const inputs = new Set(plan.inputs.map((i) => i.id));
    for (const { id } of plan.inputs) {
      for (const _ of index.openChunks.getKeys({ start: [id, 0], end: [id + 1, 0], limit: 1 })) {
        throw new SwitchRefused(`segment ${id} holds a chunk of a value still being written`);
      }
    }
    for (const [seg, list] of chunkSpans(index)) {
      if (inputs.has(seg) || plan.orderOf(seg) <= plan.out.hi) continue;
      const tied = list.find((c) => inputs.has(c));
      if (tied !== undefined) throw new SwitchRefused(`a set record in segment ${seg} lists chunks in segment ${tied}`);
    }
    let diedMeanwhile = 0;
    let diedBytes = 0;
    const died = (k: Kept) => {
      diedMeanwhile++;
      diedBytes += k.neu.len;
    };
    for (const k of plan.kept) {
      const old = { seg: k.oldSeg, off: k.oldOff, len: 0 };
      switch (k.kind) {
        case "sset": {
          const e = k.locId ? index.seqs.get([k.locId, k.seq]) : undefined;
          if (e && points(e, old)) index.seqs.put([k.locId, k.seq], [k.neu.seg, k.neu.off, k.neu.len, e[3]]);
          else died(k);
          break;
        }
        case "kset": {
          const e = k.locId ? index.kvs.get([k.locId, k.key]) : undefined;
          if (e && points(e, old)) index.kvs.put([k.locId, k.key], [k.neu.seg, k.neu.off, k.neu.len, e[3], e[4], e[5]]);
          else died(k);
          break;
        }
        case "config": {
          const e = k.locId ? index.conf.get(k.locId) : undefined;
          if (e && e.seg === k.oldSeg && e.off === k.oldOff) index.conf.put(k.locId, { ...e, seg: k.neu.seg, off: k.neu.off, len: k.neu.len });
          else died(k);
          break;
        }
        default:
          break;
      }
      if (k.rev > 0 && k.locId) {
        const r = index.revs.get([k.locId, k.rev]);
        if (r && points(r, old)) index.revs.put([k.locId, k.rev], r[3] === undefined ? [k.neu.seg, k.neu.off, k.neu.len] : [k.neu.seg, k.neu.off, k.neu.len, r[3]]);
      }
    }
    for (const d of plan.dropped) {
      if (!d.locId || d.rev <= 0) continue;
      const r = index.revs.get([d.locId, d.rev]);
      if (r && r[0] === d.oldSeg && r[1] === d.oldOff) index.revs.remove([d.locId, d.rev]);
    }
    assert(isCompacted(plan.out.id), "a compaction output has a compacted id");
    index.segs.put(plan.out.id, { state: plan.outState, bytes: plan.outBytes, lo: plan.out.lo, hi: plan.out.hi });
    for (const { id, bytes } of plan.inputs) {
      const prev = index.segs.get(id);
      const cover = prev?.lo !== undefined && prev.hi !== undefined ? { lo: prev.lo, hi: prev.hi } : {};
      index.segs.put(id, { state: "superseded", bytes: prev?.bytes || bytes, ...cover, by: plan.out.id, at: plan.now, after: plan.after });
      index.deadBytes.remove(id);
      setChunkSpan(index, id, []);
    }
    if (diedBytes > 0) index.deadBytes.put(plan.out.id, diedBytes);
    setChunkSpan(index, plan.out.id, plan.outSpan);
    return { diedMeanwhile, diedBytes };
  });
}
