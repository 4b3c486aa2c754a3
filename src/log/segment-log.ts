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
 * - The active segment's file, its write position and its fdatasyncs are ./active-segment.ts's
 *   (one writev per segment touched, no allocation proportional to a batch).
 * - Reads go through `readBody` / `readBodies` (./segment-reader.ts), which verify each frame's
 *   checksum and exact length before returning a byte of it. Only `close` stops them.
 * - A batch is all or nothing: when a write or fdatasync fails, the log is cut back durably to the
 *   end of the last acknowledged record before the error (IO) reaches a caller, and after a failed
 *   fdatasync appends continue in a new segment (./segment-repair.ts). If the cut itself fails,
 *   appends are refused (IO) until it succeeds; the next append (or roll, or close) retries it.
 * - All file access goes through a `FileIo` (./file-io.ts), the seam for fault injection.
 * Reads of local segments are synchronous (pread on page-cached files), like LMDB's mmap reads.
 */
import fs from "node:fs";
import { assert } from "../assert.js";
import { StrataError, ioError } from "../errors.js";
import type { Limits } from "../limits.js";
import { ActiveSegment, FsyncFailed } from "./active-segment.js";
import { nodeFileIo, type FileIo } from "./file-io.js";
import { FRAME_HEADER_BYTES } from "./framing.js";
import type { Pointer } from "./record.js";
import { createSegmentFile, createSegmentFileAsync } from "./segment-create.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, segmentPath } from "./segment-files.js";
import { PreparePolicy } from "./prepare-policy.js";
import { SegmentPreparer, type TakenSegment } from "./segment-prepare.js";
import { SealQueue, closeQuietly, type Unsealed } from "./segment-seals.js";
import { SegmentReader } from "./segment-reader.js";
import { cutBack, type Broken } from "./segment-repair.js";
import { assertOwnSegment } from "../index/foreign-logs.js";

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
  /** The segment taking appends: its descriptor, size and sync state (./active-segment.ts). */
  private readonly active: ActiveSegment;
  private readonly preparer: SegmentPreparer;
  /** Whether preparing pays under the current load (./prepare-policy.ts). */
  private readonly preparePolicy: PreparePolicy;
  /** Segments rolled past and not yet sealed (./segment-seals.ts). */
  private readonly seals: SealQueue;
  private readonly reader: SegmentReader;
  private closed = false;
  private writing = false;
  /** Set when a batch write failed (./segment-repair.ts); until `repair` succeeds every append fails with IO. */
  private broken: Broken | undefined;
  private fsyncMode: FsyncMode = "always";
  /** Until when (performance.now()) a lone write's fdatasync goes to the thread pool: one on the event loop was slow. */
  private inlineOffUntil = 0;
  /** Whether the event loop turned since the last fdatasync on it (`appendLast`). */
  private loopTurned = true;
  private syncTimer: NodeJS.Timeout | undefined;

  private constructor(
    readonly dir: string,
    private readonly limits: Limits,
    private events: SegmentLogEvents,
    activeId: number,
    activeSize: number,
    private readonly io: FileIo,
  ) {
    this.active = new ActiveSegment(dir, limits, io, activeId, activeSize);
    this.reader = new SegmentReader(dir, limits, io);
    // The file is needed soon while the active segment is plain (each of its fdatasyncs commits
    // the journal too; the log leaves it as soon as the file is ready), or has less than
    // segmentPrepareAtBytes left.
    this.preparer = new SegmentPreparer(dir, limits, io, () => this.active.plain || this.activeSize + limits.segmentPrepareAtBytes >= limits.segmentBytesMax);
    this.preparePolicy = new PreparePolicy(limits.segmentPrepareSyncBytesMax);
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

  /** The segment taking appends. */
  get activeId(): number {
    return this.active.id;
  }

  /** Where the next record goes in the active segment (its records end there). */
  get activeSize(): number {
    return this.active.size;
  }

  /** Number of fdatasync calls made so far (measured by the benchmark). */
  get fsyncCount(): number {
    return this.active.fsyncCount;
  }

  /** When the active segment first took a record (performance.now()), undefined while it is empty. */
  get dirtySince(): number | undefined {
    return this.active.dirtySince;
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
    if (this.closed || this.writing || this.broken) return;
    this.active.syncInBackground();
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
   * the next call (once the disk has space again) appends from there. `alone`: the caller has
   * nothing else to do until this batch is durable (one write, none queued), so a small batch's
   * fdatasync may be made on the event loop (`appendLast`).
   */
  async writeBatch(frames: Buffer[], alone = false): Promise<Pointer[]> {
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
      if (this.active.plain && this.activeSize > SEGMENT_HEADER_BYTES && this.preparer.ready) {
        // A plain active segment: move on to the prepared file now rather than at segmentBytesMax.
        rolling = true;
        sealed.push(await this.switchToNext());
        rolling = false;
      }
      const pointers: Pointer[] = [];
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let batchBytes = 0;
      for (const f of frames) {
        batchBytes += f.byteLength;
        assert(f.byteLength <= this.limits.recordBytesMax + FRAME_HEADER_BYTES, "frame larger than recordBytesMax");
        if (this.activeSize + pendingBytes + f.byteLength > this.limits.segmentBytesMax && this.activeSize + pendingBytes > SEGMENT_HEADER_BYTES) {
          await this.active.append(pending, pendingBytes, true);
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
      await this.appendLast(pending, pendingBytes, alone && batchBytes === pendingBytes);
      ok = true;
      this.preparePolicy.appended(batchBytes, this.active.fsyncCount, performance.now());
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
   * Writes a batch's last frames to the active segment, fdatasync'd at fsync "always". A lone
   * write's (`alone`: the caller has nothing else to write or answer meanwhile) is fdatasync'd on
   * the event loop when it is small (`syncWriteBytesMax`, written there too): a trip through the
   * thread pool wakes a worker and then the event loop again, ~0.3 ms of a lone append's ~1 ms on
   * the 2-core VM. The loop is blocked for as long as the disk takes, so when one takes longer
   * than `fsyncInlineMaxMs` (a slow or stalling disk), lone writes go back to the thread pool for
   * `fsyncInlineOffMs`; `fsyncInlineMaxMs` 0 never blocks the loop. A caller awaiting lone writes
   * in a loop must not keep timers and I/O from ever running, as the thread pool's callbacks gave
   * them turns: when the event loop has not turned since the last one (a setImmediate after each
   * tells), the next waits for a turn first. A server's lone writes each come from a socket read,
   * a turn of their own, and wait for nothing.
   */
  private async appendLast(frames: Buffer[], bytes: number, alone: boolean): Promise<void> {
    const sync = this.fsyncMode === "always";
    const inline = sync && alone && bytes <= this.limits.syncWriteBytesMax && this.limits.fsyncInlineMaxMs > 0 && performance.now() >= this.inlineOffUntil;
    if (!inline) return this.active.append(frames, bytes, sync);
    if (!this.loopTurned) await new Promise<void>((resolve) => setImmediate(resolve));
    this.loopTurned = false;
    setImmediate(() => (this.loopTurned = true));
    const started = performance.now();
    try {
      await this.active.append(frames, bytes, true, true);
    } finally {
      const now = performance.now();
      if (now - started > this.limits.fsyncInlineMaxMs) this.inlineOffUntil = now + this.limits.fsyncInlineOffMs;
    }
  }

  /**
   * Starts preparing the next segment once the active one holds `segmentPrepareAtBytes`, or
   * `segmentPreparePlainAtBytes` when it is plain (no zeros ahead: each append grows it, and
   * `writeBatch` leaves it for the prepared file as soon as that is ready), unless the recent
   * fdatasyncs covered more than `segmentPrepareSyncBytesMax` each (./prepare-policy.ts).
   */
  private maybePrepare(): void {
    const at = this.active.plain ? Math.min(this.limits.segmentPrepareAtBytes, this.limits.segmentPreparePlainAtBytes) : this.limits.segmentPrepareAtBytes;
    if (this.activeSize - SEGMENT_HEADER_BYTES >= at && this.preparePolicy.shouldPrepare(this.active.fsyncCount)) this.preparer.start();
  }

  /**
   * Switches appends to a new active segment after the current one (whose records are durable):
   * the prepared file if one is ready, else a plain one made now, off the event loop. Waits for the
   * previous seal first (and redoes it if it failed), so at most one segment is ever unsealed.
   * Returns the segment left behind, to be sealed once the batch is durable.
   */
  private async switchToNext(): Promise<Unsealed> {
    await this.active.syncBeforeLeaving();
    await this.seals.sealAll();
    const next = this.activeId + 1;
    assertOwnSegment(next); // ids from 2^31 on are compaction outputs, from 2^32 on other servers' segments
    const taken: TakenSegment = (await this.preparer.take(next)) ?? { fd: await createSegmentFileAsync(this.dir, next, this.io), fileBytes: SEGMENT_HEADER_BYTES };
    return this.active.switchTo(next, taken);
  }

  /**
   * Makes the log end where `broken` says, durably (./segment-repair.ts `cutBack`), then
   * announces the segment it sealed, if any. Throws IO while it cannot be done.
   */
  private repair(): void {
    const b = this.broken;
    assert(b !== undefined, "repair of a log that is not broken");
    cutBack(b, { dir: this.dir, io: this.io, active: this.active, forget: (id) => this.forget(id), rollActive: () => this.rollActive() });
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
    this.active.syncBeforeLeavingSync();
    this.seals.sealAllSync();
    const next = this.activeId + 1;
    assertOwnSegment(next); // ids from 2^31 on are compaction outputs, from 2^32 on other servers' segments
    let taken = this.preparer.takeSync(next);
    if (taken === undefined) {
      createSegmentFile(this.dir, next, this.io);
      taken = { fd: this.io.openSync(segmentPath(this.dir, next), "r+"), fileBytes: SEGMENT_HEADER_BYTES };
    }
    return this.active.switchTo(next, taken);
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
      if (this.active.fd !== undefined && !this.broken) this.io.fsyncSync(this.active.fd);
    } finally {
      this.closeFds();
    }
  }

  private closeFds(): void {
    this.active.closeFd();
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
