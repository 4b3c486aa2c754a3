/**
 * Opening the index when a store opens, and choosing which index the log is replayed into.
 *
 * The index's checkpoint says how much of the log it reflects; ./replay.ts replays every record
 * after it (torn tails cut, damaged ranges skipped and reported, imports redone, over the resolved
 * segment set). Before the index is looked at, unfinished compaction outputs (`.seg.tmp`) and a
 * last segment without a whole header (a crash while it was being created) are removed, and the
 * object store's segments and markers are listed (docs/compaction.md).
 *
 * Pre-zeroed segments (./log/segment-prepare.ts): the log ends where a zero frame header is
 * followed by nothing but zeros. Before replay, a prepared file whose rename into place the crash
 * lost (`prepared.pre` holding the header of the segment after the last one, and records) is
 * renamed into place; any other prepared file holding a header is removed (nothing in it was
 * acknowledged); and a zero tail left on one of the last segments before the active one (a crash
 * before its seal) is cut, durably, so a sealed segment always ends at its last record before the
 * tier, compaction or `strata stat` look at its size. The active segment keeps its zero tail.
 * A last segment that is zeros throughout (its header never reached the disk) is removed.
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
import { SEGMENT_HEADER_BYTES, checkSegmentHeader, fsyncDir, listSegmentIds, preparedPath, preparingPath, segmentPath } from "./log/segment-files.js";
import { nonZeroFrom } from "./log/frame-scan.js";
import { readRecordsEnd } from "./log/segment-end.js";
import { FRAME_HEADER_BYTES } from "./log/framing.js";
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
  /** Compaction outputs whose switch a crash cut short, finished by this open (../compact-switch-run.ts). */
  switchesFinished: number[];
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
  settlePreparedSegment(segmentsDir);
  dropTornLastSegment(segmentsDir);
  cutSealedZeroTails(segmentsDir, limits);
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
    switchesFinished: [],
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
  if (fs.statSync(file).size > SEGMENT_HEADER_BYTES) {
    // A prepared file renamed into place whose header never reached the disk: zeros throughout,
    // so nothing in it was ever acknowledged (an acknowledged record's fdatasync carries the
    // header too). Anything else with a bad header is refused by replay (CORRUPT).
    if (allZero(file)) {
      fs.rmSync(file);
      fsyncDir(segmentsDir);
    }
    return;
  }
  try {
    checkSegmentHeader(lastId, fs.readFileSync(file));
  } catch {
    fs.rmSync(file);
    fsyncDir(segmentsDir);
  }
}

/** Whether a file holds only zero bytes (read in pieces; stops at the first non-zero one). */
function allZero(file: string): boolean {
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let pos = 0; ; ) {
      const n = fs.readSync(fd, buf, 0, buf.byteLength, pos);
      if (n === 0) return true;
      if (nonZeroFrom(buf.subarray(0, n), 0) < n) return false;
      pos += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The prepared file after a crash (./log/segment-prepare.ts): one that took records as the segment
 * after the last one, but whose rename was lost, is renamed into place; one that holds a header
 * but no record is removed; a zeroed one is left for the log to use; a half-zeroed one removed.
 */
function settlePreparedSegment(segmentsDir: string): void {
  fs.rmSync(preparingPath(segmentsDir), { force: true });
  const file = preparedPath(segmentsDir);
  if (!fs.existsSync(file)) return;
  const head = Buffer.alloc(SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES);
  const fd = fs.openSync(file, "r");
  let n: number;
  try {
    n = fs.readSync(fd, head, 0, head.byteLength, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (n === head.byteLength && nonZeroFrom(head, 0) === head.byteLength) return;
  const normal = listSegmentIds(segmentsDir).filter((id) => !isCompacted(id));
  const id = (normal[normal.length - 1] ?? 0) + 1;
  let valid = n === head.byteLength;
  try {
    checkSegmentHeader(id, head);
  } catch {
    valid = false;
  }
  if (valid && nonZeroFrom(head, SEGMENT_HEADER_BYTES) < head.byteLength) fs.renameSync(file, segmentPath(segmentsDir, id));
  else fs.rmSync(file);
  fsyncDir(segmentsDir);
}

/** How many segments before the last one may still have a zero tail after a crash (one, and a margin). */
const UNSEALED_SEGMENTS_MAX = 3;

/** Trailing bytes that must all be zero before a sealed segment of another size is read for a zero tail. */
const ZERO_TAIL_PROBE_BYTES = 4096;

/**
 * Cuts the zero tail of the last few segments before the active one (a crash between a roll and
 * the seal of the segment it left), durably. Reading a segment to find where its records end costs
 * up to segmentBytesMax, so it is done only for a segment that can have a zero tail: one as large
 * as a prepared file (segmentBytesMax), or whose last ZERO_TAIL_PROBE_BYTES are all zero (a file
 * prepared under another segmentBytesMax). A record may end in zeros (any value can); such a
 * segment is read and kept whole, so the probe only bounds how often the read happens.
 */
function cutSealedZeroTails(segmentsDir: string, limits: Limits): void {
  const recordBytesMax = limits.recordBytesMax;
  const normal = listSegmentIds(segmentsDir).filter((id) => !isCompacted(id));
  for (const id of normal.slice(-1 - UNSEALED_SEGMENTS_MAX, -1)) {
    const fd = fs.openSync(segmentPath(segmentsDir, id), "r+");
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= SEGMENT_HEADER_BYTES) continue;
      if (size !== limits.segmentBytesMax) {
        const probe = Buffer.alloc(Math.min(ZERO_TAIL_PROBE_BYTES, size - SEGMENT_HEADER_BYTES));
        const got = fs.readSync(fd, probe, 0, probe.byteLength, size - probe.byteLength);
        if (nonZeroFrom(probe.subarray(0, got), 0) < got) continue;
      }
      const { end, zeroTail } = readRecordsEnd(fd, size, recordBytesMax, recordBytesMax);
      // Only a clean zero tail after whole records is cut; damage is left to replay to report.
      if (!zeroTail || end >= size) continue;
      fs.ftruncateSync(fd, end);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}
