/**
 * A location's configuration in the index (`conf`, `confAge`; ./lmdb-index.ts): written when a
 * `config` record is applied (./apply.ts) or a takeover imports the location (./import-rows.ts),
 * read by the write path (../write-ops.ts), `inventory`, the dedup pruning and the age sweep.
 *
 * Invariants: `confAge` holds exactly the locIds whose `conf` entry has a `maxAgeMs` (with it as
 * the value), so the age sweep finds them without scanning every location; both are keyed by the
 * location's id, so a location reset by an import (new id) never inherits an old configuration.
 */
import type { Pointer } from "../log/record.js";
import type { LocationLimits } from "../types.js";
import type { ConfEntry, LmdbIndex } from "./lmdb-index.js";

/** Inside a write transaction: the location `id` has the configuration of the record at `ptr`. */
export function putConf(index: LmdbIndex, id: number, limits: LocationLimits, ptr: Pointer): void {
  index.conf.put(id, { seg: ptr.seg, off: ptr.off, len: ptr.len, limits });
  if (limits.maxAgeMs !== undefined) index.confAge.put(id, limits.maxAgeMs);
  else index.confAge.remove(id);
}

/** Inside a write transaction: the location `id` is gone (reset by an import). */
export function dropConf(index: LmdbIndex, id: number): void {
  index.conf.remove(id);
  index.confAge.remove(id);
}

export function confEntry(index: LmdbIndex, id: number): ConfEntry | undefined {
  return index.conf.get(id);
}

/** The limits of location `id` (none: an empty configuration). */
export function limitsOf(index: LmdbIndex, id: number | undefined): LocationLimits | undefined {
  return id === undefined ? undefined : index.conf.get(id)?.limits;
}

/** The dedup window of location `id`: its own when configured, else the store's. */
export function dedupWindowOf(index: LmdbIndex, id: number, storeWindowMs: number): number {
  return index.conf.get(id)?.limits.dedupWindowMs ?? storeWindowMs;
}

/**
 * Up to `limit` locations with a maxAgeMs, in id order from `afterId` (exclusive), wrapping
 * around: the age sweep's round-robin page.
 */
export function agedLocations(index: LmdbIndex, afterId: number, limit: number): Array<{ id: number; maxAgeMs: number }> {
  const out: Array<{ id: number; maxAgeMs: number }> = [];
  for (const { key, value } of index.confAge.getRange({ start: afterId + 1, limit })) out.push({ id: key, maxAgeMs: value });
  if (out.length < limit && afterId > 0) {
    for (const { key, value } of index.confAge.getRange({ start: 0, end: afterId + 1, limit: limit - out.length })) out.push({ id: key, maxAgeMs: value });
  }
  return out;
}
