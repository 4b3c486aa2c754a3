/**
 * The write-ahead segment log: one active segment file taking appends, older ones read-only.
 *
 * Invariants:
 * - Records are only ever appended; a batch is written with one write() per segment touched and
 *   made durable with one fdatasync() per segment before `writeBatch` resolves (group commit: the
 *   caller batches many writes into one call).
 * - A record never spans two segments; the active segment is rolled before a record that would
 *   take it past `segmentBytesMax`. A segment is fsync'd before the next one is created, so only
 *   the last segment can have a torn tail after a crash.
 * - Reads go through `readBody` / `readBodies`, which verify each frame's checksum and exact
 *   length before returning a byte of it.
 * Reads of local segments are synchronous (pread on page-cached files), like LMDB's mmap reads.
 */
import fs from "node:fs";
import { promisify } from "node:util";
import { assert } from "../assert.js";
import { StrataError, ioError } from "../errors.js";
import type { Limits } from "../limits.js";
import { FRAME_HEADER_BYTES, parseFrame } from "./framing.js";
import type { Pointer } from "./record.js";
import { SEGMENT_HEADER_BYTES, checkSegmentHeader, fsyncDir, listSegmentIds, segmentHeader, segmentPath } from "./segment-files.js";

const write = promisify(fs.write);
const fdatasync = promisify(fs.fdatasync);

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
  private activeFd: number;
  private readonly readFds = new Map<number, number>();
  private closed = false;
  private writing = false;
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
  ) {
    this.activeFd = fs.openSync(segmentPath(dir, activeId), "r+");
  }

  /**
   * Opens the log for appending at `activeId`'s end `activeSize` (as found by recovery, which has
   * already cut any torn tail). Creates the first segment when there is none.
   */
  static open(dir: string, limits: Limits, active: { id: number; size: number } | undefined, nextId = 1, events: SegmentLogEvents = {}): SegmentLog {
    fs.mkdirSync(dir, { recursive: true });
    if (active === undefined) {
      createSegmentFile(dir, nextId);
      return new SegmentLog(dir, limits, events, nextId, SEGMENT_HEADER_BYTES);
    }
    return new SegmentLog(dir, limits, events, active.id, active.size);
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
    if (!this.unsynced || this.closed || this.writing) return;
    this.unsynced = false;
    fdatasync(this.activeFd).then(
      () => void this.fsyncCount++,
      () => undefined,
    );
  }

  segmentIds(): number[] {
    return listSegmentIds(this.dir);
  }

  /**
   * Appends framed records and makes them durable. Resolves to one pointer per frame, in order.
   * Only one batch may be in progress at a time (the commit queue guarantees it).
   */
  async writeBatch(frames: Buffer[]): Promise<Pointer[]> {
    this.checkOpen();
    assert(!this.writing, "writeBatch calls must not overlap");
    this.writing = true;
    try {
      const pointers: Pointer[] = [];
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      for (const f of frames) {
        assert(f.byteLength <= this.limits.recordBytesMax + FRAME_HEADER_BYTES, "frame larger than recordBytesMax");
        if (this.activeSize + pendingBytes + f.byteLength > this.limits.segmentBytesMax && this.activeSize + pendingBytes > SEGMENT_HEADER_BYTES) {
          await this.flush(pending, pendingBytes);
          pending = [];
          pendingBytes = 0;
          this.rollActive();
        }
        pointers.push({ seg: this.activeId, off: this.activeSize + pendingBytes, len: f.byteLength });
        pending.push(f);
        pendingBytes += f.byteLength;
      }
      await this.flush(pending, pendingBytes);
      return pointers;
    } finally {
      this.writing = false;
    }
  }

  private async flush(frames: Buffer[], bytes: number): Promise<void> {
    if (bytes === 0) return;
    const buf = frames.length === 1 ? frames[0]! : Buffer.concat(frames, bytes);
    try {
      let done = 0;
      // A small batch is copied into the page cache at once (microseconds; a trip through the
      // thread pool costs more); a large one is written off the event loop.
      const sync = buf.byteLength <= this.limits.syncWriteBytesMax;
      while (done < buf.byteLength) {
        const n = sync
          ? fs.writeSync(this.activeFd, buf, done, buf.byteLength - done, this.activeSize + done)
          : (await write(this.activeFd, buf, done, buf.byteLength - done, this.activeSize + done)).bytesWritten;
        done += n;
      }
      if (this.fsyncMode === "always") {
        await fdatasync(this.activeFd);
        this.fsyncCount++;
      } else {
        this.unsynced = true;
      }
      this.dirtySince ??= performance.now();
    } catch (cause) {
      // The file may now hold part of this batch; it was never acknowledged and recovery cuts
      // it. Refuse further appends rather than write after a hole.
      this.closed = true;
      throw ioError("appending to the segment log", cause);
    }
    this.activeSize += bytes;
  }

  /** Seals the active segment and starts the next one (the seal timer; never during a batch). */
  roll(): void {
    this.checkOpen();
    assert(!this.writing, "roll must not overlap a batch write");
    this.rollActive();
  }

  private rollActive(): void {
    const sealedId = this.activeId;
    const sealedBytes = this.activeSize;
    fs.fsyncSync(this.activeFd);
    fs.closeSync(this.activeFd);
    const next = sealedId + 1;
    createSegmentFile(this.dir, next);
    this.activeFd = fs.openSync(segmentPath(this.dir, next), "r+");
    this.activeId = next;
    this.activeSize = SEGMENT_HEADER_BYTES;
    this.dirtySince = undefined;
    this.events.onSealed?.(sealedId, sealedBytes);
    this.events.onCreated?.(next);
  }

  /** Reads and verifies the record at `ptr`; returns its body. */
  readBody(ptr: Pointer): Buffer {
    return this.readBodies(ptr.seg, [ptr])[0]!;
  }

  /**
   * Reads records that lie back to back in segment `seg` (each pointer starts where the previous
   * one ends; see `adjacentRun`) with one read, and verifies each as `readBody` does. The bodies
   * share one buffer.
   */
  readBodies(seg: number, ptrs: readonly Pointer[]): Buffer[] {
    this.checkOpen();
    const first = ptrs[0]!.off;
    const last = ptrs[ptrs.length - 1]!;
    const bytes = last.off + last.len - first;
    const buf = Buffer.allocUnsafe(bytes);
    const fd = this.readFd(seg);
    let n: number;
    try {
      n = fs.readSync(fd, buf, 0, bytes, first);
    } catch (cause) {
      throw ioError(`reading segment ${seg}`, cause);
    }
    let at = 0;
    return ptrs.map((ptr) => {
      assert(ptr.seg === seg && ptr.off === first + at, "records read together lie back to back");
      const end = at + ptr.len;
      const parsed = end <= n ? parseFrame(buf, at, this.limits.recordBytesMax) : undefined;
      if (parsed === undefined || parsed.kind !== "ok" || parsed.next !== end) {
        const why = parsed === undefined ? `short read (${Math.max(0, n - at)} of ${ptr.len} bytes)` : parsed.kind === "corrupt" ? parsed.reason : "frame length mismatch";
        throw new StrataError("CORRUPT", `record at segment ${seg} offset ${ptr.off} failed verification: ${why}. Run \`strata reindex\` or restore the segment.`);
      }
      at = end;
      return parsed.body;
    });
  }

  private readFd(seg: number): number {
    let fd = this.readFds.get(seg);
    if (fd !== undefined) {
      // Move to the back: the map's order is least-recently-used first.
      this.readFds.delete(seg);
      this.readFds.set(seg, fd);
      return fd;
    }
    try {
      fd = fs.openSync(segmentPath(this.dir, seg), "r");
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "ENOENT") {
        throw new StrataError("CORRUPT", `segment ${seg} is referenced by the index but missing on disk; run \`strata reindex\` or restore it`);
      }
      throw ioError(`opening segment ${seg}`, cause);
    }
    this.readFds.set(seg, fd);
    while (this.readFds.size > this.limits.openSegmentsMax) {
      const [oldest, oldFd] = this.readFds.entries().next().value as [number, number];
      fs.closeSync(oldFd);
      this.readFds.delete(oldest);
    }
    return fd;
  }

  /** Closes a cached read descriptor, e.g. before a segment file is removed or replaced. */
  forget(seg: number): void {
    const fd = this.readFds.get(seg);
    if (fd !== undefined) {
      fs.closeSync(fd);
      this.readFds.delete(seg);
    }
  }

  async close(): Promise<void> {
    if (this.syncTimer) clearInterval(this.syncTimer);
    if (this.closed) {
      this.closeFds();
      return;
    }
    this.closed = true;
    try {
      fs.fsyncSync(this.activeFd);
    } finally {
      this.closeFds();
    }
  }

  private closeFds(): void {
    try {
      fs.closeSync(this.activeFd);
    } catch {
      // Already closed after a failed append.
    }
    for (const fd of this.readFds.values()) fs.closeSync(fd);
    this.readFds.clear();
  }

  private checkOpen(): void {
    if (this.closed) throw new StrataError("CLOSED", "the segment log is closed (store closed, or a write failed); reopen the store");
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

/** Creates an empty segment (header only), durable, including its directory entry. */
export function createSegmentFile(dir: string, id: number): void {
  const file = segmentPath(dir, id);
  const fd = fs.openSync(file, "wx");
  try {
    fs.writeSync(fd, segmentHeader(id), 0, SEGMENT_HEADER_BYTES, 0);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fsyncDir(dir);
}

/** Reads a whole segment file and checks its header; used by recovery and reindex. */
export function readSegmentFile(dir: string, id: number): Buffer {
  const buf = fs.readFileSync(segmentPath(dir, id));
  checkSegmentHeader(id, buf);
  return buf;
}
