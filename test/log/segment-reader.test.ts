/**
 * The segment reader's descriptor cache (src/log/segment-reader.ts): at most `openSegmentsMax`
 * read descriptors are open whatever is read, the least recently used one is closed first, and
 * `forget` / `close` close theirs. Counted from the process's own open files (/proc/self/fd).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { resolveLimits } from "../../src/limits.js";
import { nodeFileIo } from "../../src/log/file-io.js";
import { frame } from "../../src/log/framing.js";
import { SEGMENT_HEADER_BYTES, segmentHeader, segmentPath } from "../../src/log/segment-files.js";
import { SegmentReader } from "../../src/log/segment-reader.js";

let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-reader-"));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Segment ids whose files this process has open now. */
function openSegments(): number[] {
  const ids: number[] = [];
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // closed meanwhile (the readdir's own descriptor)
    }
    for (let id = 1; id <= 6; id++) if (target === segmentPath(dir, id)) ids.push(id);
  }
  return ids.sort((a, b) => a - b);
}

describe("the segment reader's descriptors", () => {
  it("keeps at most openSegmentsMax open, closes the least recently used first, and closes on forget and close", () => {
    const body = Buffer.from("record");
    for (let id = 1; id <= 6; id++) fs.writeFileSync(segmentPath(dir, id), Buffer.concat([segmentHeader(id), frame(body)]));
    const reader = new SegmentReader(dir, resolveLimits({ openSegmentsMax: 3 }), nodeFileIo);
    const read = (seg: number) => reader.readBodies(seg, [{ seg, off: SEGMENT_HEADER_BYTES, len: frame(body).byteLength }])[0]!.toString();
    for (let seg = 1; seg <= 6; seg++) expect(read(seg)).toBe("record");
    expect(openSegments()).toEqual([4, 5, 6]);
    read(4); // now the most recently used: 5 goes first
    read(1);
    expect(openSegments()).toEqual([1, 4, 6]);
    reader.forget(4);
    expect(openSegments()).toEqual([1, 6]);
    reader.close();
    expect(openSegments()).toEqual([]);
  });
});
