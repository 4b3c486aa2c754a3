/**
 * Replaying the log into the index, for ./recovery.ts (which chose the index to replay into).
 *
 * The index's checkpoint says how much of the log it reflects. Replay applies every record after
 * it, walking each segment with ./log/frame-scan.ts `scanRecords`; for a bad record
 * (incomplete, failing its checksum, or not decoding) it says where the next valid record starts:
 * - Nothing valid follows, in the last segment: a torn tail. It is cut (it was never
 *   acknowledged, because acknowledgement waits for the fsync that covers the record) and reported.
 * - Valid records follow (or the segment is not the last one): corruption of the range up to the
 *   next valid record. The range is skipped, never cut, and reported (`report.damaged`, a warning);
 *   the records after it are replayed. The store opens and serves everything intact; a read of
 *   anything in the range (an index entry or a chunk pointer from before) fails its checksum and
 *   answers CORRUPT. A segment whose header is damaged is refused with CORRUPT.
 *
 * Compaction (docs/compaction.md): the log is the segment set ./open-segments.ts resolves from the
 * local files and markers, the object store's segments and markers and what the index knows
 * (normal segments and valid outputs, superseded inputs left out), replayed in `order` (an output
 * sits at the last normal segment it covers). Orphan outputs are deleted there, before replay. The
 * active segment is the highest normal segment, and only when nothing covers it; otherwise a new
 * one follows the highest position seen. Replay from a checkpoint starts at the entry holding the
 * checkpoint's segment (from its offset when it is that entry; when an output holds it, after the
 * output if the index knew it before this open, else the output whole: `replayStart`).
 *
 * An `import` record (a takeover) carries no rows: replay redoes the import from the object store
 * (tier/takeover.ts), waiting for it before the records after it are applied, so the rebuilt
 * location is the one the live import produced. A log with imports (or an index with foreign
 * pointers) cannot be opened without the object store: INVALID_ARGUMENT says to give the tier.
 */
import fs from "node:fs";
import { StrataError } from "./errors.js";
import { applyRecords } from "./index/apply.js";
import { registerImport } from "./index/import-rows.js";
import type { Checkpoint, LmdbIndex } from "./index/lmdb-index.js";
import { scanRecords } from "./log/frame-scan.js";
import type { ImportRecord, LogRecord, Pointer } from "./log/record.js";
import { createSegmentFile } from "./log/segment-create.js";
import { SEGMENT_HEADER_BYTES, checkSegmentHeader, listSegmentIds, segmentPath, segmentReadBound } from "./log/segment-files.js";
import { isCompacted, type Cover, type SegmentEntry } from "./log/segment-set.js";
import { openSegmentSet } from "./open-segments.js";
import type { Limits } from "./limits.js";
import type { RecoveryReport, TierSource } from "./recovery.js";
import { unsealSegment } from "./tier/sealed-segment.js";
import { segmentKey } from "./tier/segment-keys.js";

const REPLAY_TXN_RECORDS = 2000;

/** What replaying the log needs to know besides the index. */
export interface Replay {
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
export async function replayAll(index: LmdbIndex, r: Replay): Promise<void> {
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
  report.switchesFinished = set.switchesFinished;
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
      const size = await replaySegment(index, readLocal(r.segmentsDir, e.id, from, r.limits.recordBytesMax), e.id, from, last, r, segmentPath(r.segmentsDir, e.id));
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

/**
 * Reads a local segment's header and its bytes from `from` on: at open, only what to replay, and
 * not the zero tail of a pre-zeroed active segment (./log/segment-files.ts `segmentReadBound`).
 */
function readLocal(segmentsDir: string, id: number, from: number, recordBytesMax: number): SegmentBytes {
  const fd = fs.openSync(segmentPath(segmentsDir, id), "r");
  try {
    const header = Buffer.alloc(SEGMENT_HEADER_BYTES);
    checkSegmentHeader(id, header.subarray(0, readFully(fd, header, 0)));
    const size = segmentReadBound(fd, fs.fstatSync(fd).size, recordBytesMax);
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
  // A local segment may end in a zero tail (a pre-zeroed file): the end of its records, not damage.
  for (const step of scanRecords(buf, from - base, limits.recordBytesMax, { zeroTailIsEnd: file !== undefined })) {
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

export function noTierForImports(rec?: ImportRecord): StrataError {
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
