/**
 * Keeps the tier benchmark from rotting: runs it at tiny scale (against a real s3rver it starts
 * itself) and checks the JSON document's shape, that every figure is positive and finite, and that
 * the restores it timed really restored (the benchmark checks every message count itself). No
 * timing thresholds: the numbers of a tiny run on a shared machine mean nothing.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runTierBench, type TierBenchResult } from "../bench/tier.js";
import { parseSuites } from "../src/cli/bench.js";
import { expectFigure, expectLatency, expectPositive, expectTinyDocument } from "./helpers/bench-doc.js";




function expectTierDocument(doc: TierBenchResult): void {
  expectTinyDocument(doc, "tier", ["coldReadP99Ms"]);
  expect(doc.backend).toMatch(/s3rver/);

  const f = doc.figures;
  expectLatency(f.coldRead.afterReopen, "coldRead.afterReopen");
  expectLatency(f.coldRead.footerCached, "coldRead.footerCached");
  expectLatency(f.coldRead.fullyCold, "coldRead.fullyCold");
  expect(f.coldRead.reads).toBe(doc.params.coldReads);
  expect(f.coldRead.dataBytes).toBe(doc.params.sizesBytes[doc.params.sizesBytes.length - 1]);

  // One upload figure per size and run.
  expectFigure(f.upload.sealedMBps, doc.params.sizesBytes.length, "upload.sealedMBps");
  expectFigure(f.upload.rawMBps, doc.params.sizesBytes.length, "upload.rawMBps");
  expectFigure(f.upload.sealedPerRawByte, doc.params.sizesBytes.length, "upload.sealedPerRawByte");
  // Values are incompressible: a sealed segment is about as large as the raw one.
  expect(f.upload.sealedPerRawByte.median).toBeGreaterThan(0.9);

  expect(f.restore.points.map((p) => p.dataBytes)).toEqual(doc.params.sizesBytes);
  let segments = 0;
  for (const [i, p] of f.restore.points.entries()) {
    expectFigure(p.withCheckpointSeconds, 1, `restore.points[${i}].withCheckpointSeconds`);
    expectFigure(p.fullReplaySeconds, 1, `restore.points[${i}].fullReplaySeconds`);
    expectPositive(p.checkpointBytes, `restore.points[${i}].checkpointBytes`);
    // More data, more segments; a checkpoint taken after the last upload leaves nothing to replay.
    expect(p.segments).toBeGreaterThan(segments);
    segments = p.segments;
    expect(p.replayedAfterCheckpoint).toBe(0);
  }
  expect(f.restore.at1GiB.method).toBe("extrapolated");
  expect(f.restore.at1GiB.fromBytes).toBe(doc.params.sizesBytes[doc.params.sizesBytes.length - 1]);
  expectPositive(f.restore.at1GiB.withCheckpointSeconds, "restore.at1GiB.withCheckpointSeconds");
  expectPositive(f.restore.at1GiB.fullReplaySeconds, "restore.at1GiB.fullReplaySeconds");
  expect(f.restore.note).toMatch(/extrapolated/);

}

describe("tier benchmark (tiny)", () => {
  const scratch: string[] = [];
  afterEach(() => {
    for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  it("produces a complete document of positive, finite figures and cleans up after itself", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-bench-tier-test-"));
    scratch.push(dir);
    const progress: string[] = [];
    const doc = await runTierBench({ scale: "tiny", runs: 1, dir, progress: (line) => progress.push(line) });
    expectTierDocument(doc);
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
    expect(progress.some((line) => line.startsWith("restore"))).toBe(true);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it("is a suite of `strata bench`, and refuses bad options at the edge", async () => {
    expect(parseSuites("tier")).toEqual(["tier"]);
    expect(parseSuites("all")).toContain("tier");
    await expect(runTierBench({ scale: "tiny", runs: 0 })).rejects.toThrow(/positive integer/);
    await expect(runTierBench({ scale: "huge" as "tiny", runs: 1 })).rejects.toThrow(/scale/);
  });
});
