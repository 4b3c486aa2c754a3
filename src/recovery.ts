/**
 * Bringing the index up to date with the log when a store opens.
 *
 * The index's checkpoint says how much of the log it reflects. Recovery replays every record
 * after it. In the last segment, the first record that is incomplete or fails its checksum ends
 * the log: the tail from there is cut (it was never acknowledged, because acknowledgement waits
 * for the fsync that covers the record) and reported, never skipped over. In any earlier segment
 * such a record is corruption, and the store refuses to open rather than lose data silently.
 * If the index is missing, unreadable, or claims more than the log holds, it is rebuilt from the
 * whole log.
 */
import fs from "node:fs";
import { StrataError } from "./errors.js";
import { applyRecord } from "./index/apply.js";
import { LmdbIndex, type Checkpoint } from "./index/lmdb-index.js";
import { parseFrame } from "./log/framing.js";
import { decodeRecord, type LogRecord, type Pointer } from "./log/record.js";
import { SEGMENT_HEADER_BYTES, checkSegmentHeader, fsyncDir, listSegmentIds, segmentPath } from "./log/segment-files.js";
import type { Limits } from "./limits.js";

export interface RecoveryReport {
  /** Records replayed into the index. */
  replayed: number;
  /** True when the index was rebuilt from the whole log. */
  rebuilt: boolean;
  rebuildReason?: string;
  /** The torn or corrupt tail that was cut from the last segment, if any. */
  cut?: { seg: number; off: number; bytes: number; reason: string };
  /** The active segment to append to, or undefined when the log is empty. */
  active?: { id: number; size: number };
}

const REPLAY_TXN_RECORDS = 2000;

export function openIndexAndRecover(
  indexDir: string,
  segmentsDir: string,
  limits: Limits,
  now: number,
  opts: { forceRebuild?: boolean } = {},
): { index: LmdbIndex; report: RecoveryReport } {
  fs.mkdirSync(segmentsDir, { recursive: true });
  dropTornLastSegment(segmentsDir);
  const ids = listSegmentIds(segmentsDir);
  let rebuildReason: string | undefined = opts.forceRebuild ? "requested" : undefined;
  let index: LmdbIndex | undefined;
  if (!rebuildReason) {
    try {
      index = LmdbIndex.open(indexDir);
      const problem = checkpointProblem(index.checkpoint(), ids, segmentsDir);
      if (problem) {
        rebuildReason = problem;
        closeQuietly(index);
        index = undefined;
      }
    } catch (err) {
      if (!StrataError.is(err, "CORRUPT")) throw err;
      rebuildReason = err.message;
    }
  }
  if (index === undefined) {
    LmdbIndex.destroy(indexDir);
    index = LmdbIndex.open(indexDir);
  } else if (index.checkpoint() === undefined && ids.length > 0) {
    rebuildReason = "the index is missing";
  }
  const report: RecoveryReport = { replayed: 0, rebuilt: rebuildReason !== undefined };
  if (rebuildReason) report.rebuildReason = rebuildReason;
  const start = index.checkpoint() ?? (ids.length > 0 ? { seg: ids[0]!, off: SEGMENT_HEADER_BYTES } : undefined);
  if (start === undefined) return { index, report };
  for (const id of ids) {
    if (id < start.seg) continue;
    const last = id === ids[ids.length - 1];
    const size = replaySegment(index, segmentsDir, id, id === start.seg ? start.off : SEGMENT_HEADER_BYTES, last, limits, now, report);
    if (last) report.active = { id, size };
  }
  return { index, report };
}

function closeQuietly(index: LmdbIndex): void {
  // Closing is asynchronous in lmdb-js only for flushing; nothing was written, so drop it.
  void index.root.close();
}

function checkpointProblem(cp: Checkpoint | undefined, ids: number[], segmentsDir: string): string | undefined {
  if (cp === undefined) return undefined;
  if (!ids.includes(cp.seg)) return `the index checkpoint names segment ${cp.seg}, which is not on disk`;
  const size = fs.statSync(segmentPath(segmentsDir, cp.seg)).size;
  if (size < cp.off) return `the index reflects ${cp.off} bytes of segment ${cp.seg} but it holds ${size}`;
  return undefined;
}

/**
 * A crash while a new segment was being created can leave a last file without a whole header;
 * nothing was ever written to it, so it is removed.
 */
function dropTornLastSegment(segmentsDir: string): void {
  const ids = listSegmentIds(segmentsDir);
  const lastId = ids[ids.length - 1];
  if (lastId === undefined) return;
  const file = segmentPath(segmentsDir, lastId);
  const buf = fs.readFileSync(file);
  if (buf.byteLength > SEGMENT_HEADER_BYTES) return;
  try {
    checkSegmentHeader(lastId, buf);
  } catch {
    fs.rmSync(file);
    fsyncDir(segmentsDir);
  }
}

/** Replays one segment from `from`; returns the segment's valid length (after any cut). */
function replaySegment(
  index: LmdbIndex,
  segmentsDir: string,
  id: number,
  from: number,
  last: boolean,
  limits: Limits,
  now: number,
  report: RecoveryReport,
): number {
  const file = segmentPath(segmentsDir, id);
  const buf = fs.readFileSync(file);
  checkSegmentHeader(id, buf);
  let off = from;
  let pending: Array<{ rec: LogRecord; ptr: Pointer }> = [];
  const flush = (end: number) => {
    const batch = pending;
    pending = [];
    index.write(() => {
      for (const { rec, ptr } of batch) applyRecord(index, rec, ptr, { replay: true, dedupWindowMs: limits.dedupWindowMs, now });
      index.setCheckpoint({ seg: id, off: end });
    });
    report.replayed += batch.length;
  };
  while (off < buf.byteLength) {
    const parsed = parseFrame(buf, off, limits.recordBytesMax);
    let problem: string | undefined;
    let rec: LogRecord | undefined;
    if (parsed.kind === "ok") {
      try {
        rec = decodeRecord(parsed.body);
      } catch (err) {
        problem = (err as Error).message;
      }
    } else {
      problem = parsed.kind === "corrupt" ? parsed.reason : `incomplete record (${parsed.needBytes} bytes needed, ${buf.byteLength - off} left)`;
    }
    if (problem !== undefined || parsed.kind !== "ok" || rec === undefined) {
      if (!last) {
        throw new StrataError("CORRUPT", `segment ${id} is damaged at offset ${off} (${problem}); it is not the last segment, so this is not a torn write. Restore the segment from the object store.`);
      }
      flush(off);
      cutTail(file, off);
      report.cut = { seg: id, off, bytes: buf.byteLength - off, reason: problem ?? "invalid record" };
      return off;
    }
    pending.push({ rec, ptr: { seg: id, off, len: parsed.next - off } });
    off = parsed.next;
    if (pending.length >= REPLAY_TXN_RECORDS) flush(off);
  }
  flush(off);
  return off;
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
