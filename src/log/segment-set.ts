/**
 * Which segments make up a server's log once compaction outputs exist (docs/compaction.md,
 * "Segment ids, outputs and their order"), and the local marker files that make an output valid.
 *
 * - Normal segments have ids 1, 2, 3 … below COMPACTED_SEG_BASE; a compaction output has an id at or
 *   above it (and below the foreign range, 2^32). An output **covers** `[lo, hi]`, the normal ids of
 *   the first and last segment of the run it replaced; its place in log order is `hi`.
 * - An output is valid only once its marker exists (locally `<id>-<lo>-<hi>.cmp` beside the segment
 *   files, an empty file; in the object store `<server>/compactions/<id>-<lo>-<hi>`). An output
 *   without a marker is an orphan and is never read.
 * - `resolveSegments` is the one rule every reader of the log uses (recovery, the tier listing,
 *   takeover imports, `strata stat`): normal segments plus valid outputs; markers applied in
 *   ascending output id, each replacing every entry whose cover lies inside its own. It is pure, and
 *   its result is a tiling: every position of the log is covered by exactly one entry, in `order`.
 *   An output and its inputs hold the same live data, so whether the inputs are still there never
 *   changes what a replay finds; the rule only chooses one copy.
 * - A marker is only believed when it is consistent: its output exists, and every entry it overlaps
 *   lies inside its cover. Anything else (a marker whose output is gone: a reclaim cut short; a
 *   marker that cuts an entry in two: damage or a bug) is ignored and reported, so the resolved set
 *   never covers a position twice and never loses one.
 */
import fs from "node:fs";
import path from "node:path";
import { assert } from "../assert.js";
import { fsyncDir } from "./segment-files.js";

/** Ids of compaction outputs start here (normal segment ids stay below it). */
export const COMPACTED_SEG_BASE = 2 ** 31;
/** Own segment ids are below this (the foreign range starts here: ../index/foreign-logs.ts). */
const OWN_SEG_SPAN = 2 ** 32;

/** Whether a segment id names a compaction output (of the own log, or of a foreign log's server). */
export function isCompacted(id: number): boolean {
  return id % OWN_SEG_SPAN >= COMPACTED_SEG_BASE;
}

/** Whether `id` is a normal (not compacted, not foreign) segment id of the own log. */
export function isNormalSegment(id: number): boolean {
  return Number.isSafeInteger(id) && id >= 0 && id < COMPACTED_SEG_BASE;
}

/** What an output replaced: the normal ids of the first and last segment of its run. */
export interface Cover {
  id: number;
  lo: number;
  hi: number;
}

/** One segment of the resolved log: a normal segment (lo = hi = order = id) or a valid output. */
export interface SegmentEntry {
  id: number;
  lo: number;
  hi: number;
  order: number;
}

export interface ResolvedSegments {
  /** The segments to read, in log order (ascending `order`). */
  entries: SegmentEntry[];
  /** Present segments (normal or outputs) that a valid output replaced: never read. */
  superseded: number[];
  /** Present outputs without a usable marker: never read (deleted at open when the index does not know them). */
  orphans: number[];
  /** Markers that were not applied: their output is gone, or they would cut an entry in two. */
  ignoredMarkers: Cover[];
}

/** Whether a cover is well formed: an output id, normal lo ≤ hi. */
export function isValidCover(c: Cover): boolean {
  return isCompacted(c.id) && c.id < OWN_SEG_SPAN && isNormalSegment(c.lo) && isNormalSegment(c.hi) && c.lo <= c.hi;
}

/**
 * The segment set: `normalIds` and `outputIds` are the segments present (on the local disk or in
 * the object store, in any order, duplicates allowed); `markers` the markers found (local and
 * object ones together, duplicates allowed).
 */
export function resolveSegments(normalIds: Iterable<number>, outputIds: Iterable<number>, markers: Iterable<Cover>): ResolvedSegments {
  const entriesById = new Map<number, SegmentEntry>(); // keyed by id
  for (const id of normalIds) {
    assert(isNormalSegment(id), `segment ${id} is a normal segment id`);
    entriesById.set(id, { id, lo: id, hi: id, order: id });
  }
  const outputs = new Set<number>();
  for (const id of outputIds) {
    assert(isCompacted(id) && id < OWN_SEG_SPAN, `segment ${id} is a compaction output id`);
    outputs.add(id);
  }
  const byId = new Map<number, Cover[]>();
  const ignoredMarkers: Cover[] = [];
  for (const m of markers) {
    if (!isValidCover(m)) ignoredMarkers.push(m);
    else byId.set(m.id, [...(byId.get(m.id) ?? []), m]);
  }
  const covers: Cover[] = [];
  for (const [, ms] of byId) {
    // Two markers of one output that disagree on its cover: neither can be believed.
    if (ms.every((m) => m.lo === ms[0]!.lo && m.hi === ms[0]!.hi)) covers.push(ms[0]!);
    else ignoredMarkers.push(...ms);
  }
  const superseded: number[] = [];
  const applied = new Set<number>();
  for (const c of covers.sort((a, b) => a.id - b.id)) {
    if (!outputs.has(c.id)) {
      ignoredMarkers.push(c);
      continue;
    }
    const inside: number[] = [];
    let cuts = false;
    for (const e of entriesById.values()) {
      if (e.hi < c.lo || e.lo > c.hi) continue;
      if (e.lo >= c.lo && e.hi <= c.hi) inside.push(e.id);
      else cuts = true;
    }
    if (cuts) {
      ignoredMarkers.push(c);
      continue;
    }
    for (const id of inside) {
      entriesById.delete(id);
      superseded.push(id);
    }
    entriesById.set(c.id, { id: c.id, lo: c.lo, hi: c.hi, order: c.hi });
    applied.add(c.id);
  }
  const orphans = [...outputs].filter((id) => !applied.has(id)).sort((a, b) => a - b);
  const entries = [...entriesById.values()].sort((a, b) => a.order - b.order || a.id - b.id);
  return { entries, superseded: superseded.sort((a, b) => a - b), orphans, ignoredMarkers };
}

/** The highest normal segment position a resolved set reaches (0 when empty): where new ids continue. */
export function lastPosition(entries: readonly SegmentEntry[]): number {
  let last = 0;
  for (const e of entries) last = Math.max(last, e.hi);
  return last;
}

// ---- local markers ----

const MARKER_NAME = /^([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{16})\.cmp$/;

function hex(n: number): string {
  return n.toString(16).padStart(16, "0");
}

export function localMarkerName(c: Cover): string {
  return `${hex(c.id)}-${hex(c.lo)}-${hex(c.hi)}.cmp`;
}

/** The cover a local marker's name carries, or undefined for any other name (or a malformed cover). */
export function parseLocalMarkerName(name: string): Cover | undefined {
  const m = MARKER_NAME.exec(name);
  if (!m) return undefined;
  const c = { id: Number.parseInt(m[1]!, 16), lo: Number.parseInt(m[2]!, 16), hi: Number.parseInt(m[3]!, 16) };
  return isValidCover(c) ? c : undefined;
}

/**
 * Makes output `c` valid locally: an empty marker file, created and made durable (the file, then
 * its directory). Call only once the output file itself is complete and durable.
 */
export function writeLocalMarker(dir: string, c: Cover): void {
  assert(isValidCover(c), `marker cover ${JSON.stringify(c)} is well formed`);
  const fd = fs.openSync(path.join(dir, localMarkerName(c)), "w");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fsyncDir(dir);
}

/** Removes output `c`'s local marker (if present), durably. */
export function removeLocalMarker(dir: string, c: Cover): void {
  const file = path.join(dir, localMarkerName(c));
  if (!fs.existsSync(file)) return;
  fs.rmSync(file, { force: true });
  fsyncDir(dir);
}

/** The local markers in `dir`, by ascending output id. Files that are not markers are ignored. */
export function listLocalMarkers(dir: string): Cover[] {
  const out: Cover[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  for (const name of names) {
    const c = parseLocalMarkerName(name);
    if (c) out.push(c);
  }
  return out.sort((a, b) => a.id - b.id);
}
