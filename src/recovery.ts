/**
 * Bringing the index up to date with the log when a store opens.
 *
 * The index's checkpoint says how much of the log it reflects. Recovery replays every record
 * after it, walking each segment with ./log/frame-scan.ts `scanRecords`; for a bad record
 * (incomplete, failing its checksum, or not decoding) it says where the next valid record starts:
 * - Nothing valid follows, in the last segment: a torn tail. It is cut (it was never
 *   acknowledged, because acknowledgement waits for the fsync that covers the record) and reported.
 * - Valid records follow (or the segment is not the last one): corruption of the range up to the
 *   next valid record. The range is skipped, never cut, and reported (`report.damaged`, a warning);
 *   the records after it are replayed. The store opens and serves everything intact; a read of
 *   anything in the range (an index entry or a chunk pointer from before) fails its checksum and
 *   answers CORRUPT. A segment whose header is damaged is refused with CORRUPT.
 * If the index is missing, unreadable, claims more than the log holds, or may have lost writes to
 * an OS crash (./index/unsynced-marker.ts), it is rebuilt from the whole log; a damaged index file
 * (./index/index-check.ts) is first moved aside as `index.damaged-<time>`. A requested rebuild
 * (`strata reindex`) builds into `index.rebuild` and swaps it in only once it is complete, so a
 * failure or a crash leaves the old index as it was.
 *
 * Compaction (docs/compaction.md): the log is the segment set ./open-segments.ts resolves from the
 * local files and markers, the object store's segments and markers and what the index knows
 * (normal segments and valid outputs, superseded inputs left out), replayed in `order` (an output
 * sits at the last normal segment it covers). Orphan outputs are deleted there, before replay. The
 * active segment is the highest normal segment, and only when nothing covers it; otherwise a new
 * one follows the highest position seen. Replay from a checkpoint starts at the entry holding the
 * checkpoint's segment (from its offset when it is that entry, whole when an output holds it).
 *
 * An `import` record (a takeover) carries no rows: replay redoes the import from the object store
 * (tier/takeover.ts), waiting for it before the records after it are applied, so the rebuilt
 * location is the one the live import produced. A log with imports (or an index with foreign
 * pointers) cannot be opened without the object store: INVALID_ARGUMENT says to give the tier.
 */
import fs from "node:fs";
import path from "node:path";
import { StrataError } from "./errors.js";
import { applyRecords } from "./index/apply.js";
import { hasForeignLogs } from "./index/foreign-logs.js";
import { registerImport, type ImportRows } from "./index/import-rows.js";
import { moveIndexAside } from "./index/index-check.js";
import { LmdbIndex, type Checkpoint } from "./index/lmdb-index.js";
import { unsyncedProblem, writeUnsyncedMarker } from "./index/unsynced-marker.js";
import { scanRecords } from "./log/frame-scan.js";
import type { ImportRecord, LogRecord, Pointer } from "./log/record.js";
import { createSegmentFile } from "./log/segment-create.js";
import { SEGMENT_HEADER_BYTES, checkSegmentHeader, fsyncDir, listSegmentIds, segmentPath } from "./log/segment-files.js";
import { isCompacted, type Cover, type SegmentEntry } from "./log/segment-set.js";
import { openSegmentSet, removeTempOutputs, type SegmentSetAtOpen } from "./open-segments.js";
import type { Limits } from "./limits.js";
import { restoreCheckpoint } from "./tier/checkpoints.js";
import type { ObjectStore } from "./tier/object-store.js";
import { unsealSegment } from "./tier/sealed-segment.js";
import { segmentKey } from "./tier/segment-keys.js";
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

const REPLAY_TXN_RECORDS = 2000;

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

/** What replaying the log needs to know besides the index. */
interface Replay {
  localIds: number[];
  tierIds: number[];
  tierMarkers: Cover[];
  segmentsDir: string;
  limits: Limits;
  now: number;
  report: RecoveryReport;
  tier?: TierSource;
}

/**
 * Resolves the segment set (deleting orphans, recording outputs in the index), then replays every
 * entry from the index's checkpoint on (the whole log for an empty index), in order.
 */
async function replayAll(index: LmdbIndex, r: Replay): Promise<void> {
  const cp = index.checkpoint();
  const set = await openSegmentSet({
    segmentsDir: r.segmentsDir,
    localIds: r.localIds,
    tierIds: r.tierIds,
    tierMarkers: r.tierMarkers,
    index,
    trusted: cp !== undefined,
    now: r.now,
    ...(r.tier ? { tier: { objects: r.tier.objects, serverId: r.tier.serverId } } : {}),
  });
  const { report } = r;
  report.segments = set.entries;
  report.superseded = set.superseded;
  report.orphans = set.orphans;
  report.unknownOutputsKept = set.keptUnknown;
  report.nextId = set.lastPosition + 1;
  // Orphans deleted from the object store are no longer there for the tier to find.
  const gone = new Set(set.orphans.filter((o) => o.removed).map((o) => o.id));
  if (gone.size > 0) {
    report.tierIds = report.tierIds.filter((id) => !gone.has(id));
    for (const id of gone) report.tierSizes.delete(id);
  }
  const localSet = new Set(listSegmentIds(r.segmentsDir));
  // The active segment: the highest normal one, when it is local and no output covers it (a stopped
  // server's last segment may have been compacted: then appends go to a new one).
  const activeId = set.lastNormal !== undefined && set.lastNormal === set.lastPosition && localSet.has(set.lastNormal) ? set.lastNormal : undefined;
  const start = replayStart(index, cp, set.entries, set.knownOutputs);
  for (const e of set.entries) {
    if (start === undefined || e.order < start.order) continue;
    const from = e.id === start.seg ? start.off : SEGMENT_HEADER_BYTES;
    if (localSet.has(e.id)) {
      const last = e.id === activeId;
      const size = await replaySegment(index, readLocal(r.segmentsDir, e.id, from), e.id, from, last, r, segmentPath(r.segmentsDir, e.id));
      if (last) report.active = { id: e.id, size };
    } else {
      const raw = await fetchTierSegment(r.tier!, e.id);
      await replaySegment(index, { buf: raw, base: 0 }, e.id, from, false, r, undefined);
    }
  }
  const after = index.checkpoint();
  if (report.active === undefined && after !== undefined && isCompacted(after.seg)) {
    // The log ends in an output: the checkpoint must name a normal segment (checkpoint keys sort
    // by it, and compaction compares positions by it), so the next segment is created now and
    // the checkpoint moved to its start, which is the same point of the log.
    createSegmentFile(r.segmentsDir, report.nextId);
    index.write(() => index.setCheckpoint({ seg: report.nextId, off: SEGMENT_HEADER_BYTES }));
    report.active = { id: report.nextId, size: SEGMENT_HEADER_BYTES };
  }
}

/**
 * Where replay starts: the entry holding the checkpoint's segment, from the checkpoint's offset
 * when it is that entry itself. When an output holds it (the checkpoint names a superseded input:
 * a stopped server's last segment was compacted, or the log was compacted after the position the
 * checkpoint was taken at), the entry after that output, if the index knew the output before this
 * open: its switch re-pointed the index to it, so the index reflects all of it, and replaying it
 * again would redo its imports and reopen its chunks. An output the index did not know (kept only
 * because its inputs are gone) is replayed whole. Undefined for an empty log.
 */
function replayStart(index: LmdbIndex, cp: Checkpoint | undefined, entries: SegmentEntry[], known: ReadonlySet<number>): { order: number; seg: number; off: number } | undefined {
  if (entries.length === 0) return undefined;
  if (cp === undefined) return { order: entries[0]!.order, seg: entries[0]!.id, off: SEGMENT_HEADER_BYTES };
  const own = entries.find((e) => e.id === cp.seg);
  if (own) return { order: own.order, seg: own.id, off: cp.off };
  const info = index.segs.get(cp.seg);
  const pos = isCompacted(cp.seg) ? info?.lo ?? cp.seg : cp.seg;
  const holder = entries.find((e) => e.lo <= pos && pos <= e.hi);
  if (holder && known.has(holder.id)) return { order: holder.order + 1, seg: -1, off: SEGMENT_HEADER_BYTES };
  if (holder) return { order: holder.order, seg: holder.id, off: SEGMENT_HEADER_BYTES };
  // Nothing holds it any more: everything after it.
  return { order: isCompacted(cp.seg) ? info?.hi ?? 0 : cp.seg, seg: -1, off: SEGMENT_HEADER_BYTES };
}

async function fetchTierSegment(tier: TierSource, id: number): Promise<Buffer> {
  const obj = await tier.objects.get(segmentKey(tier.serverId, id));
  if (!obj) throw new StrataError("UNAVAILABLE", `segment ${id} was listed in the object store but could not be read; retry`);
  return unsealSegment(id, obj);
}

/** Bytes of a segment from `base` on (after checking its header), as `buf`. */
interface SegmentBytes {
  buf: Buffer;
  base: number;
}

/** Reads a local segment's header and its bytes from `from` on: at open, only what to replay. */
function readLocal(segmentsDir: string, id: number, from: number): SegmentBytes {
  const fd = fs.openSync(segmentPath(segmentsDir, id), "r");
  try {
    const header = Buffer.alloc(SEGMENT_HEADER_BYTES);
    checkSegmentHeader(id, header.subarray(0, readFully(fd, header, 0)));
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.allocUnsafe(Math.max(0, size - from));
    return { buf: buf.subarray(0, readFully(fd, buf, from)), base: from };
  } finally {
    fs.closeSync(fd);
  }
}

function readFully(fd: number, buf: Buffer, position: number): number {
  let done = 0;
  while (done < buf.byteLength) {
    const n = fs.readSync(fd, buf, done, buf.byteLength - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
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

/** Replays one segment from `from`; returns the segment's valid length (after any cut). */
async function replaySegment(index: LmdbIndex, { buf, base }: SegmentBytes, id: number, from: number, last: boolean, r: Replay, file: string | undefined): Promise<number> {
  const { limits, now, report } = r;
  let off = from;
  let pending: Array<{ rec: LogRecord; ptr: Pointer }> = [];
  const flush = (end: number) => {
    const batch = pending;
    pending = [];
    // A record the index cannot take is quarantined alone, never the end of replay (apply.ts).
    let applied: ReturnType<typeof applyRecords>;
    try {
      applied = applyRecords(index, batch, { replay: true, dedupWindowMs: limits.dedupWindowMs, now }, { seg: id, off: end });
    } catch (cause) {
      // The index itself cannot be written (its disk full): the open fails, retryably; what was
      // replayed so far is kept and the next open continues from there.
      throw new StrataError("IO", `the index cannot be written while replaying segment ${id} (${(cause as Error).message}); free disk space and open the store again`, { cause });
    }
    for (const q of applied.quarantined) (report.quarantined ??= []).push({ seg: q.ptr.seg, off: q.ptr.off, loc: q.loc, reason: q.reason });
    report.replayed += batch.length;
  };
  const bufEnd = base + buf.byteLength;
  for (const step of scanRecords(buf, from - base, limits.recordBytesMax)) {
    off = base + step.off;
    if (step.kind === "damaged") {
      // Nothing valid follows in the last local segment: a torn write, cut. Anywhere else the
      // range is skipped and reported, and the records after it are kept.
      if (step.next === undefined && last && file !== undefined) {
        flush(off);
        cutTail(file, off);
        report.cut = { seg: id, off, bytes: bufEnd - off, reason: step.reason };
        return off;
      }
      const to = step.next === undefined ? bufEnd : base + step.next;
      report.damaged.push({ seg: id, off, bytes: to - off, reason: step.reason });
      off = to;
      continue;
    }
    const next = base + step.next;
    if (step.rec.t === "import") {
      // Everything before it is applied first; the import is redone before anything after it.
      flush(off);
      await redoImport(step.rec, r);
    }
    pending.push({ rec: step.rec, ptr: { seg: id, off, len: next - off } });
    off = next;
    if (pending.length >= REPLAY_TXN_RECORDS) flush(off);
  }
  flush(off);
  return off;
}

/** Prepares the rows of a replayed import record again, from the object store. */
async function redoImport(rec: ImportRecord, r: Replay): Promise<void> {
  const prepare = r.tier?.prepareImport;
  if (!prepare) throw noTierForImports(rec);
  const rows = await prepare(rec);
  registerImport(rec, rows);
  r.report.imports = (r.report.imports ?? 0) + 1;
  const got = rows.meta?.rev ?? 0;
  if (rec.rev !== undefined && got !== rec.rev) (r.report.importMismatches ??= []).push({ loc: rec.loc, from: rec.from, expected: rec.rev, got });
}

function noTierForImports(rec?: ImportRecord): StrataError {
  const what = rec ? `the log holds an import of "${rec.loc}" from server "${rec.from}"` : "the index points into other servers' segments (imported locations)";
  return new StrataError("INVALID_ARGUMENT", `${what}, which only the object store holds; open the store with its tier (--tier) to use this data directory`);
}

function cutTail(file: string, off: number): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.ftruncateSync(fd, off);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
