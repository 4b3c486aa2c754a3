/**
 * Keeps the HTTP gateway benchmark from rotting: runs `strata bench --suite http --tiny` through
 * the bench command and checks the document's shape: every figure positive and finite, one value
 * per run, ordered latency percentiles, the ratios consistent with the figures they divide, and
 * the scratch directory left empty. No timing thresholds: a tiny run's numbers mean nothing.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { HttpBenchResult } from "../../bench/http.js";
import { runHttpBench } from "../../bench/http.js";
import { parseSuites } from "../../src/cli/bench.js";
import { expectFigure, expectLatency, expectRatioOf, expectTinyDocument, runBenchCommand } from "../helpers/bench-doc.js";

describe("HTTP gateway benchmark (tiny)", () => {
  const scratch: string[] = [];
  afterEach(() => {
    for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  it("runs as `strata bench --suite http --tiny` and prints a complete document", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-bench-http-test-"));
    scratch.push(dir);
    const printed = await runBenchCommand(["bench", "--suite", "http", "--tiny", "--dir", dir]);
    const doc = (JSON.parse(printed) as { http: HttpBenchResult }).http;
    expectTinyDocument(doc, "http", ["gatewayPutVsHttpEcho", "gatewayGetVsHttpEcho"]);
    for (const op of ["put", "get"] as const) {
      const f = doc.figures[op];
      for (const p of ["direct", "gateway", "httpEcho"] as const) {
        expectFigure(f[p].opsPerSec, 1, `${op}.${p}.opsPerSec`);
        expectLatency(f[p].latency, `${op}.${p}.latency`);
      }
      expectFigure(f.throughputRatio, 1, `${op}.throughputRatio`);
      expectFigure(f.latencyP50Ratio, 1, `${op}.latencyP50Ratio`);
      expectRatioOf(f.throughputRatio.median, f.gateway.opsPerSec.runs[0]!, f.direct.opsPerSec.runs[0]!, `${op}.throughputRatio`);
      expectFigure(f.throughputVsHttpEcho, 1, `${op}.throughputVsHttpEcho`);
      expectRatioOf(f.throughputVsHttpEcho.median, f.gateway.opsPerSec.runs[0]!, f.httpEcho.opsPerSec.runs[0]!, `${op}.throughputVsHttpEcho`);
    }
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it("is a suite of `strata bench`, and refuses bad options at the edge", async () => {
    expect(parseSuites("http")).toEqual(["http"]);
    expect(parseSuites("all")).toContain("http");
    await expect(runHttpBench({ scale: "tiny", runs: 0 })).rejects.toThrow(/positive integer/);
  });
});
