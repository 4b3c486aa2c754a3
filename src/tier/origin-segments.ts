/**
 * Which of an origin server's segments a takeover (./takeover.ts) reads for an origin copy, in
 * which order, and where catching up starts.
 *
 * Compaction (docs/compaction.md): `from`'s segments are the set ../log/segment-set.ts resolves,
 * read in `order`, with the markers of the outputs the origin copy knows (its checkpoint was taken
 * after their switch, so its pointers point into them); an output the copy does not know is read
 * only when its inputs are gone (the copy's checkpoint, or none, predates it), so what is read
 * never reaches past the cut while the inputs are there. When it must (the inputs are gone and the
 * output reaches past the cut), it is read all the same, with a warning.
 */
import { SEGMENT_HEADER_BYTES } from "../log/segment-files.js";
import { resolveSegments, type Cover, type SegmentEntry } from "../log/segment-set.js";
import type { Logger } from "../logger.js";
import type { OriginCopy } from "./origin-copy.js";
import type { ImportRequest } from "./takeover.js";

/** A server's segment objects and compaction markers, as listed. */
export interface OriginSegments {
  normals: number[];
  outputs: number[];
  markers: Cover[];
}

/**
 * The segments of `req.from` an import reads for `copy`, in order, up to the cut: normal segments
 * and the outputs the copy knows (its origin switched them in before the checkpoint was taken);
 * an output the copy does not know only when its inputs are gone (then it is the only copy of
 * their records; one reaching past the cut is read all the same, with a warning).
 */
export function originEntries(s: OriginSegments, copy: OriginCopy, req: ImportRequest, logger: Logger): { entries: SegmentEntry[]; known: Set<number> } {
  const known = new Set<number>();
  for (const c of s.markers) {
    const info = copy.index.segs.get(c.id);
    if (info?.lo === c.lo && info.hi === c.hi) known.add(c.id);
  }
  const base = resolveSegments(s.normals, s.outputs, s.markers.filter((c) => known.has(c.id)));
  const needed = s.markers.filter((c) => !known.has(c.id) && c.lo <= req.cut && !coveredBy(base.entries, c));
  const r = needed.length === 0 ? base : resolveSegments(s.normals, s.outputs, s.markers.filter((c) => known.has(c.id) || needed.includes(c)));
  const entries = r.entries.filter((e) => e.lo <= req.cut);
  for (const e of entries) {
    if (e.hi > req.cut) logger.warn({ event: "takeover_reads_past_cut", location: req.loc, from: req.from, cut: req.cut, output: e.id, lo: e.lo, hi: e.hi }, `taking over "${req.loc}" from server "${req.from}" up to segment ${req.cut} reads its compaction output ${e.id} (segments ${e.lo}..${e.hi}), whose inputs are gone: records it holds from after the cut are imported too`);
  }
  return { entries, known };
}

/** Whether `entries` still hold the first and last segment of output `c`'s cover, nothing cut in two. */
function coveredBy(entries: SegmentEntry[], c: Cover): boolean {
  const overlap = entries.filter((e) => e.hi >= c.lo && e.lo <= c.hi);
  if (overlap.length === 0 || overlap.some((e) => e.lo < c.lo || e.hi > c.hi)) return false;
  return overlap[0]!.lo === c.lo && overlap[overlap.length - 1]!.hi === c.hi;
}

/**
 * Where catching up starts for a copy made at `start`: the entry holding the checkpoint's segment
 * (from its offset when it is that segment), or the entry after an output the copy knows that
 * holds it (the copy reflects all of it); from the first entry for an empty copy.
 */
export function startOf(start: { seg: number; off: number }, entries: SegmentEntry[], known: ReadonlySet<number>): { order: number; seg: number; off: number } {
  const own = entries.find((e) => e.id === start.seg);
  if (own) return { order: own.order, seg: own.id, off: start.off };
  const holder = entries.find((e) => e.lo <= start.seg && start.seg <= e.hi);
  if (holder && known.has(holder.id)) return { order: holder.order + 1, seg: -1, off: SEGMENT_HEADER_BYTES };
  if (holder) return { order: holder.order, seg: holder.id, off: SEGMENT_HEADER_BYTES };
  return { order: start.seg, seg: -1, off: SEGMENT_HEADER_BYTES };
}
