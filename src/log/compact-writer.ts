/**
 * The output file of one compaction (docs/compaction.md, step 2): kept record frames appended in
 * log order to `segments/<id>.seg.tmp`, then fsync, rename to `<id>.seg`, fsync of the directory.
 *
 * Invariants:
 * - The output is a segment file like any other (the same header, the same framing: frames are
 *   copied byte for byte, or built with ./framing.ts `frame` for a rewritten set record), so every
 *   reader of segments (recovery, sealing, the record reader) reads it unchanged.
 * - `<id>.seg` exists only once every byte of it is durable: a crash before the rename leaves a
 *   `.seg.tmp` (removed at open, ../open-segments.ts), a crash after it an output without a marker
 *   (an orphan, deleted at open). Nothing ever appends to an output after `finish`.
 * - Memory is bounded by `flushBytes` of buffered frames; writes go through the thread pool.
 * - A dry run (`counting`) computes the same pointers and size and writes nothing.
 */
import fs from "node:fs";
import { assert } from "../assert.js";
import type { Pointer } from "./record.js";
import { SEGMENT_HEADER_BYTES, fsyncDir, segmentHeader, segmentPath } from "./segment-files.js";

/** Buffered frame bytes written with one write. */
const FLUSH_BYTES = 1024 * 1024;

export function outputTmpPath(dir: string, id: number): string {
  return `${segmentPath(dir, id)}.tmp`;
}

export class OutputWriter {
  private fd: number | undefined;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes already written to the file. */
  private written = 0;
  private done = false;

  private constructor(
    private readonly dir: string,
    readonly id: number,
    private readonly counting: boolean,
  ) {}

  /** Starts output `id` (replacing a stale `.tmp` of it); `counting`: a dry run that writes nothing. */
  static create(dir: string, id: number, counting = false): OutputWriter {
    const w = new OutputWriter(dir, id, counting);
    if (!counting) {
      w.fd = fs.openSync(outputTmpPath(dir, id), "w");
      const header = segmentHeader(id);
      fs.writeSync(w.fd, header, 0, header.byteLength, 0);
    }
    w.written = SEGMENT_HEADER_BYTES;
    return w;
  }

  /** Size of the output so far (header included). */
  get size(): number {
    return this.written + this.pendingBytes;
  }

  /** Appends one whole frame; returns where it lies in the output. */
  append(frameBytes: Buffer): Pointer {
    assert(!this.done, "no append to a finished output");
    const ptr = { seg: this.id, off: this.size, len: frameBytes.byteLength };
    if (!this.counting) this.pending.push(frameBytes);
    this.pendingBytes += frameBytes.byteLength;
    return ptr;
  }

  /** Whether enough is buffered that `flush` should be called (between slices). */
  get full(): boolean {
    return this.pendingBytes >= FLUSH_BYTES;
  }

  /** Writes what is buffered (off the event loop). */
  async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const bytes = this.pendingBytes;
    if (!this.counting) {
      const buf = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, bytes);
      this.pending = [];
      let done = 0;
      while (done < bytes) {
        const { bytesWritten } = await writeAt(this.fd!, buf, done, bytes - done, this.written + done);
        done += bytesWritten;
      }
    }
    this.written += bytes;
    this.pendingBytes = 0;
  }

  /** Makes the output durable under its final name; returns its size. */
  async finish(): Promise<number> {
    await this.flush();
    this.done = true;
    if (this.counting) return this.written;
    const fd = this.fd!;
    this.fd = undefined;
    try {
      await new Promise<void>((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(outputTmpPath(this.dir, this.id), segmentPath(this.dir, this.id));
    fsyncDir(this.dir);
    return this.written;
  }

  /** Gives up: closes and removes the `.tmp` (a finished output is the caller's to remove). */
  abort(): void {
    this.done = true;
    this.pending = [];
    if (this.fd !== undefined) {
      fs.closeSync(this.fd);
      this.fd = undefined;
    }
    if (!this.counting) fs.rmSync(outputTmpPath(this.dir, this.id), { force: true });
  }
}

function writeAt(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }> {
  return new Promise((resolve, reject) => fs.write(fd, buf, offset, length, position, (err, bytesWritten) => (err ? reject(err) : resolve({ bytesWritten }))));
}
