/**
 * Foreign logs: the segments of other servers that this index points into (docs/failover.md,
 * "Foreign pointers"). A takeover imports a location's index rows without copying any value, so
 * its pointers name segments of the server it came from. Each such server gets a number `f` >= 1
 * in the index table `logs` (f → server id, and server id → f), allocated inside the index write
 * transaction that first needs it, and segment `s` of it is written as `f × FOREIGN_SEG_SPAN + s`.
 *
 * Invariants: segments of the own log have ids below FOREIGN_SEG_SPAN (asserted where they are
 * allocated); a number, once given to a server, names it for the life of the index (rows are
 * never renumbered); `f × FOREIGN_SEG_SPAN + s` stays a safe integer (f < 2^21), which the index
 * codecs and the record format both accept. Foreign segments are read from the object store only:
 * never uploaded, evicted, compacted or counted as this server's own.
 */
import { assert } from "../assert.js";
import { StrataError } from "../errors.js";
import { COMPACTED_SEG_BASE } from "../log/segment-set.js";
import type { LmdbIndex } from "./lmdb-index.js";

/** Segment ids of the own log are below this; foreign log `f` owns [f × span, (f + 1) × span). */
export const FOREIGN_SEG_SPAN = 2 ** 32;

/** Most foreign logs one index can number: keeps `f × span + s` a safe integer. */
export const FOREIGN_LOGS_MAX = 2 ** 21 - 1;

export function isForeign(seg: number): boolean {
  return seg >= FOREIGN_SEG_SPAN;
}

/** The foreign log number of a segment id (0 for the own log). */
export function logOf(seg: number): number {
  return Math.floor(seg / FOREIGN_SEG_SPAN);
}

/** The segment id within its own log. */
export function localSeg(seg: number): number {
  return seg % FOREIGN_SEG_SPAN;
}

/** Segment `s` of log `f` (0: the own log) as one id. */
export function foreignSeg(f: number, s: number): number {
  assert(Number.isSafeInteger(s) && s >= 0 && s < FOREIGN_SEG_SPAN, `segment id ${s} is within one log`);
  assert(Number.isSafeInteger(f) && f >= 0 && f <= FOREIGN_LOGS_MAX, `foreign log number ${f} in range`);
  return f * FOREIGN_SEG_SPAN + s;
}

/**
 * Asserts that a normal segment id about to be allocated for the own log stays below the ids of
 * compaction outputs (2^31, ../log/segment-set.ts), and so below the foreign range.
 */
export function assertOwnSegment(seg: number): void {
  assert(Number.isSafeInteger(seg) && seg >= 0 && seg < COMPACTED_SEG_BASE, `own segment id ${seg} is below ${COMPACTED_SEG_BASE}`);
}

const byIdKey = (serverId: string): string => `id:${serverId}`;

/** The server id of foreign log `f`, or undefined when the index has no such log. */
export function serverOf(index: LmdbIndex, f: number): string | undefined {
  const id = index.logs.get(f);
  return typeof id === "string" ? id : undefined;
}

/** The number of `serverId`'s foreign log in this index, if it has one. */
export function knownLog(index: LmdbIndex, serverId: string): number | undefined {
  const f = index.logs.get(byIdKey(serverId));
  return typeof f === "number" ? f : undefined;
}

/** Inside an index write transaction: the number of `serverId`'s foreign log, allocated when new. */
export function foreignLog(index: LmdbIndex, serverId: string): number {
  const known = knownLog(index, serverId);
  if (known !== undefined) return known;
  const f = ((index.logs.get("next") as number | undefined) ?? 0) + 1;
  if (f > FOREIGN_LOGS_MAX) throw new StrataError("TOO_LARGE", `this index already points into ${FOREIGN_LOGS_MAX} other servers' logs; no more can be imported from`);
  index.logs.put("next", f);
  index.logs.put(f, serverId);
  index.logs.put(byIdKey(serverId), f);
  return f;
}

/** Whether the index points into any other server's log (it then needs the object store to be read). */
export function hasForeignLogs(index: LmdbIndex): boolean {
  return index.logs.get("next") !== undefined;
}

/**
 * Resolves segment ids of one index to the object keys that hold them, caching the foreign logs'
 * server ids (a number never changes its server once allocated).
 */
export class ForeignLogNames {
  private readonly names = new Map<number, string>();
  constructor(private readonly index: LmdbIndex) {}

  serverOf(f: number): string {
    let id = this.names.get(f);
    if (id === undefined) {
      id = serverOf(this.index, f);
      if (id === undefined) throw new StrataError("CORRUPT", `the index points into foreign log ${f}, which it does not name; run \`strata reindex\``);
      this.names.set(f, id);
    }
    return id;
  }
}
