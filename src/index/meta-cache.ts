/**
 * A bounded, (approximately) least-recently-used cache of location metadata (`locs`) for reads, so a hot get does
 * not decode the location's metadata from LMDB every time.
 *
 * It belongs to one `LmdbIndex` and is kept exact by it: every change to `locs` is made through
 * `IndexBatch` (./apply.ts) inside `LmdbIndex.write`, which hands the new metadata here only once
 * its transaction has committed. Absent locations are cached too (as `null`): creating one is such
 * a change. A reopened, rebuilt or restored index is a new `LmdbIndex` with an empty cache.
 */
import { assert } from "../assert.js";
import type { LocMeta } from "./lmdb-index.js";

export class MetaCache {
  // Two generations approximate least-recently-used order without reordering a Map on every hit
  // (deleting from the front of a large Map leaves tombstones that later scans pay for): entries
  // go into `young`; when it is full it becomes `old` and the previous `old` is dropped; a hit in
  // `old` moves the entry back to `young`. At most `max` entries are held.
  private young = new Map<string, Readonly<LocMeta> | null>();
  private old = new Map<string, Readonly<LocMeta> | null>();
  private readonly generationMax: number;

  constructor(max: number) {
    assert(Number.isSafeInteger(max) && max > 0, "metaCacheMax is a positive integer");
    this.generationMax = Math.max(1, Math.floor(max / 2));
  }

  /** The cached metadata, `null` for a location known to be absent, undefined when not cached. */
  get(location: string): Readonly<LocMeta> | null | undefined {
    const hit = this.young.get(location);
    if (hit !== undefined) return hit;
    const older = this.old.get(location);
    if (older !== undefined) this.put(location, older);
    return older;
  }

  set(location: string, meta: LocMeta | undefined): void {
    // A copy, so later changes to the caller's object cannot reach the cache; field by field
    // (no spread, no freeze) because this runs for every committed write.
    this.put(location, meta === undefined ? null : { id: meta.id, kind: meta.kind, rev: meta.rev, lastSeq: meta.lastSeq, count: meta.count, bytes: meta.bytes });
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  private put(location: string, entry: Readonly<LocMeta> | null): void {
    this.old.delete(location);
    if (!this.young.has(location) && this.young.size >= this.generationMax) {
      this.old = this.young;
      this.old.delete(location);
      this.young = new Map();
    }
    this.young.set(location, entry);
  }
}
