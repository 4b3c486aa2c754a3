/**
 * Names and headers of segment files. A segment is `segments/<id as 16 hex digits>.seg` and starts
 * with a 16-byte header (magic, segment id, CRC of both) so a file that was renamed, copied to the
 * wrong place or overwritten is recognised before any record in it is trusted. Compaction outputs
 * (ids from 2^31 on, ./segment-set.ts) are segment files like any other.
 */
import { crc32 } from "node:zlib";
import fs from "node:fs";
import path from "node:path";
import { StrataError } from "../errors.js";

export const SEGMENT_HEADER_BYTES = 16;
const MAGIC = Buffer.from("STRATSEG", "latin1");
const NAME = /^([0-9a-f]{16})\.seg$/;

export function segmentFileName(id: number): string {
  return `${id.toString(16).padStart(16, "0")}.seg`;
}

export function segmentPath(dir: string, id: number): string {
  return path.join(dir, segmentFileName(id));
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
