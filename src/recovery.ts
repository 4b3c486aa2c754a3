/**
 * Bringing the index up to date with the log when a store opens.
 *
 * The index's checkpoint says how much of the log it reflects. Recovery replays every record
 * after it. In the last segment, the first record that is incomplete or fails its checksum ends
 * the log: the tail from there is cut (it was never acknowledged, because acknowledgement waits
 * for the fsync that covers the record) and reported, never skipped over. In any earlier segment
 * such a record is corruption, and the store refuses to open rather than lose data silently.
 * If the index is missing, unreadable, claims more than the log holds, or may have lost writes to
 * an OS crash (./index/unsynced-marker.ts), it is rebuilt from the whole log.
 */
import fs from "node:fs";
import { StrataError } from "./errors.js";
import { IndexBatch } from "./index/apply.js";
import { LmdbIndex, type Checkpoint } from "./index/lmdb-index.js";
import { unsyncedProblem, writeUnsyncedMarker } from "./index/unsynced-marker.js";
import { parseFrame } from "./log/framing.js";
import { decodeRecord, type LogRecord, type Pointer } from "./log/record.js";
import { SEGMENT_HEADER_BYTES, checkSegmentHeader, fsyncDir, listSegmentIds, segmentPath } from "./log/segment-files.js";
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
}

export interface RecoveryReport {
  /** Records replayed into the index. */
  replayed: number;
  /** True when the index was rebuilt from the whole log. */
  rebuilt: boolean;
  rebuildReason?: string;
  /** The torn or corrupt tail that was cut from the last segment, if any. */
  cut?: { seg: number; off: number; bytes: number; reason: string };
  /** The active segment to append to, or undefined when a new one must be created. */
  active?: { id: number; size: number };
  /** Id for a new active segment when `active` is undefined. */
  nextId: number;
  /** Segment ids on the local disk and in the object store. */
  localIds: number[];
  tierIds: number[];
  /** Sizes of the segment objects, as listed (empty when the listing was not possible). */
  tierSizes: Map<number, number>;
  /** True when the index came from a checkpoint in the object store. */
  restoredCheckpoint?: { seg: number; off: number };
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
  dropTornLastSegment(segmentsDir);
  const localIds = listSegmentIds(segmentsDir);
  const { ids: tierIds, sizes: tierSizes } = opts.tier ? await tierSegments(opts.tier.objects, opts.tier.serverId, { indexDir, segmentsDir }, limits) : { ids: [], sizes: new Map<number, number>() };
  const all = [...new Set([...localIds, ...tierIds])].sort((a, b) => a - b);
  let rebuildReason: string | undefined = opts.forceRebuild ? "requested" : unsyncedProblem(indexDir);
  // From here until a clean close, the index may hold writes the disk does not.
  writeUnsyncedMarker(indexDir);
  const indexOptions = { metaCacheMax: limits.metaCacheMax };
  let index: LmdbIndex | undefined;
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
    }
  }
  const lastId = all[all.length - 1];
  const report: RecoveryReport = { replayed: 0, rebuilt: rebuildReason !== undefined, nextId: (lastId ?? 0) + 1, localIds, tierIds, tierSizes };
  if (index === undefined) {
    LmdbIndex.destroy(indexDir);
    const restored = opts.tier && opts.forceRebuild !== true ? await restoreCheckpoint(opts.tier.objects, opts.tier.serverId, indexDir) : undefined;
    if (restored) report.restoredCheckpoint = restored;
    index = LmdbIndex.open(indexDir, indexOptions);
  }
  if (rebuildReason) report.rebuildReason = rebuildReason;
  const start = index.checkpoint() ?? (all.length > 0 ? { seg: all[0]!, off: SEGMENT_HEADER_BYTES } : undefined);
  if (start === undefined) return { index, report };
  const localSet = new Set(localIds);
  try {
    for (const id of all) {
      if (id < start.seg) continue;
      const from = id === start.seg ? start.off : SEGMENT_HEADER_BYTES;
      if (localSet.has(id)) {
        const last = id === lastId;
        const size = replaySegment(index, readLocal(segmentsDir, id, from), id, from, last, limits, now, report, segmentPath(segmentsDir, id));
        if (last) report.active = { id, size };
      } else {
        const raw = await fetchTierSegment(opts.tier!, id);
        replaySegment(index, { buf: raw, base: 0 }, id, from, false, limits, now, report, undefined);
      }
    }
  } catch (err) {
    // The open fails (e.g. the object store is unreachable mid-restore); what was replayed is
    // kept, and the next open continues from there. The index must not stay open meanwhile.
    await closeQuietly(index);
    throw err;
  }
  return { index, report };
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
  const ids = listSegmentIds(segmentsDir);
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
function replaySegment(
  index: LmdbIndex,
  { buf, base }: SegmentBytes,
  id: number,
  from: number,
  last: boolean,
  limits: Limits,
  now: number,
  report: RecoveryReport,
  file: string | undefined,
): number {
  let off = from;
  let pending: Array<{ rec: LogRecord; ptr: Pointer }> = [];
  const flush = (end: number) => {
    const batch = pending;
    pending = [];
    index.write(() => {
      const indexing = new IndexBatch(index, { replay: true, dedupWindowMs: limits.dedupWindowMs, now });
      for (const { rec, ptr } of batch) indexing.apply(rec, ptr);
      indexing.finish();
      index.setCheckpoint({ seg: id, off: end });
    });
    report.replayed += batch.length;
  };
  const bufEnd = base + buf.byteLength;
  while (off < bufEnd) {
    const parsed = parseFrame(buf, off - base, limits.recordBytesMax);
    let problem: string | undefined;
    let rec: LogRecord | undefined;
    if (parsed.kind === "ok") {
      // A record that passes its checksum was written whole: if it does not decode, it is not a
      // torn write and cutting it would drop the acknowledged records after it.
      try {
        rec = decodeRecord(parsed.body);
      } catch (err) {
        throw new StrataError("CORRUPT", `segment ${id} holds a whole record at offset ${off} that does not decode (${(err as Error).message}); written by a newer or faulty Strata? Nothing was cut.`, { cause: err });
      }
    } else {
      problem = parsed.kind === "corrupt" ? parsed.reason : `incomplete record (${parsed.needBytes} bytes needed, ${bufEnd - off} left)`;
    }
    if (problem !== undefined || parsed.kind !== "ok" || rec === undefined) {
      if (!last || file === undefined) {
        throw new StrataError("CORRUPT", `segment ${id} is damaged at offset ${off} (${problem}); it is not the last segment, so this is not a torn write. Restore the segment from the object store.`);
      }
      flush(off);
      cutTail(file, off);
      report.cut = { seg: id, off, bytes: bufEnd - off, reason: problem ?? "invalid record" };
      return off;
    }
    const next = base + parsed.next;
    pending.push({ rec, ptr: { seg: id, off, len: next - off } });
    off = next;
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
