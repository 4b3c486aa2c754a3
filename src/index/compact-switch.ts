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
 * - The switch is a sequence of transactions, driven by ../compact-switch-run.ts from its journal
 *   (./switch-journal.ts), so that the event loop and the writes get turns between them:
 *   1. `beginSwitch`: aborts (changing nothing) when an open chunk or a set record outside the run
 *      ties an input (./dead-chunks.ts); else the output is recorded "switching" with its cover and
 *      the journal header, nothing else.
 *   2. `switchPiece`, once per journal piece (`compactSwitchChunkRecords` records): every entry still
 *      pointing at a kept record's old place moves to its new one (compare-and-set; one already at
 *      the new place is left as it is), `revs` entries of dropped records go; a kept record whose
 *      entry points at neither died meanwhile and its bytes are ADDED to the output's deadBytes
 *      (writes between pieces add theirs for entries already moved: ./apply.ts). The header's
 *      `done` advances in the same transaction, so no piece is carried out twice.
 *   3. `endSwitch`: the output takes its final state, every input becomes "superseded" (their
 *      deadBytes and chunk spans go), the output's chunk span is set and the journal header goes.
 *   Between 1 and 3 every entry points at the output or at an input, both readable and holding
 *   the same record; the inputs stay the copy of record (not superseded) until 3.
 */
import { assert } from "../assert.js";
import type { LogRecord, Pointer } from "../log/record.js";
import { isCompacted } from "../log/segment-set.js";
import { isQuarantined } from "./apply.js";
import { chunkSpans, setChunkSpan } from "./dead-chunks.js";
import type { LmdbIndex } from "./lmdb-index.js";
import { KEPT_KINDS, putHeader, readHeader, removeHeader, takePiece, type DroppedTuple, type KeptTuple, type SwitchHeader } from "./switch-journal.js";

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

/** Whether an index entry (`[seg, off, …]`) points at `seg`/`off`. */
const pointsAt = (e: readonly (number | undefined)[] | undefined, seg: number, off: number): boolean => e !== undefined && e[0] === seg && e[1] === off;

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
      if (pointsAt(e, ptr.seg, ptr.off)) return { keep: true, locId };
      if (rec.msgId !== undefined && locId) {
        const window = index.conf.get(locId)?.limits.dedupWindowMs ?? storeDedupWindowMs;
        if (now - (rec.at ?? rec.ts) <= window) return { keep: true, locId };
      }
      return { keep: false, why: e ? "overwritten" : "deleted", locId };
    }
    case "kset": {
      const e = locId ? index.kvs.get([locId, rec.key]) : undefined;
      if (pointsAt(e, ptr.seg, ptr.off)) return { keep: true, locId };
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

/** The journal tuples of a run's kept records (those with an index entry the switch may move). */
export function keptTuples(out: number, kept: readonly Kept[]): KeptTuple[] {
  const tuples: KeptTuple[] = [];
  for (const k of kept) {
    assert(k.neu.seg === out, "a kept record's new place is in the output");
    const kind = KEPT_KINDS.indexOf(k.kind as never);
    // An import (and a tombstone without a revision) has no entry to move.
    if (kind < 0 || (k.kind === "tomb" && !(k.rev > 0 && k.locId))) continue;
    tuples.push([kind, k.locId, k.kind === "kset" ? k.key : k.seq, k.rev, k.oldSeg, k.oldOff, k.neu.off, k.neu.len]);
  }
  return tuples;
}

/** The journal tuples of a run's dropped records whose `revs` entry may have to go. */
export function droppedTuples(dropped: readonly DroppedRev[]): DroppedTuple[] {
  return dropped.filter((d) => d.locId && d.rev > 0).map((d) => [d.locId, d.rev, d.oldSeg, d.oldOff]);
}

/**
 * The switch's first transaction (one `LmdbIndex.write`): throws `SwitchRefused` and changes
 * nothing when it may not happen; else records the output as "switching" with the journal header.
 * `orderOf` gives a segment's log order (`hi`), for the chunk-span check.
 */
export function beginSwitch(index: LmdbIndex, h: SwitchHeader, orderOf: (seg: number) => number): void {
  index.write(() => {
    const inputs = new Set(h.inputs.map((i) => i.id));
    for (const { id } of h.inputs) {
      for (const _ of index.openChunks.getKeys({ start: [id, 0], end: [id + 1, 0], limit: 1 })) {
        throw new SwitchRefused(`segment ${id} holds a chunk of a value still being written`);
      }
    }
    for (const [seg, list] of chunkSpans(index)) {
      if (inputs.has(seg) || orderOf(seg) <= h.out.hi) continue;
      const tied = list.find((c) => inputs.has(c));
      if (tied !== undefined) throw new SwitchRefused(`a set record in segment ${seg} lists chunks in segment ${tied}`);
    }
    assert(isCompacted(h.out.id), "a compaction output has a compacted id");
    index.segs.put(h.out.id, { state: "switching", bytes: h.outBytes, lo: h.out.lo, hi: h.out.hi });
    putHeader(index, h);
  });
}

export interface PieceResult {
  /** Kept records whose entry moved on during the compaction: dead in the output. */
  died: number;
  diedBytes: number;
}

/**
 * Carries out journal piece `n` of output `out` in one transaction (see the invariants); a piece
 * already carried out (the header's `done` is past it) changes nothing.
 */
export function switchPiece(index: LmdbIndex, out: number, n: number): PieceResult {
  return index.write(() => {
    const h = readHeader(index, out);
    assert(h !== undefined, `output ${out} has a switch journal`);
    const result = { died: 0, diedBytes: 0 };
    if (h.done > n) return result;
    assert(h.done === n, `switch pieces of output ${out} are carried out in order`);
    const piece = takePiece(index, out, n);
    assert(piece !== undefined, `piece ${n} of output ${out}'s switch journal is there`);
    if (n < h.keptPieces) {
      for (const t of piece as KeptTuple[]) {
        if (!moveKept(index, out, t)) {
          result.died++;
          result.diedBytes += t[7];
        }
      }
    } else {
      for (const [locId, rev, oldSeg, oldOff] of piece as DroppedTuple[]) {
        const r = index.revs.get([locId, rev]);
        if (r && r[0] === oldSeg && r[1] === oldOff) index.revs.remove([locId, rev]);
      }
    }
    if (result.diedBytes > 0) index.deadBytes.put(out, (index.deadBytes.get(out) ?? 0) + result.diedBytes);
    putHeader(index, { ...h, done: n + 1 });
    return result;
  });
}

/** Moves a kept record's entries to its new place; false when it died meanwhile (its entry points at neither place). */
function moveKept(index: LmdbIndex, out: number, t: KeptTuple): boolean {
  const [kind, locId, seqOrKey, rev, oldSeg, oldOff, newOff, newLen] = t;
  let live = true;
  switch (KEPT_KINDS[kind]) {
    case "sset": {
      const key: [number, number] = [locId, seqOrKey as number];
      const e = locId ? index.seqs.get(key) : undefined;
      if (e && pointsAt(e, oldSeg, oldOff)) index.seqs.put(key, [out, newOff, newLen, e[3]]);
      else live = pointsAt(e, out, newOff);
      break;
    }
    case "kset": {
      const key: [number, string] = [locId, seqOrKey as string];
      const e = locId ? index.kvs.get(key) : undefined;
      if (e && pointsAt(e, oldSeg, oldOff)) index.kvs.put(key, [out, newOff, newLen, e[3], e[4], e[5]]);
      else live = pointsAt(e, out, newOff);
      break;
    }
    case "config": {
      const e = locId ? index.conf.get(locId) : undefined;
      if (e && e.seg === oldSeg && e.off === oldOff) index.conf.put(locId, { ...e, seg: out, off: newOff, len: newLen });
      else live = e !== undefined && e.seg === out && e.off === newOff;
      break;
    }
    default:
      break;
  }
  if (rev > 0 && locId) {
    const r = index.revs.get([locId, rev]);
    if (r && pointsAt(r, oldSeg, oldOff)) index.revs.put([locId, rev], r[3] === undefined ? [out, newOff, newLen] : [out, newOff, newLen, r[3]]);
  }
  return live;
}

/**
 * The switch's last transaction: the output takes its final state, the inputs become superseded
 * (at `now`, with `after` the active segment), the journal header goes. Returns the header.
 */
export function endSwitch(index: LmdbIndex, out: number, now: number, after: number): SwitchHeader {
  return index.write(() => {
    const h = readHeader(index, out);
    assert(h !== undefined, `output ${out} has a switch journal`);
    assert(h.done === h.keptPieces + h.droppedPieces, `every piece of output ${out}'s switch is carried out before its end`);
    index.segs.put(out, { state: h.outState, bytes: h.outBytes, lo: h.out.lo, hi: h.out.hi });
    for (const { id, bytes } of h.inputs) {
      const prev = index.segs.get(id);
      const cover = prev?.lo !== undefined && prev.hi !== undefined ? { lo: prev.lo, hi: prev.hi } : {};
      index.segs.put(id, { state: "superseded", bytes: prev?.bytes || bytes, ...cover, by: out, at: now, after });
      index.deadBytes.remove(id);
      setChunkSpan(index, id, []);
    }
    setChunkSpan(index, out, h.outSpan);
    removeHeader(index, out);
    return h;
  });
}
