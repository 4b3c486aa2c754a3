/**
 * Cutting the segment log (./segment-log.ts) back after a failed batch write, so that a batch is
 * all or nothing.
 *
 * Invariants:
 * - When a write or fdatasync fails, the log is cut back (ftruncate + fsync, removing any segment
 *   the batch started) to the end of the last acknowledged record before the error (IO) reaches a
 *   caller, so a restart, even right after it (kill -9), cannot bring the failed records back.
 * - After a failed fdatasync the file's page-cache state is unknown ("fsyncgate": a later fsync
 *   may report success for pages never written), so appends continue in a new segment: the one
 *   cut back to is sealed, or replaced by a fresh file when it holds nothing acknowledged.
 * - The cut is idempotent: a failure part way is retried from the start (the log refuses appends
 *   with IO until it succeeds, and the next append retries it).
 * - Compaction outputs (ids from 2^31 on) are not part of the append order and are never removed.
 */
import fs from "node:fs";
import { ioError } from "../errors.js";
import type { ActiveSegment } from "./active-segment.js";
import type { FileIo } from "./file-io.js";
import { fsyncDirIo, sealSegmentFileSync } from "./segment-create.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, segmentPath } from "./segment-files.js";
import type { Unsealed } from "./segment-seals.js";
import { isCompacted } from "./segment-set.js";

/**
 * Where the log must end after a failed batch write: at `seg`/`size` (the end of the last
 * acknowledged record), before it takes another append; and a new segment must be started first
 * when `roll` (an fsync failed, so the old file's page-cache state is unknown). `cause` is the
 * failure. Reads never look at it.
 */
export interface Broken {
  seg: number;
  size: number;
  roll: boolean;
  cause: unknown;
}

/** What of the log `cutBack` works on (the log's own parts, passed explicitly). */
export interface CutBackParts {
  dir: string;
  io: FileIo;
  active: ActiveSegment;
  /** Closes a cached read descriptor of a segment about to be removed. */
  forget(seg: number): void;
  /** The log's synchronous roll: switches to a new active segment, returns the one left behind. */
  rollActive(): Unsealed;
}

/**
 * Makes the log end at `b.seg`/`b.size`, durably: removes any segment after it (the failed batch
 * may have started one), truncates it to that size and fsyncs it, then, if an fsync failed,
 * starts a new segment after it (emitting no events: the caller announces the seal). Idempotent.
 * Throws IO while it cannot be done.
 */
export function cutBack(b: Broken, log: CutBackParts): void {
  const { dir, io, active } = log;
  try {
    active.closeFd();
    let removed = false;
    for (const id of listSegmentIds(dir)) {
      // Compaction outputs (ids from 2^31 on) are not part of the append order: never removed here.
      if (id <= b.seg || isCompacted(id)) continue;
      log.forget(id);
      fs.rmSync(segmentPath(dir, id), { force: true });
      removed = true;
    }
    if (removed) fsyncDirIo(dir, io);
    active.cutBackTo(b.seg, b.size);
    if (b.roll && b.size === SEGMENT_HEADER_BYTES) {
      // Nothing acknowledged is in it: replace it with a fresh file rather than seal it empty.
      active.replaceWithFresh();
    } else if (b.roll) {
      const left = log.rollActive();
      sealSegmentFileSync(io, left.fd, left.bytes, left.fileBytes);
      io.closeSync(left.fd);
    }
  } catch (cause) {
    throw ioError(`repairing the segment log after a failed write (${(b.cause as Error)?.message ?? String(b.cause)})`, cause);
  }
}
