/**
 * The prepared next segment: a file of real zeros (`segmentBytesMax` of them), written and made
 * durable in the background, before the active segment fills, so that the log's appends
 * overwrite blocks that already exist. Why: an append past the end of a file changes its size
 * (and allocates blocks), so its fdatasync must also commit that metadata through the file
 * system's journal (ext4: jbd2) and waits behind whatever else is journalling on the disk (LMDB,
 * JetStream); an overwrite's fdatasync flushes data only. fallocate would not do: its unwritten
 * extents need a journal commit on their first write too.
 *
 * Life of the file (names in ./segment-files.ts): zeroed as `prepared.tmp` (chunks of
 * `segmentPrepareWriteBytes`, each fdatasync'd so the disk never holds a large burst of them in
 * front of the appends' fdatasyncs, with a pause after each that keeps the disk busy with zeros
 * at most `segmentPrepareDutyPercent` of the time, unless the log says it needs the file soon),
 * fsync'd, renamed to `prepared.pre` and the directory
 * fsync'd: from then on the file is complete and durable under a name recovery knows. `take`
 * writes the segment header into it and renames it to the segment's name; no directory fsync is
 * needed before its records are acknowledged, because recovery (../recovery.ts) renames a
 * `prepared.pre` holding a valid header and records into place if the crash lost the rename.
 *
 * Invariants:
 * - At most one prepared file, whatever the segment ids: the header (the id) is written at `take`.
 * - Everything here runs off the event loop (FileIo's async calls) except `takeSync`, used by the
 *   seal timer's roll, which renames and writes 16 bytes.
 * - A failure (a full disk) leaves no prepared file and is retried no sooner than
 *   `segmentPrepareRetryMs` later; the log then makes a plain segment when a roll needs one.
 */
import fs from "node:fs";
import type { Limits } from "../limits.js";
import type { FileIo } from "./file-io.js";
import { fsyncDirAsync } from "./segment-create.js";
import { WakeableSleep } from "../wakeable-sleep.js";
import { SEGMENT_HEADER_BYTES, preparedPath, preparingPath, segmentHeader, segmentPath } from "./segment-files.js";

/** The longest pause between two steps of zeros (see `pause`). */
const PAUSE_MAX_MS = 1000;

/** Zero buffers by size, shared by every log of the process; only ever written from, never to. */
const zeroChunks = new Map<number, Buffer>();
function zeroChunk(bytes: number): Buffer {
  let b = zeroChunks.get(bytes);
  if (b === undefined) zeroChunks.set(bytes, (b = Buffer.alloc(bytes)));
  return b;
}

/** A prepared file taken as a segment: its descriptor (open for reading and writing) and size. */
export interface TakenSegment {
  fd: number;
  fileBytes: number;
}

export class SegmentPreparer {
  private fd: number | undefined;
  private fileBytes = 0;
  private work: Promise<void> | undefined;
  private failedAt = Number.NEGATIVE_INFINITY;
  private closed = false;
  /** Files prepared so far, and failed attempts (for tests and stats). */
  prepared = 0;
  failures = 0;
  lastError: unknown;

  /** The pause between two steps, which close ends early. */
  private readonly pauses = new WakeableSleep();

  /**
   * @param urgent whether the log needs the file soon (its active segment is plain or nearly
   *   full): the steps then follow each other without pauses
   */
  constructor(
    private readonly dir: string,
    private readonly limits: Limits,
    private readonly io: FileIo,
    private readonly urgent: () => boolean = () => false,
  ) {}

  /**
   * At open: adopts a complete prepared file left by the last run (recovery removed any that held
   * a header), removes a half-zeroed one.
   */
  adoptSync(): void {
    fs.rmSync(preparingPath(this.dir), { force: true });
    const file = preparedPath(this.dir);
    if (!fs.existsSync(file)) return;
    const fd = this.io.openSync(file, "r+");
    const head = Buffer.alloc(SEGMENT_HEADER_BYTES + 8);
    const n = this.io.readSync(fd, head, 0, head.byteLength, 0);
    const size = this.io.fstatSync(fd).size;
    if (n === head.byteLength && head.every((b) => b === 0) && size >= this.limits.segmentBytesMax) {
      this.fd = fd;
      this.fileBytes = size;
      return;
    }
    this.io.closeSync(fd);
    fs.rmSync(file, { force: true });
  }

  /** Whether a prepared file is ready to be taken. */
  get ready(): boolean {
    return this.fd !== undefined;
  }

  /** Starts preparing a file in the background, unless one is ready or under way. */
  start(): void {
    if (this.closed || this.fd !== undefined || this.work !== undefined) return;
    if (performance.now() - this.failedAt < this.limits.segmentPrepareRetryMs) return;
    this.work = this.prepare().then(
      () => {
        this.work = undefined;
        this.prepared++;
      },
      (err: unknown) => {
        this.work = undefined;
        this.failures++;
        this.lastError = err;
        this.failedAt = performance.now();
      },
    );
  }

  /** Resolves once no preparation is under way (whether it succeeded or not). */
  async settled(): Promise<void> {
    await this.work;
  }

  private async prepare(): Promise<void> {
    const tmp = preparingPath(this.dir);
    const fd = await this.io.open(tmp, "w+");
    try {
      const total = this.limits.segmentBytesMax;
      const chunk = zeroChunk(Math.min(this.limits.segmentPrepareWriteBytes, total));
      for (let off = 0; off < total; ) {
        if (this.closed) throw new Error("the log closed while a segment was being prepared");
        const n = Math.min(chunk.byteLength, total - off);
        const began = performance.now();
        let done = 0;
        while (done < n) done += await this.io.write(fd, chunk, done, n - done, off + done);
        await this.io.fdatasync(fd);
        off += n;
        if (off < total) await this.pause(performance.now() - began);
      }
      await this.io.fsync(fd);
      await this.io.rename(tmp, preparedPath(this.dir));
      await fsyncDirAsync(this.dir, this.io);
    } catch (err) {
      await this.io.close(fd).catch(() => undefined);
      await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
      await fs.promises.rm(preparedPath(this.dir), { force: true }).catch(() => undefined);
      throw err;
    }
    if (this.closed) {
      await this.io.close(fd).catch(() => undefined);
      return; // complete and durable: the next open adopts it
    }
    this.fd = fd;
    this.fileBytes = this.limits.segmentBytesMax;
  }

  /**
   * After a step that took `stepMs`, waits so that the steps take `segmentPrepareDutyPercent` of
   * the time; never longer than PAUSE_MAX_MS, so that a step slowed by a stalled disk does not
   * leave the log's need for the file unchecked for long.
   */
  private async pause(stepMs: number): Promise<void> {
    const duty = this.limits.segmentPrepareDutyPercent;
    if (duty >= 100 || this.closed || this.urgent()) return;
    const waitMs = Math.min(PAUSE_MAX_MS, (stepMs * (100 - duty)) / duty);
    if (waitMs >= 1) await this.pauses.sleep(waitMs);
  }

  /**
   * The prepared file as segment `id`: its header written and the file renamed to the segment's
   * name. Undefined when none is ready. On a failure the prepared file is given up (removed).
   */
  async take(id: number): Promise<TakenSegment | undefined> {
    const fd = this.fd;
    if (fd === undefined) return undefined;
    this.fd = undefined;
    try {
      const header = segmentHeader(id);
      let done = 0;
      while (done < SEGMENT_HEADER_BYTES) done += await this.io.write(fd, header, done, SEGMENT_HEADER_BYTES - done, done);
      await this.io.rename(preparedPath(this.dir), segmentPath(this.dir, id));
    } catch (err) {
      await this.io.close(fd).catch(() => undefined);
      await fs.promises.rm(preparedPath(this.dir), { force: true }).catch(() => undefined);
      throw err;
    }
    return { fd, fileBytes: this.fileBytes };
  }

  /** `take` on the event loop: 16 bytes into the page cache and a rename. */
  takeSync(id: number): TakenSegment | undefined {
    const fd = this.fd;
    if (fd === undefined) return undefined;
    this.fd = undefined;
    try {
      const header = segmentHeader(id);
      let done = 0;
      while (done < SEGMENT_HEADER_BYTES) done += this.io.writeSync(fd, header, done, SEGMENT_HEADER_BYTES - done, done);
      this.io.renameSync(preparedPath(this.dir), segmentPath(this.dir, id));
    } catch (err) {
      this.io.closeSync(fd);
      fs.rmSync(preparedPath(this.dir), { force: true });
      throw err;
    }
    return { fd, fileBytes: this.fileBytes };
  }

  /** Stops: waits for a preparation under way, keeps a complete file for the next open. */
  async close(): Promise<void> {
    this.closed = true;
    this.pauses.wake();
    await this.work;
    if (this.fd !== undefined) this.io.closeSync(this.fd);
    this.fd = undefined;
  }

  /** Synchronous close for a log that is abandoned (its descriptors only). */
  closeFdSync(): void {
    if (this.fd !== undefined) this.io.closeSync(this.fd);
    this.fd = undefined;
  }
}
