/**
 * Creating segment files durably: header written and fsync'd, directory entry fsync'd, all
 * through the `FileIo` seam so fault injection reaches it too.
 */
import fs from "node:fs";
import type { FileIo } from "./file-io.js";
import { nodeFileIo } from "./file-io.js";
import { SEGMENT_HEADER_BYTES, segmentHeader, segmentPath } from "./segment-files.js";

/**
 * Creates an empty segment (header only), durable, including its directory entry. With
 * `replace`, an existing file of that id is atomically replaced (written aside, then renamed).
 */
export function createSegmentFile(dir: string, id: number, io: FileIo = nodeFileIo, replace = false): void {
  const file = segmentPath(dir, id);
  const target = replace ? `${file}.new` : file;
  const fd = io.openSync(target, replace ? "w" : "wx");
  try {
    const header = segmentHeader(id);
    let done = 0;
    while (done < SEGMENT_HEADER_BYTES) done += io.writeSync(fd, header, done, SEGMENT_HEADER_BYTES - done, done);
    io.fsyncSync(fd);
  } finally {
    io.closeSync(fd);
  }
  if (replace) fs.renameSync(target, file);
  fsyncDirIo(dir, io);
}

/** fsync a directory through `io` (see segment-files.ts `fsyncDir`). */
export function fsyncDirIo(dir: string, io: FileIo): void {
  const fd = io.openSync(dir, "r");
  try {
    io.fsyncSync(fd);
  } finally {
    io.closeSync(fd);
  }
}
