/**
 * Where the records of a local segment file end, for readers that only look (`strata stat`): the
 * active segment may be a pre-zeroed file (./segment-prepare.ts) whose size says nothing about its
 * records. Reads the file up to ./segment-files.ts `segmentReadBound` (never the whole zero tail)
 * and walks it as replay does (./frame-scan.ts `recordsEnd`). A file without a zero tail ends at
 * its size.
 */
import fs from "node:fs";
import { recordsEnd } from "./frame-scan.js";
import { SEGMENT_HEADER_BYTES, segmentReadBound } from "./segment-files.js";

/** Generous: only plausibility of lengths and the padding after the last non-zero byte depend on it. */
const BODY_BYTES_MAX = 1 << 30;

export function segmentRecordsEnd(file: string, recordBytesMax = 16 << 20): number {
  const fd = fs.openSync(file, "r");
  try {
    const size = fs.fstatSync(fd).size;
    if (size <= SEGMENT_HEADER_BYTES) return size;
    const last = Buffer.alloc(1);
    if (fs.readSync(fd, last, 0, 1, size - 1) === 1 && last[0] !== 0) return size;
    const { end, zeroTail } = readRecordsEnd(fd, size, recordBytesMax, BODY_BYTES_MAX);
    return zeroTail ? end : size;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Where the records of the open segment `fd` (of `size` bytes) end, and whether only zeros follow
 * them: reads it up to `segmentReadBound` (never the whole zero tail) and walks it with
 * ./frame-scan.ts `recordsEnd` (`bodyBytesMax` bounds a plausible frame length).
 */
export function readRecordsEnd(fd: number, size: number, recordBytesMax: number, bodyBytesMax: number): { end: number; zeroTail: boolean } {
  const bound = segmentReadBound(fd, size, recordBytesMax);
  const buf = Buffer.allocUnsafe(bound);
  const got = fs.readSync(fd, buf, 0, bound, 0);
  return recordsEnd(buf.subarray(0, got), SEGMENT_HEADER_BYTES, bodyBytesMax);
}
