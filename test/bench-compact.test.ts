/**
 * Keeps the compaction benchmark from rotting: runs it at tiny scale (scaled down further) and
 * checks the JSON document's shape, that every figure is positive and finite, and that compaction
 * really gave space back (fewer bytes after than before, on disk and in the object store; the
 * benchmark itself checks that every key still reads its last value). No timing thresholds: the
 * numbers of a tiny run on a shared machine mean nothing.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runCompactBench, type CompactBenchResult } from "../bench/compact.js";
import { parseSuites } from "../src/cli/bench.js";
import { resolveLimits } from "../src/limits.js";
import { expectFigure, expectPositive, expectTinyDocument } from "./helpers/bench-doc.js";

function expectAck(ack: CompactBenchResult["figures"]["online"]["withoutCompaction"]["ack"], where: string): void {
  expect(ack.unit).toBe("us");
  for (const k of ["p50", "p99", "p999", "max"] as const) expectPositive(ack[k], `${where}.${k}`);
  expect(ack.p50).toBeLessThanOrEqual(ack.p99);
  expect(ack.p99).toBeLessThanOrEqual(ack.p999);
}

function expectCompactDocument(doc: CompactBenchResult): void {
  expectTinyDocument(doc, "compact", ["localAfterPerLive", "objectAfterPerLive", "throughputDuringCompaction", "ackP999DuringCompactionMs"]);
  expect(doc.backend).toMatch(/dir:/);
  const s = doc.figures.space;
  for (const [name, f] of Object.entries(s)) expectFigure(f, 1, `space.${name}`);
  // Space came back, locally and in the object store, and what is left is close to what is live.
  expect(s.localBytesAfter.median).toBeLessThan(s.localBytesBefore.median);
  expect(s.objectBytesAfter.median).toBeLessThan(s.objectBytesBefore.median);
  expect(s.segmentsAfter.median).toBeLessThan(s.segmentsBefore.median);
  expect(s.liveBytes.median).toBe(doc.params.keys * doc.params.valueBytes);
  expect(s.droppedRecords.median).toBe(doc.params.keys * (doc.params.overwrites - 1));
  expect(s.localBytesBefore.median / s.liveBytes.median).toBeGreaterThan(doc.params.overwrites / 2);

  const o = doc.figures.online;
  expectFigure(o.withoutCompaction.writesPerSec, 1, "online.withoutCompaction.writesPerSec");
  expectFigure(o.duringCompaction.writesPerSec, 1, "online.duringCompaction.writesPerSec");
  expectFigure(o.throughputRatio, 1, "online.throughputRatio");
  expectFigure(o.compactSeconds, 1, "online.compactSeconds");
  expectAck(o.withoutCompaction.ack, "online.withoutCompaction.ack");
  expectAck(o.duringCompaction.ack, "online.duringCompaction.ack");
  expect(o.compactRateBytesPerSec).toBe(resolveLimits({}).compactRateBytesPerSec); // the default, as a server runs it
}

describe("compaction benchmark (tiny)", () => {
  const scratch: string[] = [];
  afterEach(() => {
    for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  it("produces a complete document of positive, finite figures, gives space back, and cleans up after itself", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-bench-compact-test-"));
    scratch.push(dir);
    const progress: string[] = [];
    const doc = await runCompactBench({ scale: "tiny", runs: 1, dir, progress: (line) => progress.push(line) });
    expectCompactDocument(doc);
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
    expect(progress.some((line) => line.startsWith("load during"))).toBe(true);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it("is a suite of `strata bench`, and refuses bad options at the edge", async () => {
    expect(parseSuites("compact")).toEqual(["compact"]);
    expect(parseSuites("all")).toContain("compact");
    await expect(runCompactBench({ scale: "tiny", runs: 0 })).rejects.toThrow(/positive integer/);
    await expect(runCompactBench({ scale: "huge" as "tiny", runs: 1 })).rejects.toThrow(/scale/);
    await expect(runCompactBench({ scale: "tiny", runs: 1, keys: 0 })).rejects.toThrow(/keys must be a positive integer/);
  });
});
