/**
 * Dead bytes: how many bytes of each own segment's record frames no index entry needs any more,
 * so that compaction (its dead fraction, docs/compaction.md) and `strata stat` can tell how much
 * of each segment is garbage. One notion, two sources, one table (`deadBytes`: segment → bytes):
 * - records superseded by later ones (an overwrite, delete, deleteAll, expiry, a newer config, an
 *   import that reset the location): `IndexBatch` (./apply.ts) adds the old record's frame length
 *   through a `DeadBytes` accumulator, flushed once per batch (no extra put per record);
 * - chunk records no set record will ever reference (below).
 * A compaction's switch (./compact-switch.ts) drops its inputs' counts and gives its output the
 * bytes of the records that died while it ran.
 *
 * `DeadBytes` also notes **chunk spans**: a set record whose chunks lie in earlier segments ties
 * those segments to its own (sys `chunkSpan/<seg>` → the other segments its records' chunks lie
 * in). A compaction run must not end between a chunk and the set record listing it: the chunk
 * would be dropped (no set record in the run lists it) while the record outside still points at it.
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
import { locationEnd } from "./codecs.js";
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

/**
 * Dead bytes and chunk spans gathered over one index transaction, written once by `flush`.
 * Foreign segments (another server's) are never counted: their garbage is not this server's.
 */
export class DeadBytes {
  private readonly bySeg = new Map<number, number>();
  private readonly spans = new Map<number, Set<number>>();

  /** The frame at `seg` of `len` bytes is superseded. */
  add(seg: number, len: number): void {
    if (isForeign(seg)) return;
    this.bySeg.set(seg, (this.bySeg.get(seg) ?? 0) + len);
  }

  /** Every own record of location `id` is superseded (an import resets it). */
  location(index: LmdbIndex, id: number): void {
    for (const { value } of index.seqs.getRange({ start: [id, 0], end: locationEnd(id) })) this.add(value[0], value[2]);
    for (const { value } of index.kvs.getRange({ start: [id, ""], end: [id + 1, ""] })) this.add(value[0], value[2]);
    const conf = index.conf.get(id);
    if (conf) this.add(conf.seg, conf.len);
  }

  /** A set record in `seg` lists `chunks`: notes the other own segments they lie in. */
  span(seg: number, chunks: readonly Pointer[]): void {
    for (const c of chunks) {
      if (c.seg === seg || isForeign(c.seg)) continue;
      let set = this.spans.get(seg);
      if (!set) this.spans.set(seg, (set = new Set()));
      set.add(c.seg);
    }
  }

  /** Inside the write transaction: adds what was gathered to the index. */
  flush(index: LmdbIndex): void {
    for (const [seg, n] of this.bySeg) index.deadBytes.put(seg, (index.deadBytes.get(seg) ?? 0) + n);
    for (const [seg, set] of this.spans) {
      const old = chunkSpanOf(index, seg);
      if (old.every((s) => set.has(s)) && old.length === set.size) continue;
      index.sys.put(chunkSpanKey(seg), [...new Set([...old, ...set])].sort((a, b) => a - b));
    }
    this.bySeg.clear();
    this.spans.clear();
  }
}

function chunkSpanKey(seg: number): string {
  return `${CHUNK_SPAN_PREFIX}${seg}`;
}
const CHUNK_SPAN_PREFIX = "chunkSpan/";

/** The other own segments holding chunks of set records in `seg` (empty when none). */
export function chunkSpanOf(index: LmdbIndex, seg: number): number[] {
  return (index.sys.get(chunkSpanKey(seg)) as number[] | undefined) ?? [];
}

/** Every chunk span: segment → the other segments its set records' chunks lie in. */
export function chunkSpans(index: LmdbIndex): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const { key, value } of index.sys.getRange({ start: CHUNK_SPAN_PREFIX, end: "chunkSpan0" })) {
    out.set(Number(String(key).slice(CHUNK_SPAN_PREFIX.length)), value as number[]);
  }
  return out;
}

/** Inside a write transaction: sets (or with an empty list, removes) the chunk span of `seg`. */
export function setChunkSpan(index: LmdbIndex, seg: number, segs: readonly number[]): void {
  if (segs.length === 0) index.sys.remove(chunkSpanKey(seg));
  else index.sys.put(chunkSpanKey(seg), [...segs].sort((a, b) => a - b));
}

/** Inside an index write transaction: moves still-open chunks to their segments' dead bytes. */
function markDead(index: LmdbIndex, chunks: Iterable<Pointer>): number {
  const dead = new DeadBytes();
  let bytes = 0;
  for (const c of chunks) {
    if (isForeign(c.seg)) continue;
    const len = index.openChunks.get([c.seg, c.off]);
    // Absent: already referenced or already dead; counting it again would break the invariant.
    if (len === undefined) continue;
    index.openChunks.remove([c.seg, c.off]);
    dead.add(c.seg, len);
    bytes += len;
  }
  dead.flush(index);
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

/** Dead bytes per segment (for compaction and `strata stat`). */
export function deadBytesBySegment(index: LmdbIndex): Map<number, number> {
  const out = new Map<number, number>();
  for (const { key, value } of index.deadBytes.getRange()) out.set(key, value);
  return out;
}
