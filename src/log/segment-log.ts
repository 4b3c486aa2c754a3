/**
 * The write-ahead segment log: one active segment file taking appends, older ones read-only.
 *
 * Invariants:
 * - Records are only ever appended; a batch is written with one write() per segment touched and
 *   made durable with one fdatasync() per segment before `writeBatch` resolves (group commit: the
 *   caller batches many writes into one call).
 * - A record never spans two segments; the active segment is rolled before a record that would
 *   take it past `segmentBytesMax`. A segment's records are fdatasync'd before the next segment
 *   takes one, so only the last segment can have a torn tail after a crash.
 * - Appends overwrite zeros: the next segment is prepared in the background (./segment-prepare.ts)
 *   once the active one holds `segmentPrepareAtBytes`, and a roll only writes its header, renames
 *   it into place and switches descriptors; no fsync, no file creation on the event loop. A plain
 *   active segment (a new log's first, one from an older version, one cut by recovery or repair)
 *   is rolled onto the prepared file as soon as it is ready, so the appends after it are cheap too.
 * - A segment that stops taking appends is sealed in the background (its zero tail cut, the file
 *   fsync'd: ./segment-create.ts `sealSegmentFile`) before `onSealed` tells anyone its size; the
 *   next roll waits for that seal, so at most the segment before the active one can still have a
 *   zero tail after a crash (recovery cuts it: ../recovery.ts). A seal that fails makes the next
 *   roll retry it, and fail (IO) while it cannot be done.
 * - No allocation proportional to a batch: frames go to the file with one writev.
 * - Reads go through `readBody` / `readBodies` (./segment-reader.ts), which verify each frame's
 *   checksum and exact length before returning a byte of it. Only `close` stops them.
 * - A batch is all or nothing. When a write or fdatasync fails, the log is cut back (ftruncate +
 *   fsync, removing any segment the batch started) to the end of the last acknowledged record
 *   before the error (IO) reaches a caller, so a restart, even right after it (kill -9), cannot
 *   bring the failed records back. After a failed fdatasync the file's page-cache state is
 *   unknown ("fsyncgate": a later fsync may report success for pages never written), so appends
 *   continue in a new segment. If the cut itself fails, appends are refused (IO) until it
 *   succeeds; the next append retries it, so writes work again once the disk does.
 * - All file access goes through a `FileIo` (./file-io.ts), the seam for fault injection.
 * Reads of local segments are synchronous (pread on page-cached files), like LMDB's mmap reads.
 */
import fs from "node:fs";
import { assert } from "../assert.js";
import { StrataError, ioError } from "../errors.js";
import type { Limits } from "../limits.js";
import { nodeFileIo, type FileIo } from "./file-io.js";
import { FRAME_HEADER_BYTES } from "./framing.js";
import type { Pointer } from "./record.js";
import { createSegmentFile, createSegmentFileAsync, fsyncDirIo, sealSegmentFileSync } from "./segment-create.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, segmentPath } from "./segment-files.js";
import { SegmentPreparer, type TakenSegment } from "./segment-prepare.js";
import { SealQueue, closeQuietly, type Unsealed } from "./segment-seals.js";
import { SegmentReader } from "./segment-reader.js";
import { assertOwnSegment } from "../index/foreign-logs.js";
import { isCompacted } from "./segment-set.js";

/** A failed fdatasync, told apart from a failed write: the file must then be left behind. */
class FsyncFailed extends Error {
  constructor(override readonly cause: unknown) {
    super("fdatasync failed");
  }
}

/**
 * "always": every batch is fdatasync'd before it is acknowledged (the default). "interval": batches
 * are acknowledged once written to the OS, and fdatasync runs every `fsyncIntervalMs`; a process
 * crash loses nothing, an OS crash or power loss can lose that interval (like JetStream's default).
 */
export type FsyncMode = "always" | "interval";

export interface SegmentLogEvents {
  /** A segment stopped taking appends (it is fsync'd and complete). */
  onSealed?: (id: number, bytes: number) => void;
  /** A new active segment was created. */
  onCreated?: (id: number) => void;
}

export class SegmentLog {
  private activeFd: number | undefined;
  /** Size of the active segment's file: past `activeSize` it holds zeros (its zero tail). */
  private activeFileBytes: number;
  private readonly preparer: SegmentPreparer;
  /** Segments rolled past and not yet sealed (./segment-seals.ts). */
  private readonly seals: SealQueue;
  private readonly reader: SegmentReader;
  private closed = false;
  private writing = false;
  /**
   * Set when a batch write failed: the log must end at `seg`/`size` (the end of the last
   * acknowledged record) before it takes another append, and a new segment must be started
   * first when `roll` (an fsync failed, so the old file's page-cache state is unknown). `repair`
   * makes that so, durably; until it succeeds every append fails with IO. Reads never look here.
   */
  private broken: { seg: number; size: number; roll: boolean; cause: unknown } | undefined;
  /** Number of fdatasync calls made so far (measured by the benchmark). */
  fsyncCount = 0;
  /** When the active segment first took a record (performance.now()), undefined while it is empty. */
  dirtySince: number | undefined;
  private fsyncMode: FsyncMode = "always";
  private unsynced = false;
  private syncTimer: NodeJS.Timeout | undefined;

  private constructor(
    readonly dir: string,
    private readonly limits: Limits,
    private events: SegmentLogEvents,
    public activeId: number,
    public activeSize: number,
    private readonly io: FileIo,
  ) {
    this.activeFd = io.openSync(segmentPath(dir, activeId), "r+");
    this.activeFileBytes = Math.max(activeSize, io.fstatSync(this.activeFd).size);
    this.reader = new SegmentReader(dir, limits, io);
    this.preparer = new SegmentPreparer(dir, limits, io);
    this.seals = new SealQueue(io, (u) => {
      this.events.onSealed?.(u.id, u.bytes);
      this.events.onCreated?.(u.id + 1);
    });
    this.preparer.adoptSync();
    this.maybePrepare();
  }

  /**
   * Opens the log for appending at `activeId`'s end `activeSize` (as found by recovery, which has
   * already cut any torn tail). Creates the first segment when there is none. `io` is the file
   * system seam (fault injection in tests).
   */
  static open(
    dir: string,
    limits: Limits,
    active: { id: number; size: number } | undefined,
    nextId = 1,
    events: SegmentLogEvents = {},
    io: FileIo = nodeFileIo,
  ): SegmentLog {
    fs.mkdirSync(dir, { recursive: true });
    if (active === undefined) {
      createSegmentFile(dir, nextId, io);
      return new SegmentLog(dir, limits, events, nextId, SEGMENT_HEADER_BYTES, io);
    }
    return new SegmentLog(dir, limits, events, active.id, active.size, io);
  }

  setEvents(events: SegmentLogEvents): void {
    this.events = events;
  }

  setFsyncMode(mode: FsyncMode): void {
    this.fsyncMode = mode;
    if (mode === "interval" && !this.syncTimer) {
      this.syncTimer = setInterval(() => this.syncNow(), this.limits.fsyncIntervalMs);
      this.syncTimer.unref();
    }
  }

  private syncNow(): void {
    if (!this.unsynced || this.closed || this.writing || this.broken || this.activeFd === undefined) return;
    this.unsynced = false;
    this.io.fdatasync(this.activeFd).then(
      () => void this.fsyncCount++,
      // Acknowledged in "interval" mode already (a process crash keeps the page cache); try again.
      () => void (this.unsynced = true),
    );
  }

  segmentIds(): number[] {
    return listSegmentIds(this.dir);
  }

  /**
   * Appends framed records and makes them durable. Resolves to one pointer per frame, in order.
   * Only one batch may be in progress at a time (the commit queue guarantees it).
   *
   * All or nothing: when it fails (IO), none of the batch's records stays in the log, not even
   * those of a segment it already completed, so a write answered with an error never appears
   * after a restart; the log is cut back to where the batch began before the error is thrown, and
   * the next call (once the disk has space again) appends from there.
   */
  async writeBatch(frames: Buffer[]): Promise<Pointer[]> {
    this.checkOpen();
    assert(!this.writing, "writeBatch calls must not overlap");
    this.writing = true;
    const sealed: Unsealed[] = [];
    let start: { seg: number; size: number } | undefined;
    let rolling = false;
    let ok = false;
    try {
      if (this.broken) this.repair();
      start = { seg: this.activeId, size: this.activeSize };
      if (this.activeFileBytes <= this.activeSize && this.activeSize > SEGMENT_HEADER_BYTES && this.preparer.ready) {
        // A plain active segment: move on to the prepared file now rather than at segmentBytesMax.
        rolling = true;
        sealed.push(await this.switchToNext());
        rolling = false;
      }
      const pointers: Pointer[] = [];
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      for (const f of frames) {
        assert(f.byteLength <= this.limits.recordBytesMax + FRAME_HEADER_BYTES, "frame larger than recordBytesMax");
        if (this.activeSize + pendingBytes + f.byteLength > this.limits.segmentBytesMax && this.activeSize + pendingBytes > SEGMENT_HEADER_BYTES) {
          await this.flush(pending, pendingBytes, true);
          pending = [];
          pendingBytes = 0;
          rolling = true;
          sealed.push(await this.switchToNext());
          rolling = false;
        }
        pointers.push({ seg: this.activeId, off: this.activeSize + pendingBytes, len: f.byteLength });
        pending.push(f);
        pendingBytes += f.byteLength;
      }
      await this.flush(pending, pendingBytes, this.fsyncMode === "always");
      ok = true;
      this.maybePrepare();
      return pointers;
    } catch (thrown) {
      // After a failed fsync the file's page-cache state is unknown (a retried fsync may report
      // success for pages that never reached the disk), so the next appends go to a new file.
      const fsyncFailed = thrown instanceof FsyncFailed || rolling;
      const err = thrown instanceof FsyncFailed ? thrown.cause : thrown;
      // The segments this batch rolled past are not sealed: the repair cuts the log back into them.
      for (const s of sealed) closeQuietly(this.io, s.fd);
      if (start !== undefined) {
        this.broken = { ...start, roll: fsyncFailed, cause: err };
        try {
          this.repair();
        } catch {
          // Stays broken: the next append retries the repair first.
        }
      }
      throw StrataError.is(err) ? err : ioError("appending to the segment log", err);
    } finally {
      this.writing = false;
      // Only once the batch is durable may the tier see the segments it completed (after their seal).
      if (ok) for (const s of sealed) this.seals.push(s).catch(() => undefined); // a failed seal is redone by the next roll
    }
  }

  /**
   * Starts preparing the next segment once the active one holds `segmentPrepareAtBytes`, or
   * `segmentPreparePlainAtBytes` when it is plain (no zeros ahead: each append grows it, and
   * `writeBatch` leaves it for the prepared file as soon as that is ready).
   */
  private maybePrepare(): void {
    const plain = this.activeFileBytes <= this.activeSize;
    const at = plain ? Math.min(this.limits.segmentPrepareAtBytes, this.limits.segmentPreparePlainAtBytes) : this.limits.segmentPrepareAtBytes;
    if (this.activeSize - SEGMENT_HEADER_BYTES >= at) this.preparer.start();
  }

  /**
   * Switches appends to a new active segment after the current one (whose records are durable):
   * the prepared file if one is ready, else a plain one made now, off the event loop. Waits for the
   * previous seal first (and redoes it if it failed), so at most one segment is ever unsealed.
   * Returns the segment left behind, to be sealed once the batch is durable.
   */
  private async switchToNext(): Promise<Unsealed> {
    if (this.unsynced) {
      try {
        await this.io.fdatasync(this.activeFd!);
      } catch (cause) {
        throw new FsyncFailed(cause);
      }
      this.unsynced = false;
    }
    await this.seals.sealAll();
    const next = this.activeId + 1;
    assertOwnSegment(next); // ids from 2^31 on are compaction outputs, from 2^32 on other servers' segments
    const taken: TakenSegment = (await this.preparer.take(next)) ?? { fd: await createSegmentFileAsync(this.dir, next, this.io), fileBytes: SEGMENT_HEADER_BYTES };
    return this.switchTo(next, taken);
  }

  private switchTo(next: number, taken: TakenSegment): Unsealed {
    const left: Unsealed = { id: this.activeId, bytes: this.activeSize, fileBytes: this.activeFileBytes, fd: this.activeFd! };
    this.activeFd = taken.fd;
    this.activeFileBytes = taken.fileBytes;
    this.activeId = next;
    this.activeSize = SEGMENT_HEADER_BYTES;
    this.dirtySince = undefined;
    return left;
  }

  /**
   * Writes `bytes` at the end of the active segment and, when `sync`, fdatasyncs it; a failed
   * fdatasync throws `FsyncFailed` (see `writeBatch`).
   */
  private async flush(frames: Buffer[], bytes: number, sync: boolean): Promise<void> {
    if (bytes === 0) return;
    const fd = this.activeFd!;
    let done = 0;
    // A small batch is copied into the page cache at once (microseconds; a trip through the
    // thread pool costs more); a large one is written off the event loop. One writev, no copy
    // into a fresh buffer (first-touching fresh memory is slow, and it would be garbage at once).
    const small = bytes <= this.limits.syncWriteBytesMax;
    let bufs: Buffer[] = frames;
    while (done < bytes) {
      const n = small ? this.io.writevSync(fd, bufs, this.activeSize + done) : await this.io.writev(fd, bufs, this.activeSize + done);
      done += n;
      if (done < bytes) bufs = remainder(frames, done);
    }
    if (sync) {
      try {
        await this.io.fdatasync(fd);
      } catch (cause) {
        throw new FsyncFailed(cause);
      }
      this.fsyncCount++;
      this.unsynced = false;
    } else {
      this.unsynced = true;
    }
    this.dirtySince ??= performance.now();
    this.activeSize += bytes;
    this.activeFileBytes = Math.max(this.activeFileBytes, this.activeSize);
  }

  /**
   * Makes the log end at `broken.seg`/`broken.size`, durably: removes any segment after it (the
   * failed batch may have started one), truncates it to that size and fsyncs it, then, if an
   * fsync failed, starts a new segment after it. Idempotent, so a failure part way is retried
   * from the start by the next append. Throws IO while it cannot be done.
   */
  private repair(): void {
    const b = this.broken;
    assert(b !== undefined, "repair of a log that is not broken");
    try {
      if (this.activeFd !== undefined) {
        this.io.closeSync(this.activeFd);
        this.activeFd = undefined;
      }
      let removed = false;
      for (const id of listSegmentIds(this.dir)) {
        // Compaction outputs (ids from 2^31 on) are not part of the append order: never removed here.
        if (id <= b.seg || isCompacted(id)) continue;
        this.forget(id);
        fs.rmSync(segmentPath(this.dir, id), { force: true });
        removed = true;
      }
      if (removed) fsyncDirIo(this.dir, this.io);
      const fd = this.io.openSync(segmentPath(this.dir, b.seg), "r+");
      try {
        this.io.ftruncateSync(fd, b.size);
        this.io.fsyncSync(fd);
        this.unsynced = false;
      } catch (err) {
        this.io.closeSync(fd);
        throw err;
      }
      this.activeId = b.seg;
      this.activeSize = b.size;
      this.activeFileBytes = b.size;
      this.activeFd = fd;
      if (b.roll && b.size === SEGMENT_HEADER_BYTES) {
        // Nothing acknowledged is in it: replace it with a fresh file rather than seal it empty.
        this.io.closeSync(fd);
        this.activeFd = undefined;
        createSegmentFile(this.dir, b.seg, this.io, true);
        this.activeFd = this.io.openSync(segmentPath(this.dir, b.seg), "r+");
      } else if (b.roll) {
        const left = this.rollActive(); // emits no events; done below
        sealSegmentFileSync(this.io, left.fd, left.bytes, left.fileBytes);
        this.io.closeSync(left.fd);
      }
    } catch (cause) {
      throw ioError(`repairing the segment log after a failed write (${(b.cause as Error)?.message ?? String(b.cause)})`, cause);
    }
    this.broken = undefined;
    if (b.roll && b.size > SEGMENT_HEADER_BYTES) {
      this.events.onSealed?.(b.seg, b.size);
      this.events.onCreated?.(this.activeId);
    }
  }

  /**
   * Seals the active segment and starts the next one (the seal timer; never during a batch). The
   * switch happens now; the promise resolves once the segment left behind is sealed and announced
   * (`onSealed`), and rejects (IO) if that failed (the next roll retries it).
   */
  roll(): Promise<void> {
    this.checkOpen();
    assert(!this.writing, "roll must not overlap a batch write");
    if (this.broken) {
      // The repair rolls, or the next append does; the seal timer only asks for what it finds.
      try {
        this.repair();
      } catch {
        return Promise.resolve();
      }
      if (this.activeSize === SEGMENT_HEADER_BYTES) return Promise.resolve(); // the repair rolled already
    }
    const sealedId = this.activeId;
    const sealedBytes = this.activeSize;
    let left: Unsealed;
    try {
      left = this.rollActive();
    } catch (cause) {
      this.broken = { seg: sealedId, size: sealedBytes, roll: true, cause };
      throw ioError("sealing the active segment", cause);
    }
    return this.seals.push(left).catch((cause: unknown) => {
      throw ioError("sealing the active segment", cause);
    });
  }

  /**
   * The synchronous roll (the seal timer's, and the repair's): makes the active segment's records
   * durable, seals what an earlier roll left unsealed, and switches to the prepared file or a plain
   * one made now. The new file exists before the old descriptor is given up, so a failure leaves
   * the active segment as it was (a half-created next file is removed by `repair`, or by recovery
   * after a crash). Returns the segment left behind, not sealed yet.
   */
  private rollActive(): Unsealed {
    // At fsync "always" every record is durable already; at "interval" the rest is synced now.
    if (this.unsynced) this.io.fsyncSync(this.activeFd!);
    this.unsynced = false;
    this.seals.sealAllSync();
    const next = this.activeId + 1;
    assertOwnSegment(next); // ids from 2^31 on are compaction outputs, from 2^32 on other servers' segments
    let taken = this.preparer.takeSync(next);
    if (taken === undefined) {
      createSegmentFile(this.dir, next, this.io);
      taken = { fd: this.io.openSync(segmentPath(this.dir, next), "r+"), fileBytes: SEGMENT_HEADER_BYTES };
    }
    return this.switchTo(next, taken);
  }

  /** Reads and verifies the record at `ptr`; returns its body. Never affected by a failed append. */
  readBody(ptr: Pointer): Buffer {
    this.checkOpen();
    return this.reader.readBodies(ptr.seg, [ptr])[0]!;
  }

  /** See `SegmentReader.readBodies`. */
  readBodies(seg: number, ptrs: readonly Pointer[]): Buffer[] {
    this.checkOpen();
    return this.reader.readBodies(seg, ptrs);
  }

  /** Closes a cached read descriptor, e.g. before a segment file is removed or replaced. */
  forget(seg: number): void {
    this.reader.forget(seg);
  }

  async close(): Promise<void> {
    if (this.syncTimer) clearInterval(this.syncTimer);
    if (this.closed) {
      this.closeFds();
      return;
    }
    if (this.broken) {
      try {
        this.repair();
      } catch {
        // The failed batch's bytes may stay; they were never acknowledged. See README "Failure modes".
      }
    }
    this.closed = true;
    // Seals under way finish (a failed one is left to the next open's recovery), and so does a
    // preparation (a complete prepared file is kept for the next open).
    await this.seals.settled();
    await this.preparer.close();
    try {
      if (this.activeFd !== undefined && !this.broken) this.io.fsyncSync(this.activeFd);
    } finally {
      this.closeFds();
    }
  }

  private closeFds(): void {
    if (this.activeFd !== undefined) this.io.closeSync(this.activeFd);
    this.activeFd = undefined;
    this.seals.close();
    this.preparer.closeFdSync();
    this.reader.close();
  }

  /** Preparation counters (the benchmark and tests read them). */
  prepareStats(): { prepared: number; failures: number; ready: boolean } {
    return { prepared: this.preparer.prepared, failures: this.preparer.failures, ready: this.preparer.ready };
  }

  /** Resolves once background work (a preparation, seals) has settled; for tests. */
  async settled(): Promise<void> {
    await this.preparer.settled();
    await this.seals.settled();
  }

  /** Only `close` closes the log; a failed write does not (reads go on, appends retry). */
  private checkOpen(): void {
    if (this.closed) throw new StrataError("CLOSED", "the segment log is closed (the store was closed); reopen the store");
  }
}

/** The frames left after the first `done` bytes of them (a short write's rest). */
function remainder(frames: readonly Buffer[], done: number): Buffer[] {
  const rest: Buffer[] = [];
  let skip = done;
  for (const f of frames) {
    if (skip >= f.byteLength) {
      skip -= f.byteLength;
      continue;
    }
    rest.push(skip > 0 ? f.subarray(skip) : f);
    skip = 0;
  }
  return rest;
}

/**
 * How many of `items`, from `start` on, have records that lie back to back in one segment within
 * `bytesMax` bytes (at least one): the records `SegmentLog.readBodies` can read with one read.
 */
export function adjacentRun(items: ReadonlyArray<{ ptr: Pointer }>, start: number, bytesMax: number): number {
  const first = items[start]!.ptr;
  let end = first.off + first.len;
  let n = 1;
  for (let p = items[start + n]?.ptr; p !== undefined && p.seg === first.seg && p.off === end && end + p.len - first.off <= bytesMax; p = items[start + n]?.ptr) {
    end += p.len;
    n++;
  }
  return n;
}
