/**
 * The segment set a store opens with (docs/compaction.md, "Segment ids, outputs and their order"):
 * local segment files and markers, the object store's segments and markers, and what the index
 * knows, resolved with ./log/segment-set.ts `resolveSegments`. Replay (./replay.ts) replays
 * the resulting entries in order.
 *
 * Rules kept here:
 * - An output is valid when a marker of it exists (local or object) or the index knows it as an
 *   output (`segs[id]` with a cover: the switch, the commit point, came after its markers).
 * - With an index that is not being rebuilt from nothing, a valid output the index does not know
 *   is an orphan of a compaction that crashed before its switch (or of one made after the
 *   checkpoint a restore picked): the index points into its inputs, so the output and its markers
 *   are deleted, locally and in the object store, and the inputs are read. Only when the inputs
 *   are still there, though (the first and last of its cover present, nothing cut in two): an
 *   output whose inputs are gone is the only copy of its records and is kept (and reported).
 * - An output without any marker is an orphan whatever the index: it is never read, and deleted
 *   unless the index knows it (then it is a superseded output waiting for the reclaim).
 * - A switch a crash cut short (an output "switching", its journal in the index) is finished
 *   first, before anything else looks at the set (../compact-switch-run.ts): the output is known,
 *   its inputs become superseded, exactly as after a switch that ended before the crash.
 * - Before anything is replayed the index learns every valid output (with its cover) and every
 *   superseded segment still present, so a rebuild cut short by a crash reopens as an index that
 *   knows them (it must not take them for orphans then), and sys "compactedNext" is raised past
 *   every output id seen, so an id is never given twice even after a restore from an old checkpoint.
 */
import fs from "node:fs";
import path from "node:path";
import { finishPendingSwitches } from "./compact-switch-run.js";
import type { LmdbIndex, SegmentInfo } from "./index/lmdb-index.js";
import { outputTmpPath } from "./log/compact-writer.js";
import { fsyncDir, segmentPath } from "./log/segment-files.js";
import {
  COMPACTED_SEG_BASE,
  isCompacted,
  listLocalMarkers,
  removeLocalMarker,
  resolveSegments,
  type Cover,
  type SegmentEntry,
} from "./log/segment-set.js";
import type { ObjectStore } from "./tier/object-store.js";
import { compactionMarkerKey, segmentKey } from "./tier/segment-keys.js";

/** The `sys` key holding the n of the next compaction output id (COMPACTED_SEG_BASE + n). */
export const COMPACTED_NEXT_KEY = "compactedNext";

export interface SegmentSetAtOpen {
  /** The segments to replay, in order. */
  entries: SegmentEntry[];
  /** Present segments an output replaced (never replayed). */
  superseded: number[];
  /** Outputs deleted as orphans (or that could not be deleted: `error`), and outputs kept though unknown to the index. */
  orphans: Array<{ id: number; removed: boolean; error?: string }>;
  keptUnknown: Cover[];
  /** The highest normal segment position seen anywhere: new segments continue after it. */
  lastPosition: number;
  /** The highest normal segment id that is an entry (not superseded), if any. */
  lastNormal: number | undefined;
  /** Outputs the index knew (as outputs) before this open. */
  knownOutputs: ReadonlySet<number>;
  /** Outputs whose switch a crash cut short, finished by this open. */
  switchesFinished: number[];
}

export interface OpenSegmentsInput {
  segmentsDir: string;
  localIds: number[];
  tierIds: number[];
  tierMarkers: Cover[];
  /** The index as opened (restored or local); `trusted` false when it is being rebuilt from nothing. */
  index: LmdbIndex;
  trusted: boolean;
  now: number;
  tier?: { objects: ObjectStore; serverId: string };
}

/** Resolves the segment set, deletes orphans, and records outputs and superseded segments in the index. */
export async function openSegmentSet(inp: OpenSegmentsInput): Promise<SegmentSetAtOpen> {
  const { index } = inp;
  const present = new Set([...inp.localIds, ...inp.tierIds]);
  let lastLocal = 0;
  for (const id of present) if (!isCompacted(id)) lastLocal = Math.max(lastLocal, id);
  const switchesFinished = await finishPendingSwitches({ index, exclusive: async (fn) => fn(), turn: async () => undefined, now: () => inp.now, after: () => lastLocal });
  const localMarkers = listLocalMarkers(inp.segmentsDir);
  const known = new Map<number, Cover>();
  for (const { key, value } of index.segs.getRange({})) {
    if (isCompacted(key) && value.lo !== undefined && value.hi !== undefined) known.set(key, { id: key, lo: value.lo, hi: value.hi });
  }
  const normals = [...present].filter((id) => !isCompacted(id));
  const outputs = [...present].filter((id) => isCompacted(id));
  const found = [...localMarkers, ...inp.tierMarkers];
  const knownPresent = [...known.values()].filter((c) => present.has(c.id));
  const orphans: SegmentSetAtOpen["orphans"] = [];
  const keptUnknown: Cover[] = [];
  const remove = new Set<number>();
  if (inp.trusted) {
    // The set as the index knows it: what an unknown output is checked against.
    const base = resolveSegments(normals, outputs.filter((id) => known.has(id)), knownPresent);
    for (const c of uniqueCovers(found)) {
      if (known.has(c.id) || !present.has(c.id)) continue;
      if (inputsPresent(base.entries, c)) remove.add(c.id);
      else keptUnknown.push(c);
    }
  }
  const markers = [...found.filter((c) => !remove.has(c.id)), ...knownPresent];
  const r = resolveSegments(normals, outputs.filter((id) => !remove.has(id)), markers);
  // No usable marker and unknown to the index: never to be read.
  for (const id of r.orphans) if (!known.has(id)) remove.add(id);
  for (const id of [...remove].sort((a, b) => a - b)) {
    const covers = found.filter((c) => c.id === id);
    orphans.push({ id, ...(await removeOutput(inp, id, covers)) });
  }
  recordInIndex(inp, r.entries, r.superseded, markers, [...present, ...found.map((c) => c.id), ...known.keys()]);
  let lastPosition = 0;
  let lastNormal: number | undefined;
  for (const id of normals) lastPosition = Math.max(lastPosition, id);
  for (const c of markers) lastPosition = Math.max(lastPosition, c.hi);
  for (const e of r.entries) {
    lastPosition = Math.max(lastPosition, e.hi);
    if (!isCompacted(e.id)) lastNormal = Math.max(lastNormal ?? 0, e.id);
  }
  return { entries: r.entries, superseded: r.superseded, orphans, keptUnknown, lastPosition, lastNormal, knownOutputs: new Set(known.keys()), switchesFinished };
}

function uniqueCovers(covers: Cover[]): Cover[] {
  const m = new Map<number, Cover>();
  for (const c of covers) m.set(c.id, c);
  return [...m.values()];
}

/**
 * Whether the entries the index knows still hold everything output `c` covers: nothing cut in two,
 * and the first and last segment of its cover there (an input is deleted only after its switch, so
 * a run reclaimed in part shows at an end or leaves nothing).
 */
function inputsPresent(entries: SegmentEntry[], c: Cover): boolean {
  const overlap = entries.filter((e) => e.hi >= c.lo && e.lo <= c.hi);
  if (overlap.length === 0) return false;
  if (overlap.some((e) => e.lo < c.lo || e.hi > c.hi)) return false;
  return overlap[0]!.lo === c.lo && overlap[overlap.length - 1]!.hi === c.hi;
}

/** Deletes an orphan output found at open; reports whether the object store refused (it is tried again at the next open). */
async function removeOutput(inp: OpenSegmentsInput, id: number, covers: Cover[]): Promise<{ removed: boolean; error?: string }> {
  try {
    await deleteOutput(inp.segmentsDir, inp.tier, id, covers, inp.tierIds.includes(id));
    return { removed: true };
  } catch (err) {
    // The object store is unreachable: the orphan stays there until the next open, unread.
    return { removed: false, error: (err as Error).message };
  }
}

/**
 * Deletes a compaction output the index never switched to (an orphan at open, or a run given up):
 * the local copy first (markers, then the file and an unfinished `.tmp`), then, with a tier, its
 * object markers and its object (`inTier`). Markers go before their bytes in each place, so the
 * output is never valid without them. Idempotent: what an unreachable object store leaves is an
 * orphan the next open removes.
 */
export async function deleteOutput(segmentsDir: string, tier: { objects: ObjectStore; serverId: string } | undefined, id: number, covers: readonly Cover[], inTier: boolean): Promise<void> {
  for (const c of covers) removeLocalMarker(segmentsDir, c);
  fs.rmSync(segmentPath(segmentsDir, id), { force: true });
  fs.rmSync(outputTmpPath(segmentsDir, id), { force: true });
  fsyncDir(segmentsDir);
  if (!tier) return;
  for (const c of covers) await tier.objects.delete(compactionMarkerKey(tier.serverId, c));
  if (inTier) await tier.objects.delete(segmentKey(tier.serverId, id));
}

/** Records valid outputs (with their cover), present superseded segments, and raises compactedNext. */
function recordInIndex(inp: OpenSegmentsInput, entries: SegmentEntry[], superseded: number[], covers: Cover[], seenIds: number[]): void {
  const { index } = inp;
  const local = new Set(inp.localIds);
  const updates: Array<[number, SegmentInfo]> = [];
  const lastNormal = entries.reduce((m, e) => Math.max(m, e.hi), 0);
  for (const e of entries) {
    if (!isCompacted(e.id)) continue;
    const info = index.segs.get(e.id);
    if (info?.lo === e.lo && info.hi === e.hi) continue;
    const bytes = local.has(e.id) ? fs.statSync(segmentPath(inp.segmentsDir, e.id)).size : 0;
    updates.push([e.id, { ...(info ?? {}), state: info?.state ?? (local.has(e.id) ? "sealed" : "evicted"), bytes: info?.bytes ?? bytes, lo: e.lo, hi: e.hi }]);
  }
  for (const id of superseded) {
    const info = index.segs.get(id);
    if (info?.state === "superseded") continue;
    // A superseded output keeps its cover: the reclaim needs it to delete the output's markers.
    const own = isCompacted(id) ? covers.find((c) => c.id === id) : undefined;
    const lo = info?.lo ?? own?.lo ?? id;
    const hi = info?.hi ?? own?.hi ?? id;
    const by = entries.find((e) => e.lo <= lo && hi <= e.hi && e.id !== id)?.id;
    const bytes = local.has(id) ? fs.statSync(segmentPath(inp.segmentsDir, id)).size : 0;
    // Found superseded at open (a rebuild, or an index that lost it): the reclaim may delete it once
    // a checkpoint after this point is uploaded, as after a switch made now.
    updates.push([id, { ...(info ?? {}), ...(own ? { lo, hi } : {}), state: "superseded", bytes: info?.bytes ?? bytes, by: by ?? id, at: inp.now, after: lastNormal + 1 }]);
  }
  let maxN = -1;
  for (const id of seenIds) if (isCompacted(id)) maxN = Math.max(maxN, id - COMPACTED_SEG_BASE);
  const next = (index.sys.get(COMPACTED_NEXT_KEY) as number | undefined) ?? 0;
  const raise = maxN + 1 > next;
  if (updates.length === 0 && !raise) return;
  index.write(() => {
    for (const [id, info] of updates) index.segs.put(id, info);
    if (raise) index.sys.put(COMPACTED_NEXT_KEY, maxN + 1);
  });
}

/** Unfinished compaction outputs (`<id>.seg.tmp`) a crash left behind: nothing refers to them. */
export function removeTempOutputs(segmentsDir: string): number {
  let n = 0;
  for (const name of fs.readdirSync(segmentsDir)) {
    if (!/^[0-9a-f]{16}\.seg\.tmp$/.test(name)) continue;
    fs.rmSync(path.join(segmentsDir, name), { force: true });
    n++;
  }
  if (n > 0) fsyncDir(segmentsDir);
  return n;
}
