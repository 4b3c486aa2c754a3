/**
 * Accounting of chunk records that no set record will ever reference, so that compaction (and
 * `strata stat`) can tell how many bytes of each segment are garbage.
 *
 * A large value is written as chunk records first and made visible by the one set record that
 * lists them (large-value.ts). Until then its chunks are "open": `openChunks` ([seg, off] → frame
 * length) holds them, added when a chunk record is applied to the index and removed when the set
 * record listing it is applied. Both happen in `IndexBatch.apply` (apply.ts), for live writes and
 * for replay alike, so a rebuilt index has the same open chunks as the one it replaces.
 *
 * A chunk leaves `openChunks` in one of two ways: referenced (its set record was applied), or dead
 * (its bytes are added to `deadBytes`: segment id → bytes of chunk frames no record references).
 * A write that fails after writing chunks (an abandoned upload, a value over the limit) marks them
 * dead at once; and since no write survives a restart, every chunk still open when a store opens
 * is dead too (`sweepOpenChunks`, run once after recovery). Invariant: a chunk frame is counted in
 * at most one of `openChunks` and `deadBytes`, and only once.
 *
 * Only chunks of the own log are accounted: a foreign chunk (one of an imported value, in another
 * server's segment: ./foreign-logs.ts) is that server's garbage or not, never this one's.
 */
import { assert } from "../assert.js";
import type { Pointer } from "../log/record.js";
import { isForeign } from "./foreign-logs.js";
import type { LmdbIndex } from "./lmdb-index.js";

/** Inside an index write transaction: a chunk record was applied. */
export function chunkWritten(index: LmdbIndex, ptr: Pointer): void {
  assert(!isForeign(ptr.seg), "only chunk records of the own log are applied");
  index.openChunks.put([ptr.seg, ptr.off], ptr.len);
}

/** Inside an index write transaction: a set record listing these chunks was applied. */
export function chunksReferenced(index: LmdbIndex, chunks: readonly Pointer[]): void {
  for (const c of chunks) if (!isForeign(c.seg)) index.openChunks.remove([c.seg, c.off]);
}

/** Inside an index write transaction: moves still-open chunks to their segments' dead bytes. */
function markDead(index: LmdbIndex, chunks: Iterable<Pointer>): number {
  const bySeg = new Map<number, number>();
  let bytes = 0;
  for (const c of chunks) {
    if (isForeign(c.seg)) continue;
    const len = index.openChunks.get([c.seg, c.off]);
    // Absent: already referenced or already dead; counting it again would break the invariant.
    if (len === undefined) continue;
    index.openChunks.remove([c.seg, c.off]);
    bySeg.set(c.seg, (bySeg.get(c.seg) ?? 0) + len);
    bytes += len;
  }
  for (const [seg, n] of bySeg) index.deadBytes.put(seg, (index.deadBytes.get(seg) ?? 0) + n);
  return bytes;
}

/**
 * A write gave up on chunks it wrote (they will never be referenced): counts them dead in a
 * transaction of its own. Best effort: if the index cannot be written now (the store is closing),
 * the chunks stay open and the next open counts them.
 */
export function chunksAbandoned(index: LmdbIndex, chunks: readonly Pointer[]): void {
  if (chunks.length === 0) return;
  try {
    index.write(() => markDead(index, chunks));
  } catch {
    // left open: sweepOpenChunks counts them at the next open
  }
}

/**
 * At open, after recovery: no write survives a restart, so every open chunk is dead. Best effort
 * like `chunksAbandoned`: should the index refuse the write, the next open tries again.
 */
export function sweepOpenChunks(index: LmdbIndex): number {
  try {
    const open: Pointer[] = [];
    for (const { key, value } of index.openChunks.getRange()) open.push({ seg: key[0], off: key[1], len: value });
    return open.length === 0 ? 0 : index.write(() => markDead(index, open));
  } catch {
    return 0;
  }
}

/** Bytes of dead chunk frames per segment (for compaction and `strata stat`). */
export function deadBytesBySegment(index: LmdbIndex): Map<number, number> {
  const out = new Map<number, number>();
  for (const { key, value } of index.deadBytes.getRange()) out.set(key, value);
  return out;
}
