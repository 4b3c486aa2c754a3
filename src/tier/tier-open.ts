/**
 * The cold tier's segment states at open (`Tier.start`, ./tier.ts): from the index, the local
 * segment files and the segments recovery found in the object store, which segments are shipped,
 * which still have to be, which are evicted, and which one is replaced rather than created.
 *
 * Invariants it keeps:
 * - An object named like the active segment holds an older version of it: that segment is the one
 *   re-shipped with a plain put (`replaceAtOpen`), and object acks of its records wait for that.
 * - A segment recorded as sealed and found in the object store is left to the upload loop, which
 *   tells our own unrecorded put from a twin's conflicting object; it is not taken as shipped here.
 * - A segment shipped with damaged ranges stays local for good (never handed over as evictable).
 * - A superseded segment (replaced by a compaction output) is never shipped, evicted or counted
 *   again; a compaction output keeps its cover.
 * - Object sizes from recovery's listing go to the block reader, so faulting an evicted segment in
 *   needs no HEAD request.
 * - Segments to ship are queued in log order: an output made while the store had no tier goes
 *   where the segments it covers would have, so a restore never finds a gap before it.
 */
import fs from "node:fs";
import type { LmdbIndex, SegmentInfo } from "../index/lmdb-index.js";
import { segmentPath } from "../log/segment-files.js";
import { isCompacted } from "../log/segment-set.js";
import type { BlockReader } from "./block-reader.js";
import type { LocalCache } from "./local-cache.js";

/** The tier's parts its states at open are loaded into. */
export interface TierOpenState {
  index: LmdbIndex;
  segmentsDir: string;
  cache: LocalCache;
  reader: BlockReader;
  /** Own segments in the object store (added to). */
  uploaded: Set<number>;
  /** Sealed segments still to ship (added to, then sorted in log order). */
  pending: number[];
  /** Called with the segment active at open whose older version is in the object store. */
  replaceAtOpen: (seg: number) => void;
}

/**
 * Loads segment states from the index and queues what still has to be uploaded. `inTier` are
 * the segment ids found in the object store (`sizes`: their object sizes where the listing gave
 * them); `local` those on the local disk; `active` the segment taking appends.
 */
export function loadSegmentStates(t: TierOpenState, active: number, local: number[], inTier: number[], sizes: ReadonlyMap<number, number>): void {
  const localSet = new Set(local);
  for (const seg of inTier) {
    // An object named like the active segment holds an older version of it (a crash can only
    // leave that behind if the segment after it was never created); it is re-shipped on seal,
    // replacing that object, and object acks of its records must wait for that.
    if (seg === active) {
      t.replaceAtOpen(seg);
      continue;
    }
    // Recorded as sealed but found in the object store: our own put whose success was never
    // recorded (a crash), or a conflicting object put by a twin. The upload loop tells which.
    if (localSet.has(seg) && t.index.segs.get(seg)?.state === "sealed") continue;
    t.uploaded.add(seg);
  }
  const updates: Array<[number, SegmentInfo]> = [];
  for (const seg of new Set([...local, ...inTier])) {
    if (seg === active) continue;
    const prev = t.index.segs.get(seg);
    // A compaction output keeps its cover (recovery recorded it: ../open-segments.ts).
    const cover = prev?.lo !== undefined && prev.hi !== undefined ? { lo: prev.lo, hi: prev.hi } : {};
    if (prev?.state === "superseded") {
      // Replaced by a compaction output: never shipped, evicted or counted again; the
      // compactor's reclaim deletes it. Reads of it (a pointer held across the switch) go remote
      // once the local file is gone.
      if (!localSet.has(seg)) t.cache.noteEvicted(seg);
      continue;
    }
    if (!localSet.has(seg)) {
      t.cache.noteEvicted(seg);
      const size = sizes.get(seg);
      if (size !== undefined) t.reader.noteSize(seg, size);
      updates.push([seg, { ...cover, state: "evicted", bytes: 0 }]);
      continue;
    }
    const bytes = fs.statSync(segmentPath(t.segmentsDir, seg)).size;
    t.cache.noteSealed(seg, bytes);
    if (t.uploaded.has(seg) && prev?.state === "damaged") {
      // Shipped with damaged ranges: kept locally for good (see the invariants).
    } else if (t.uploaded.has(seg)) {
      t.cache.noteUploaded(seg);
      updates.push([seg, { ...cover, state: "uploaded", bytes }]);
    } else {
      t.pending.push(seg);
      updates.push([seg, { ...cover, state: "sealed", bytes }]);
    }
  }
  if (updates.length > 0) t.index.write(() => updates.forEach(([seg, info]) => t.index.segs.put(seg, info)));
  // In log order: a compaction output made while the store had no tier (its id is ≥ 2^31) goes
  // where the segments it covers would have, so a restore never finds a gap before it.
  const order = (seg: number) => (isCompacted(seg) ? (t.index.segs.get(seg)?.hi ?? seg) : seg);
  t.pending.sort((a, b) => order(a) - order(b) || a - b);
}
