/**
 * Sealing and unsealing a large segment never hold the event loop for more than about a slice
 * (~1 MiB of compression, copying or decompression): issue #11, compaction's output upload and a
 * compaction reading an evicted input. No wall-clock thresholds: the turns the event loop gets
 * while the work runs are counted (nothing else runs meanwhile, so the count is deterministic).
 * Pinned failures: the sealed object was assembled with one Buffer.concat at the end (130–370 ms
 * for 64 MiB on the development VM), and a compaction unsealed an evicted input in one call.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { frame } from "../../src/log/framing.js";
import { encodeRecord } from "../../src/log/record.js";
import { segmentHeader } from "../../src/log/segment-files.js";
import { sealSegment, sealSegmentAsync, unsealSegment, unsealSegmentAsync } from "../../src/tier/sealed-segment.js";
import { turnsDuring } from "../helpers/turns.js";

const MiB = 1024 * 1024;
const BLOCK_BYTES = 64 * 1024;
/** What one slice may overrun by: a whole block (or a compressed block, a little larger). */
const SLICE_BYTES = MiB + 2 * BLOCK_BYTES;

/** A raw segment of ~`mib` MiB of incompressible records (so the sealed object is as large). */
function rawSegment(seg: number, mib: number): Buffer {
  const parts = [segmentHeader(seg)];
  for (let seq = 1; seq <= mib * 256; seq++) parts.push(frame(encodeRecord({ t: "sset", loc: "acct/seal/slices", seq, rev: seq, ts: 1, value: randomBytes(4000), size: 4000 })));
  return Buffer.concat(parts);
}

describe("sealing in slices", () => {
  const raw = rawSegment(7, 8);

  it("gives the event loop a turn per ~1 MiB compressed and per ~1 MiB of the object assembled", async () => {
    const { value: sealed, turns } = await turnsDuring(() => sealSegmentAsync(7, raw, BLOCK_BYTES, 32_768));
    expect(sealed.byteLength).toBeGreaterThan(raw.byteLength); // incompressible: the copy is as large as the input
    // Compressing the raw bytes and copying the sealed ones, at most a slice of each per turn.
    expect(turns).toBeGreaterThanOrEqual(Math.floor(raw.byteLength / SLICE_BYTES) + Math.floor(sealed.byteLength / SLICE_BYTES) - 2);
    expect(sealed.equals(sealSegment(7, raw, BLOCK_BYTES, 32_768))).toBe(true);
  });

  it("unseals asynchronously to the same bytes, a turn per ~1 MiB decompressed, and refuses a damaged object alike", async () => {
    const sealed = sealSegment(7, raw, BLOCK_BYTES, 32_768);
    const { value: back, turns } = await turnsDuring(() => unsealSegmentAsync(7, sealed));
    expect(back.equals(raw)).toBe(true);
    expect(turns).toBeGreaterThanOrEqual(Math.floor(raw.byteLength / SLICE_BYTES) - 1);
    expect(unsealSegment(7, sealed).equals(raw)).toBe(true);

    const damaged = Buffer.from(sealed);
    damaged[sealed.byteLength >> 1]! ^= 0xff; // inside a block: its CRC fails
    const sync = (() => {
      try {
        unsealSegment(7, damaged);
      } catch (err) {
        return err;
      }
    })();
    expect(StrataError.is(sync, "CORRUPT")).toBe(true);
    const async = await unsealSegmentAsync(7, damaged).catch((err: unknown) => err);
    expect(StrataError.is(async, "CORRUPT")).toBe(true);
    expect((async as Error).message).toBe((sync as Error).message);
    await expect(unsealSegmentAsync(8, sealed)).rejects.toThrow(/names another segment/);
  });
});
