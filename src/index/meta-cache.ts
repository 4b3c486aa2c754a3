/**
 * A bounded, least-recently-used cache of location metadata (`locs`) for reads, so a hot get does
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
  private readonly entries = new Map<string, Readonly<LocMeta> | null>();

  constructor(private readonly max: number) {
    assert(Number.isSafeInteger(max) && max > 0, "metaCacheMax is a positive integer");
  }

  /** The cached metadata, `null` for a location known to be absent, undefined when not cached. */
  get(location: string): Readonly<LocMeta> | null | undefined {
    const hit = this.entries.get(location);
    if (hit !== undefined) {
      // Move to the back: the map's order is least-recently-used first.
      this.entries.delete(location);
      this.entries.set(location, hit);
    }
    return hit;
  }

  set(location: string, meta: LocMeta | undefined): void {
    this.entries.delete(location);
    this.entries.set(location, meta === undefined ? null : Object.freeze({ ...meta }));
    if (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value!);
  }

  get size(): number {
    return this.entries.size;
  }
}
