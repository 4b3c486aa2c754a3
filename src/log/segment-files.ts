/**
 * Names and headers of segment files. A segment is `segments/<id as 16 hex digits>.seg` and starts
 * with a 16-byte header (magic, segment id, CRC of both) so a file that was renamed, copied to the
 * wrong place or overwritten is recognised before any record in it is trusted. Compaction outputs
 * (ids from 2^31 on, ./segment-set.ts) are segment files like any other.
 *
 * The active segment may be longer than its records: a segment made from a prepared file
 * (./segment-prepare.ts) ends in a zero tail, real zeros written and made durable before it took
 * a record, which the appends overwrite. The log ends where a zero frame header is followed by
 * nothing but zeros (./frame-scan.ts `zeroTailAt`). A sealed segment has no zero tail: it is cut
 * at its last record when sealed (./segment-log.ts), or at the next open after a crash
 * (../recovery.ts). Besides segments the directory may hold the prepared file, `prepared.tmp`
 * while it is being zeroed and `prepared.pre` once it is complete; neither is a segment.
 */
import { crc32 } from "node:zlib";
import fs from "node:fs";
import path from "node:path";
import { StrataError } from "../errors.js";
import { FRAME_HEADER_BYTES } from "./framing.js";

export const SEGMENT_HEADER_BYTES = 16;
const MAGIC = Buffer.from("STRATSEG", "latin1");
const NAME = /^([0-9a-f]{16})\.seg$/;

export function segmentFileName(id: number): string {
  return `${id.toString(16).padStart(16, "0")}.seg`;
}

export function segmentPath(dir: string, id: number): string {
  return path.join(dir, segmentFileName(id));
}

/** The prepared next segment file while it is being zeroed (removed at open when found). */
export function preparingPath(dir: string): string {
  return path.join(dir, "prepared.tmp");
}

/** The prepared next segment file once it is zeroed and durable (see the file comment). */
export function preparedPath(dir: string): string {
  return path.join(dir, "prepared.pre");
}

/**
 * Ids of the segment files in `dir`, ascending: normal segments and compaction outputs alike (tell
 * them apart with ./segment-set.ts `isCompacted`; nothing may take "the last id" of this list as
 * the active segment). Other files are ignored: compaction markers (`.cmp`), a compaction's
 * unfinished output (`.seg.tmp`), anything else.
 */
export function listSegmentIds(dir: string): number[] {
  const ids: number[] = [];
  for (const name of fs.readdirSync(dir)) {
    const m = NAME.exec(name);
    if (m) ids.push(Number.parseInt(m[1]!, 16));
  }
  return ids.sort((a, b) => a - b);
}

export function segmentHeader(id: number): Buffer {
  const h = Buffer.alloc(SEGMENT_HEADER_BYTES);
  MAGIC.copy(h, 0);
  h.writeUInt32BE(id, 8);
  h.writeUInt32BE(crc32(h.subarray(0, 12)), 12);
  return h;
}

export function checkSegmentHeader(id: number, headerUntrusted: Buffer): void {
  const ok =
    headerUntrusted.byteLength >= SEGMENT_HEADER_BYTES &&
    headerUntrusted.subarray(0, 8).equals(MAGIC) &&
    headerUntrusted.readUInt32BE(8) === id &&
    headerUntrusted.readUInt32BE(12) === crc32(headerUntrusted.subarray(0, 12));
  if (!ok) {
    throw new StrataError(
      "CORRUPT",
      `segment ${segmentFileName(id)} has a bad header (not a Strata segment, or damaged); move it away or restore it from the object store`,
    );
  }
}

/** fsync a directory so a created, renamed or removed entry in it survives a crash. */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * How many bytes of a segment file of `size` bytes (open as `fd`) a reader must read to see all of
 * its records: up to its last non-zero byte plus one whole record (the last record may end in zero
 * bytes), so a long zero tail is neither read nor held in memory. The file is read backwards from
 * its end in `chunkBytes` pieces (one reused buffer) until a non-zero byte.
 */
export function segmentReadBound(fd: number, size: number, recordBytesMax: number, chunkBytes = 64 * 1024): number {
  const buf = Buffer.allocUnsafe(Math.min(chunkBytes, Math.max(1, size)));
  let end = size;
  while (end > 0) {
    const start = Math.max(0, end - buf.byteLength);
    const n = fs.readSync(fd, buf, 0, end - start, start);
    for (let i = n - 1; i >= 0; i--) {
      if (buf[i] !== 0) return Math.min(size, start + i + 1 + recordBytesMax + FRAME_HEADER_BYTES);
    }
    if (n < end - start) break; // the file shrank meanwhile: read as far as it goes
    end = start;
  }
  return Math.min(size, SEGMENT_HEADER_BYTES + recordBytesMax + FRAME_HEADER_BYTES);
}
