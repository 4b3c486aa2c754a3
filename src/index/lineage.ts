/**
 * A location's epoch lineage (docs/failover.md, step 3): for each takeover along the location's
 * chain of owners, the epoch it was granted under and the location's revision when it began (the
 * imported revision), like Kafka's leader-epoch cache. A `changes` reply answers a watcher that
 * says which epoch it was last shown changes under (`shownEpoch`) with the lowest start revision
 * of the epochs after it: the history the watcher was shown agrees with the current one up to
 * there, and may not past it (an owner in between, which the watcher never heard from, may have
 * lost unshipped writes and written its own at those revisions).
 *
 * Where it lives: the index table `lineage` (location → entries, ./lmdb-index.ts), written only by
 * applying an `import` record (./import-rows.ts): the origin's lineage (read out of the origin
 * copy with the location's rows, ../tier/origin-copy.ts) plus the record's own [epoch, rev]. It is
 * therefore derived from the log like every other index row — a restart, a checkpoint, a reindex
 * and a later takeover (which replays the origin's records with the same apply code) all come to
 * the same lineage — and it travels with the location at a takeover and at a planned move alike
 * (both import). A grant with no handoff (a restart of the same server, a new location) continues
 * the server's own log and rewrites no revision, so it needs no entry; the current grant's start
 * revision is always taken into account besides (../net/server/ownership.ts).
 *
 * Invariants:
 * - Entries are in increasing epoch order, at most one per epoch, at most `epochLineageMax`.
 * - Bounded by folding, never by forgetting: past the limit the two oldest entries become one,
 *   with the newer one's epoch and the lower start. A lookup takes the minimum over every entry
 *   newer than `shownEpoch`, so a folded entry can only make a watcher rewind further (a repeat of
 *   changes it was shown), never less (a change it is never shown).
 */
import type { LmdbIndex } from "./lmdb-index.js";

/** [epoch, the location's revision when that epoch began]. */
export type LineageEntry = readonly [epoch: number, startRev: number];

/** `entries` with [epoch, startRev] added (replacing any entry of that epoch or later), at most `max` entries. */
export function appendLineage(entries: readonly LineageEntry[], epoch: number, startRev: number, max: number): LineageEntry[] {
  const out: LineageEntry[] = entries.filter(([e]) => e < epoch);
  out.push([epoch, startRev]);
  return boundLineage(out, max);
}

/** Folds the oldest entries together until at most `max` (>= 1) are left (see the invariants). */
export function boundLineage(entries: readonly LineageEntry[], max: number): LineageEntry[] {
  const out = [...entries];
  while (out.length > Math.max(1, max)) {
    const [, s0] = out[0]!;
    const [e1, s1] = out[1]!;
    out.splice(0, 2, [e1, Math.min(s0, s1)]);
  }
  return out;
}

/**
 * The revision a watcher last shown changes under `shownEpoch` must rewind to (if it is past it):
 * the lowest start of the lineage's epochs newer than `shownEpoch`, and of the current grant
 * (`currentStart`, which may have no entry).
 */
export function sinceFor(entries: readonly LineageEntry[], shownEpoch: number, currentStart: number): number {
  let since = currentStart;
  for (const [epoch, start] of entries) if (epoch > shownEpoch && start < since) since = start;
  return since;
}

/** Whether `value` (read from an index, possibly another server's) is a well-formed lineage. */
export function isLineage(value: unknown): value is LineageEntry[] {
  if (!Array.isArray(value)) return false;
  let last = -1;
  for (const e of value) {
    if (!Array.isArray(e) || e.length !== 2 || !Number.isSafeInteger(e[0]) || !Number.isSafeInteger(e[1]) || e[0] <= last || e[1] < 0) return false;
    last = e[0];
  }
  return true;
}

/** The lineage of `loc` in `index` (empty: no takeover of it is recorded here; a malformed one counts as none). */
export function lineageOf(index: LmdbIndex, loc: string): LineageEntry[] {
  const value = index.lineage.get(loc);
  return isLineage(value) ? value : [];
}

/** Inside an index write transaction: `loc`'s lineage is `entries`. */
export function putLineage(index: LmdbIndex, loc: string, entries: readonly LineageEntry[]): void {
  index.lineage.put(loc, entries as LineageEntry[]);
}
