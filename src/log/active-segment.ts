/**
 * The active segment of the log (./segment-log.ts): the one file taking appends, its descriptor,
 * where the next record goes (`size`), how far the file reaches (`fileBytes`), and whether what
 * was written is fdatasync'd yet. The log decides when to roll, seal and repair; this file owns
 * the writing and syncing of the file itself.
 *
 * Invariants:
 * - Appends overwrite zeros: past `size` a prepared file (./segment-prepare.ts) holds zeros up to
 *   `fileBytes`; a plain one (no zeros ahead) has `fileBytes <= size` and grows with each append.
 * - No allocation proportional to a batch: frames go to the file with one writev (a short write's
 *   rest is written after it, still without copying the frames).
 * - A failed fdatasync throws `FsyncFailed`, told apart from a failed write: the log must then
 *   leave the file behind, since its page-cache state is unknown ("fsyncgate").
 * - `unsynced` is set exactly while written bytes are not fdatasync'd (fsync mode "interval").
 * - `size` moves only after the bytes are written (and, when asked, fdatasync'd), so a failed
 *   append leaves it at the end of the last record written in full.
 * - All file access goes through a `FileIo` (./file-io.ts), the seam for fault injection.
 */
import type { Limits } from "../limits.js";
import type { FileIo } from "./file-io.js";
import { createSegmentFile } from "./segment-create.js";
import { SEGMENT_HEADER_BYTES, segmentPath } from "./segment-files.js";
import type { TakenSegment } from "./segment-prepare.js";
import type { Unsealed } from "./segment-seals.js";

/** A failed fdatasync, told apart from a failed write: the file must then be left behind. */
export class FsyncFailed extends Error {
  constructor(override readonly cause: unknown) {
    super("fdatasync failed");
  }
}

export class ActiveSegment {
  fd: number | undefined;
  /** Size of the active segment's file: past `size` it holds zeros (its zero tail). */
  fileBytes: number;
  /** Bytes were written and not fdatasync'd yet (fsync mode "interval"). */
  unsynced = false;
  /** Number of fdatasync calls made so far (measured by the benchmark). */
  fsyncCount = 0;
  /** When the active segment first took a record (performance.now()), undefined while it is empty. */
  dirtySince: number | undefined;

  constructor(
    private readonly dir: string,
    private readonly limits: Limits,
    private readonly io: FileIo,
    public id: number,
    public size: number,
  ) {
    this.fd = io.openSync(segmentPath(dir, id), "r+");
    this.fileBytes = Math.max(size, io.fstatSync(this.fd).size);
  }

  /** Plain: no zeros ahead of `size` (each append grows the file). */
  get plain(): boolean {
    return this.fileBytes <= this.size;
  }

  /** The fdatasync of fsync mode "interval", in the background; a failure marks it to be redone. */
  syncInBackground(): void {
    if (!this.unsynced || this.fd === undefined) return;
    this.unsynced = false;
    this.io.fdatasync(this.fd).then(
      () => void this.fsyncCount++,
      // Acknowledged in "interval" mode already (a process crash keeps the page cache); try again.
      () => void (this.unsynced = true),
    );
  }

  /** Makes what is written durable before the segment is left (fdatasync; `FsyncFailed`). */
  async syncBeforeLeaving(): Promise<void> {
    if (!this.unsynced) return;
    try {
      await this.io.fdatasync(this.fd!);
    } catch (cause) {
      throw new FsyncFailed(cause);
    }
    this.unsynced = false;
  }

  /** The same, synchronously (the seal timer's roll and the repair's). */
  syncBeforeLeavingSync(): void {
    // At fsync "always" every record is durable already; at "interval" the rest is synced now.
    if (this.unsynced) this.io.fsyncSync(this.fd!);
    this.unsynced = false;
  }

  /** Takes `taken` as the active segment `next`; returns the one left behind, not sealed yet. */
  switchTo(next: number, taken: TakenSegment): Unsealed {
    const left: Unsealed = { id: this.id, bytes: this.size, fileBytes: this.fileBytes, fd: this.fd! };
    this.fd = taken.fd;
    this.fileBytes = taken.fileBytes;
    this.id = next;
    this.size = SEGMENT_HEADER_BYTES;
    this.dirtySince = undefined;
    return left;
  }

  /**
   * Writes `bytes` at the end of the active segment and, when `sync`, fdatasyncs it: in the thread
   * pool, or on the event loop when `inline` (a lone write; see `SegmentLog.writeBatch`). A failed
   * fdatasync throws `FsyncFailed`.
   */
  async append(frames: Buffer[], bytes: number, sync: boolean, inline = false): Promise<void> {
    if (bytes === 0) return;
    const fd = this.fd!;
    let done = 0;
    // A small batch is copied into the page cache at once (microseconds; a trip through the
    // thread pool costs more); a large one is written off the event loop. One writev, no copy
    // into a fresh buffer (first-touching fresh memory is slow, and it would be garbage at once).
    const small = bytes <= this.limits.syncWriteBytesMax;
    let bufs: Buffer[] = frames;
    while (done < bytes) {
      const n = small ? this.io.writevSync(fd, bufs, this.size + done) : await this.io.writev(fd, bufs, this.size + done);
      done += n;
      if (done < bytes) bufs = remainder(frames, done);
    }
    if (sync) {
      try {
        if (inline) this.io.fdatasyncSync(fd);
        else await this.io.fdatasync(fd);
      } catch (cause) {
        throw new FsyncFailed(cause);
      }
      this.fsyncCount++;
      this.unsynced = false;
    } else {
      this.unsynced = true;
    }
    this.dirtySince ??= performance.now();
    this.size += bytes;
    this.fileBytes = Math.max(this.fileBytes, this.size);
  }

  /** Closes the descriptor, if open (the repair reopens the segment it cuts back to). */
  closeFd(): void {
    if (this.fd === undefined) return;
    this.io.closeSync(this.fd);
    this.fd = undefined;
  }

  /**
   * Makes segment `seg` the active one, ending at `size`, durably (ftruncate + fsync); the
   * descriptor must be closed. On failure nothing changes and the file is closed again.
   */
  cutBackTo(seg: number, size: number): void {
    const fd = this.io.openSync(segmentPath(this.dir, seg), "r+");
    try {
      this.io.ftruncateSync(fd, size);
      this.io.fsyncSync(fd);
      this.unsynced = false;
    } catch (err) {
      this.io.closeSync(fd);
      throw err;
    }
    this.id = seg;
    this.size = size;
    this.fileBytes = size;
    this.fd = fd;
  }

  /** Replaces the (empty) active segment with a fresh file of the same id, atomically. */
  replaceWithFresh(): void {
    this.io.closeSync(this.fd!);
    this.fd = undefined;
    createSegmentFile(this.dir, this.id, this.io, true);
    this.fd = this.io.openSync(segmentPath(this.dir, this.id), "r+");
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
