/**
 * Keeps the scale benchmark from rotting: runs it at tiny scale (a few hundred locations, a
 * coordinator with a few thousand assignments) through `strata bench --suite scale` (one run: it
 * starts five processes),
 * and checks the JSON document's shape: every figure positive and finite, RSS split into its anon
 * and file parts, the restart answered a get of a written location (the benchmark checks the
 * value), and the scratch directory removed. No timing thresholds: a tiny run on a shared machine
 * means nothing. It needs nats-server on PATH (or $NATS_SERVER), like test/net.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { ScaleBenchResult } from "../bench/scale.js";
import type { RssKb } from "../bench/net-rss.js";
import { parseSuites } from "../src/cli/bench.js";
import { expectPositive, expectTinyDocument, runBenchCommand } from "./helpers/bench-doc.js";

function expectRss(r: RssKb, where: string): void {
  for (const k of ["vmRssKb", "rssAnonKb", "rssFileKb"] as const) expectPositive(r[k], `${where}.${k}`);
  expect(r.rssAnonKb + r.rssFileKb, where).toBeLessThanOrEqual(r.vmRssKb);
}

function expectScaleDocument(doc: ScaleBenchResult): void {
  expectTinyDocument(doc, "scale", ["serverRssWhileWriting", "serverRssAfterWrite", "restartToFirstGet"]);
  const p = doc.params;
  expect(doc.write.messages).toBe(p.locations * p.messagesPerLocation);
  expect(doc.write.payloadBytes).toBe(doc.write.messages * p.valueBytes);
  expectPositive(doc.write.msgsPerSec, "write.msgsPerSec");
  expectRss(doc.server.rssWhileWriting.max, "server.rssWhileWriting.max");
  expect(doc.server.rssWhileWriting.samples).toBeGreaterThan(0);
  expectRss(doc.server.rssAfterWrite, "server.rssAfterWrite");
  expectRss(doc.server.restart.rssAfterRestart, "server.restart.rssAfterRestart");
  for (const k of ["toFirstGetMs", "toReadyLogMs", "afterStopToFirstGetMs", "emptyToFirstGetMs"] as const) expectPositive(doc.server.restart[k], `server.restart.${k}`);
  // Everything written is on disk, with its framing and index on top.
  expect(doc.server.disk.allocatedBytes).toBeGreaterThan(doc.write.payloadBytes);
  expect(doc.server.disk.bytesPerPayloadByte).toBeGreaterThan(1);
  expect(doc.coordinator.assignments).toBe(p.coordAssignments);
  expectRss(doc.coordinator.rssIdle, "coordinator.rssIdle");
  expectRss(doc.coordinator.rssAfterLocates, "coordinator.rssAfterLocates");
  expectPositive(doc.coordinator.locatesPerSec, "coordinator.locatesPerSec");
}

describe("scale benchmark (tiny)", () => {
  const scratch: string[] = [];
  afterEach(() => {
    vi.restoreAllMocks();
    for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  const tempDir = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), "strata-bench-scale-test-"));
    scratch.push(d);
    return d;
  };

  it("runs as `strata bench --suite scale --tiny --out FILE`: writes, restarts, measures a coordinator, prints the document it writes, cleans up", async () => {
    expect(parseSuites("scale")).toEqual(["scale"]);
    const dir = tempDir();
    const out = path.join(dir, "bench.json");
    const printed = await runBenchCommand(["bench", "--suite", "scale", "--tiny", "--out", out, "--dir", dir]);
    const written = fs.readFileSync(out, "utf8");
    expect(printed).toBe(written);
    const doc = JSON.parse(written) as { scale: ScaleBenchResult };
    expect(Object.keys(doc)).toEqual(["scale"]);
    expectScaleDocument(doc.scale);
    expect(fs.readdirSync(dir)).toEqual(["bench.json"]);
  });
});
