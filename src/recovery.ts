/**
 * Opening the index when a store opens, and choosing which index the log is replayed into.
 *
 * The index's checkpoint says how much of the log it reflects; ./replay.ts replays every record
 * after it (torn tails cut, damaged ranges skipped and reported, imports redone, over the resolved
 * segment set). Before the index is looked at, unfinished compaction outputs (`.seg.tmp`) and a
 * last segment without a whole header (a crash while it was being created) are removed, and the
 * object store's segments and markers are listed (docs/compaction.md).
 * If the index is missing, unreadable, claims more than the log holds, or may have lost writes to
 * an OS crash (./index/unsynced-marker.ts), it is rebuilt from the whole log; a damaged index file
 * (./index/index-check.ts) is first moved aside as `index.damaged-<time>`. A requested rebuild
 * (`strata reindex`) builds into `index.rebuild` and swaps it in only once it is complete, so a
 * failure or a crash leaves the old index as it was.
 *
 * A log with imports (or an index with foreign pointers) cannot be opened without the object
 * store: INVALID_ARGUMENT says to give the tier.
 */
import fs from "node:fs";
import path from "node:path";
import { StrataError } from "./errors.js";
import { hasForeignLogs } from "./index/foreign-logs.js";
import type { ImportRows } from "./index/import-rows.js";
import { moveIndexAside } from "./index/index-check.js";
import { LmdbIndex, type Checkpoint } from "./index/lmdb-index.js";
import { unsyncedProblem, writeUnsyncedMarker } from "./index/unsynced-marker.js";
import type { ImportRecord } from "./log/record.js";
import { SEGMENT_HEADER_BYTES, checkSegmentHeader, fsyncDir, listSegmentIds, segmentPath } from "./log/segment-files.js";
import { isCompacted, type Cover, type SegmentEntry } from "./log/segment-set.js";
import { removeTempOutputs, type SegmentSetAtOpen } from "./open-segments.js";
import type { Limits } from "./limits.js";
import { noTierForImports, replayAll, type Replay } from "./replay.js";
import { restoreCheckpoint } from "./tier/checkpoints.js";
import type { ObjectStore } from "./tier/object-store.js";
import { tierSegments } from "./tier/tier-listing.js";

/** The object store as a second source of segments, for a store with a cold tier. */
export interface TierSource {
  objects: ObjectStore;
  serverId: string;
  /** Redoes an import record's import (tier/takeover.ts); without it, replay cannot meet one. */
  prepareImport?: (rec: ImportRecord) => Promise<ImportRows>;
}

export interface RecoveryReport {
  /** Records replay could not apply to the index and skipped (index/apply.ts `applyRecords`). */
  quarantined?: Array<{ seg: number; off: number; loc: string; reason: string }>;
  /** Records replayed into the index. */
  replayed: number;
  /** True when the index was rebuilt from the whole log. */
  rebuilt: boolean;
  rebuildReason?: string;
  /** The torn tail that was cut from the last segment, if any (nothing valid followed it). */
  cut?: { seg: number; off: number; bytes: number; reason: string };
  /** Damaged ranges skipped by the replay (valid records followed them; nothing was cut). */
  damaged: Array<{ seg: number; off: number; bytes: number; reason: string }>;
  /** Where a damaged index file was moved (kept for forensics) before the rebuild. */
  damagedIndexMovedTo?: string;
  /** The active segment to append to, or undefined when a new one must be created. */
  active?: { id: number; size: number };
  /** Id for a new active segment when `active` is undefined. */
  nextId: number;
  /** Segment ids on the local disk and in the object store (normal segments and compaction outputs). */
  localIds: number[];
  tierIds: number[];
  /** Compaction markers found in the object store. */
  tierMarkers: Cover[];
  /** The resolved log (./log/segment-set.ts): what was replayed, in order. */
  segments: SegmentEntry[];
  /** Present segments a compaction output replaced: not replayed, waiting for the reclaim. */
  superseded: number[];
  /** Orphan compaction outputs found at open: deleted (with their markers), or left for the next open (`error`). */
  orphans: SegmentSetAtOpen["orphans"];
  /** Outputs the index did not know but whose inputs are gone: kept and replayed (a warning). */
  unknownOutputsKept: Cover[];
  /** Unfinished compaction outputs (`.seg.tmp`) removed. */
  tempOutputsRemoved: number;
  /** Sizes of the segment objects, as listed (empty when the listing was not possible). */
  tierSizes: Map<number, number>;
  /** True when the index came from a checkpoint in the object store. */
  restoredCheckpoint?: { seg: number; off: number };
  /** Import records replayed (each redone from the object store). */
  imports?: number;
  /** Redone imports whose revision differs from the one their record noted (the source changed). */
  importMismatches?: Array<{ loc: string; from: string; expected: number; got: number }>;
}

export async function openIndexAndRecover(
  indexDir: string,
  segmentsDir: string,
  limits: Limits,
  now: number,
  opts: { forceRebuild?: boolean; tier?: TierSource } = {},
): Promise<{ index: LmdbIndex; report: RecoveryReport }> {
  fs.mkdirSync(segmentsDir, { recursive: true });
  const tempOutputsRemoved = removeTempOutputs(segmentsDir);
  dropTornLastSegment(segmentsDir);
  // What a reindex that was cut short (a crash, a failure) left behind; the index it was to
  // replace is still in place, untouched.
  LmdbIndex.destroy(rebuildDir(indexDir));
  LmdbIndex.destroy(replacedDir(indexDir));
  const localIds = listSegmentIds(segmentsDir);
  const { ids: tierIds, sizes: tierSizes, markers: tierMarkers } = opts.tier
    ? await tierSegments(opts.tier.objects, opts.tier.serverId, { indexDir, segmentsDir }, limits)
    : { ids: [], sizes: new Map<number, number>(), markers: [] };
  const all = [...new Set([...localIds, ...tierIds])].sort((a, b) => a - b);
  let rebuildReason: string | undefined = opts.forceRebuild ? "requested" : unsyncedProblem(indexDir);
  // From here until a clean close, the index may hold writes the disk does not.
  writeUnsyncedMarker(indexDir);
  const indexOptions = { metaCacheMax: limits.metaCacheMax };
  let index: LmdbIndex | undefined;
  let damagedFile = false;
  if (!rebuildReason) {
    try {
      index = LmdbIndex.open(indexDir, indexOptions);
      const problem = checkpointProblem(index.checkpoint(), localIds, tierIds, segmentsDir);
      if (problem) {
        rebuildReason = problem;
        await closeQuietly(index);
        index = undefined;
      } else if (index.checkpoint() === undefined && all.length > 0) {
        await closeQuietly(index);
        index = undefined;
        rebuildReason = "the index is missing";
      }
    } catch (err) {
      if (!StrataError.is(err, "CORRUPT")) throw err;
      rebuildReason = err.message;
      damagedFile = true;
    }
  }
  const report: RecoveryReport = {
    replayed: 0,
    rebuilt: rebuildReason !== undefined,
    nextId: 1,
    localIds,
    tierIds,
    tierSizes,
    tierMarkers,
    segments: [],
    superseded: [],
    orphans: [],
    unknownOutputsKept: [],
    tempOutputsRemoved,
    damaged: [],
  };
  if (rebuildReason) report.rebuildReason = rebuildReason;
  const replay: Replay = { localIds, tierIds, tierMarkers, segmentsDir, limits, now, report, ...(opts.tier ? { tier: opts.tier } : {}) };
  if (index === undefined && opts.forceRebuild) {
    await rebuildAside(indexDir, indexOptions, replay);
    return { index: LmdbIndex.open(indexDir, indexOptions), report };
  }
  if (index === undefined) {
    if (damagedFile && fs.existsSync(indexDir)) report.damagedIndexMovedTo = moveIndexAside(indexDir, now);
    else LmdbIndex.destroy(indexDir);
    const restored = opts.tier && opts.forceRebuild !== true ? await restoreCheckpoint(opts.tier.objects, opts.tier.serverId, indexDir) : undefined;
    if (restored) report.restoredCheckpoint = restored;
    index = LmdbIndex.open(indexDir, indexOptions);
  }
  try {
    await replayAll(index, replay);
    if (!opts.tier && hasForeignLogs(index)) throw noTierForImports();
  } catch (err) {
    // The open fails (e.g. the object store is unreachable mid-restore); what was replayed is
    // kept, and the next open continues from there. The index must not stay open meanwhile.
    await closeQuietly(index);
    throw err;
  }
  return { index, report };
}

/** Where a requested rebuild builds the new index, and where the old one waits to be removed. */
function rebuildDir(indexDir: string): string {
  return `${indexDir}.rebuild`;
}
function replacedDir(indexDir: string): string {
  return `${indexDir}.old`;
}

/**
 * A requested rebuild: replays the whole log into a new index beside the old one, closes it
 * (fsync'd), and only then swaps it in. A failure removes the new index and leaves the old one;
 * a crash between the two renames leaves no index, which the next open rebuilds from the log.
 */
async function rebuildAside(indexDir: string, indexOptions: { metaCacheMax: number }, replay: Replay): Promise<void> {
  const fresh = rebuildDir(indexDir);
  const index = LmdbIndex.open(fresh, indexOptions);
  try {
    await replayAll(index, replay);
  } catch (err) {
    await closeQuietly(index);
    LmdbIndex.destroy(fresh);
    throw err;
  }
  await closeQuietly(index);
  const old = replacedDir(indexDir);
  if (fs.existsSync(indexDir)) fs.renameSync(indexDir, old);
  fs.renameSync(fresh, indexDir);
  fsyncDir(path.dirname(indexDir));
  LmdbIndex.destroy(old);
}

async function closeQuietly(index: LmdbIndex): Promise<void> {
  // lmdb-js blocks the thread for good in close() while a write (even open's "format") is still
  // being flushed, so wait for the flush first.
  await index.close();
}

function checkpointProblem(cp: Checkpoint | undefined, ids: number[], tierIds: number[], segmentsDir: string): string | undefined {
  if (cp === undefined) return undefined;
  if (!ids.includes(cp.seg)) {
    return tierIds.includes(cp.seg) ? undefined : `the index checkpoint names segment ${cp.seg}, which is neither on disk nor in the object store`;
  }
  const size = fs.statSync(segmentPath(segmentsDir, cp.seg)).size;
  if (size < cp.off) return `the index reflects ${cp.off} bytes of segment ${cp.seg} but it holds ${size}`;
  return undefined;
}

/**
 * A crash while a new segment was being created can leave a last file without a whole header;
 * nothing was ever written to it, so it is removed.
 */
function dropTornLastSegment(segmentsDir: string): void {
  // The last normal segment: compaction outputs are renamed into place complete, never torn.
  const ids = listSegmentIds(segmentsDir).filter((id) => !isCompacted(id));
  const lastId = ids[ids.length - 1];
  if (lastId === undefined) return;
  const file = segmentPath(segmentsDir, lastId);
  if (fs.statSync(file).size > SEGMENT_HEADER_BYTES) return;
  try {
    checkSegmentHeader(lastId, fs.readFileSync(file));
  } catch {
    fs.rmSync(file);
    fsyncDir(segmentsDir);
  }
}
