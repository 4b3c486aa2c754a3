/**
 * Keeps the engine benchmark from rotting: runs it at tiny scale, directly and through
 * `strata bench`, and checks the JSON document's shape and that every number is positive and
 * finite. No timing thresholds: the numbers of a tiny run on a shared machine mean nothing.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Command } from "commander";
import { afterEach, describe, expect, it, vi } from "vitest";
import { parseBenchArgs, parseRuns, runEngineBench, type EngineBenchResult } from "../bench/engine.js";
import { register } from "../src/cli/bench.js";
import { StrataError } from "../src/errors.js";
import { expectFigure, expectLatency, expectPositive, expectTinyDocument, runBenchCommand } from "./helpers/bench-doc.js";

const TARGET_NAMES = [
  "appendMsgsPerSecAt256InFlight",
  "hotGetOpsPerSec",
  "scanMsgsPerSec",
  "openSecondsAt1MLocations",
  "diskBytesPerByte",
];




function expectEngineDocument(doc: EngineBenchResult): void {
  expectTinyDocument(doc, "engine", TARGET_NAMES);
  expect(doc.machine.node).toBe(process.version);
  expect(doc.params.valueBytes).toBe(1024);

  const f = doc.figures;
  for (const key of ["inFlight1", "inFlight64", "inFlight256"] as const) {
    const a = f.append[key];
    expectFigure(a.msgsPerSec, 1, `append.${key}.msgsPerSec`);
    expectFigure(a.fsyncsPerWrite, 1, `append.${key}.fsyncsPerWrite`);
    expectFigure(a.writesPerBatch, 1, `append.${key}.writesPerBatch`);
    expectLatency(a.latency, `append.${key}.latency`);
    // Every write is covered by some fsync, and no write needs more than one.
    expect(a.fsyncsPerWrite.median).toBeLessThanOrEqual(1);
  }
  expectFigure(f.hotGet.opsPerSec, 1, "hotGet.opsPerSec");
  expectFigure(f.scan.msgsPerSec, 1, "scan.msgsPerSec");
  expectFigure(f.kvSet.opsPerSec, 1, "kvSet.opsPerSec");
  expectFigure(f.kvSet.fsyncsPerWrite, 1, "kvSet.fsyncsPerWrite");
  expectLatency(f.kvSet.latency, "kvSet.latency");
  expectFigure(f.kvGet.opsPerSec, 1, "kvGet.opsPerSec");
  expectFigure(f.open.seconds, 1, "open.seconds");
  expect(f.open.locations).toBe(doc.params.openLocations);
  expect(f.open.buildSeconds).toBeGreaterThanOrEqual(0);
  expectFigure(f.disk.bytesPerByte, 1, "disk.bytesPerByte");
  expectFigure(f.disk.segmentsBytes, 1, "disk.segmentsBytes");
  expectFigure(f.disk.indexBytes, 1, "disk.indexBytes");
  const appended = Object.values(doc.params.appendMessages).reduce((a, b) => a + b, 0);
  expect(f.disk.valueBytes).toBe(appended * doc.params.valueBytes);
  // The log alone holds every value byte.
  expect(f.disk.segmentsBytes.median).toBeGreaterThanOrEqual(f.disk.valueBytes);

  for (const t of doc.targets) {
    expectPositive(t.threshold, `${t.name}.threshold`);
  }
}

describe("engine benchmark (tiny)", () => {
  const scratch: string[] = [];
  afterEach(() => {
    vi.restoreAllMocks();
    for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  const tempDir = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), "strata-bench-test-"));
    scratch.push(d);
    return d;
  };

  it("produces a complete document of positive, finite figures and cleans up after itself", async () => {
    const dir = tempDir();
    const progress: string[] = [];
    const doc = await runEngineBench({ scale: "tiny", runs: 1, dir, progress: (line) => progress.push(line) });
    expectEngineDocument(doc);
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
    expect(progress.length).toBeGreaterThan(0);
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it("runs as `strata bench --tiny --out FILE`, printing the same document it writes", async () => {
    const dir = tempDir();
    const out = path.join(dir, "bench.json");
    const printed = await runBenchCommand(["bench", "--tiny", "--out", out, "--dir", dir]);
    const written = fs.readFileSync(out, "utf8");
    expect(printed).toBe(written);
    const doc = JSON.parse(written) as { engine: EngineBenchResult };
    expect(Object.keys(doc)).toEqual(["engine"]);
    expectEngineDocument(doc.engine);
    expect(fs.readdirSync(dir)).toEqual(["bench.json"]);
  });

  it("refuses a bad run count at the edge", async () => {
    expect(() => parseRuns("0", "full")).toThrow(/positive integer/);
    expect(() => parseRuns("2.5", "full")).toThrow(/positive integer/);
    expect(parseRuns(undefined, "full")).toBe(5);
    expect(parseRuns(undefined, "tiny")).toBe(1);
    expect(parseBenchArgs(["--tiny", "--runs", "3"])).toEqual({ scale: "tiny", runs: 3 });
    expect(() => parseBenchArgs(["--bogus"])).toThrow();
    await expect(runEngineBench({ scale: "tiny", runs: 0 })).rejects.toThrow(/positive integer/);
    const program = new Command().exitOverride();
    register(program);
    const err = await program.parseAsync(["bench", "--tiny", "--runs", "-1"], { from: "user" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(StrataError.is(err, "INVALID_ARGUMENT")).toBe(true);
  });
});
