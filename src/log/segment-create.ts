/**
 * Creating segment files durably: header written and fsync'd, directory entry fsync'd, all
 * through the `FileIo` seam so fault injection reaches it too. A segment made this way is plain
 * (no zero tail); the log prefers a prepared one (./segment-prepare.ts) and makes a plain one only
 * when none is ready. Also sealing: cutting a segment's zero tail, durably, once it stops taking
 * appends.
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

/** `createSegmentFile` off the event loop (no replace); resolves to a descriptor open for appending. */
export async function createSegmentFileAsync(dir: string, id: number, io: FileIo): Promise<number> {
  const file = segmentPath(dir, id);
  const fd = await io.open(file, "wx");
  try {
    const header = segmentHeader(id);
    let done = 0;
    while (done < SEGMENT_HEADER_BYTES) done += await io.write(fd, header, done, SEGMENT_HEADER_BYTES - done, done);
    await io.fsync(fd);
  } finally {
    await io.close(fd);
  }
  await fsyncDirAsync(dir, io);
  return io.open(file, "r+");
}

/** fsync a directory through `io`, off the event loop. */
export async function fsyncDirAsync(dir: string, io: FileIo): Promise<void> {
  const fd = await io.open(dir, "r");
  try {
    await io.fsync(fd);
  } finally {
    await io.close(fd);
  }
}

/**
 * Seals a segment that stopped taking appends: its zero tail (the file holds `fileBytes`, its
 * records end at `bytes`) is cut and the file fsync'd, so that its size is where its records end
 * before the tier ships it or anything else trusts its size. Does not close `fd`.
 */
export async function sealSegmentFile(io: FileIo, fd: number, bytes: number, fileBytes: number): Promise<void> {
  if (fileBytes > bytes) await io.ftruncate(fd, bytes);
  await io.fsync(fd);
}

/** `sealSegmentFile` on the event loop (for the repair path, which is synchronous). */
export function sealSegmentFileSync(io: FileIo, fd: number, bytes: number, fileBytes: number): void {
  if (fileBytes > bytes) io.ftruncateSync(fd, bytes);
  io.fsyncSync(fd);
}
