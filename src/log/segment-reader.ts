/**
 * The read side of the segment log: verified reads of records by pointer, through a bounded cache
 * of read-only descriptors (least recently used closed first, at `openSegmentsMax`). It shares
 * nothing with the append path, so a failed append never stops reads.
 */
import { LRUCache } from "lru-cache";
import { assert } from "../assert.js";
import { StrataError, ioError } from "../errors.js";
import type { Limits } from "../limits.js";
import type { FileIo } from "./file-io.js";
import { parseFrame } from "./framing.js";
import type { Pointer } from "./record.js";
import { segmentPath } from "./segment-files.js";

export class SegmentReader {
  /** Read descriptors by segment; one dropped from the cache (least recently used, or forgotten) is closed. */
  private readonly readFds: LRUCache<number, number>;

  constructor(
    private readonly dir: string,
    private readonly limits: Limits,
    private readonly io: FileIo,
  ) {
    this.readFds = new LRUCache({ max: limits.openSegmentsMax, dispose: (fd) => this.io.closeSync(fd) });
  }

  /**
   * Reads records that lie back to back in segment `seg` (each pointer starts where the previous
   * one ends; see `adjacentRun`) with one read, and verifies each as `readBody` does. The bodies
   * share one buffer.
   */
  readBodies(seg: number, ptrs: readonly Pointer[]): Buffer[] {
    const first = ptrs[0]!.off;
    const last = ptrs[ptrs.length - 1]!;
    const bytes = last.off + last.len - first;
    const buf = Buffer.allocUnsafe(bytes);
    const fd = this.readFd(seg);
    let n: number;
    try {
      n = this.io.readSync(fd, buf, 0, bytes, first);
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
    if (fd !== undefined) return fd;
    try {
      fd = this.io.openSync(segmentPath(this.dir, seg), "r");
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "ENOENT") {
        throw new StrataError("CORRUPT", `segment ${seg} is referenced by the index but missing on disk; run \`strata reindex\` or restore it`);
      }
      throw ioError(`opening segment ${seg}`, cause);
    }
    this.readFds.set(seg, fd);
    return fd;
  }

  /** Closes a cached read descriptor, e.g. before a segment file is removed or replaced. */
  forget(seg: number): void {
    this.readFds.delete(seg);
  }

  close(): void {
    this.readFds.clear();
  }
}
