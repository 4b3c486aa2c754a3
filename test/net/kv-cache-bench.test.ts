/**
 * Keeps the kv cache benchmark (bench/cache.ts) from rotting: runs it through `strata bench
 * --suite cache --tiny` and checks the JSON document's shape, that every figure is positive and
 * finite, and that the cache followed the live writes with the requests it is meant to (the
 * benchmark itself checks every cached value). No timing thresholds: the numbers of a tiny run on a
 * shared machine mean nothing.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { CacheBenchResult } from "../../bench/cache.js";
import { parseSuites } from "../../src/cli/bench.js";
import { expectFigure, expectRatioOf, expectTinyDocument, runBenchCommand } from "../helpers/bench-doc.js";

describe("cache benchmark (tiny)", () => {
  const scratch: string[] = [];
  afterEach(() => {
    for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  it("runs as `strata bench --suite cache --tiny --out FILE`, prints the document it writes, cleans up", async () => {
    expect(parseSuites("cache")).toEqual(["cache"]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-bench-cache-test-"));
    scratch.push(dir);
    const out = path.join(dir, "bench.json");
    const printed = await runBenchCommand(["bench", "--suite", "cache", "--tiny", "--out", out, "--dir", dir]);
    const written = fs.readFileSync(out, "utf8");
    expect(printed).toBe(written);
    const { cache: doc } = JSON.parse(written) as { cache: CacheBenchResult };
    expectTinyDocument(doc, "cache", ["cachedToUncachedRatio"]);
    for (const [name, f] of Object.entries(doc.figures)) expectFigure(f, 1, name);
    const f = doc.figures;
    expectRatioOf(f.cachedToUncachedRatio.median, f.cachedGetsPerSec.median, f.uncachedGetsPerSec.median, "cachedToUncachedRatio");
    // Each entry costs its value plus a bounded overhead.
    expect(f.cacheBytesPerEntry.median).toBeGreaterThan(doc.params.valueBytes);
    expect(f.cacheBytesPerEntry.median).toBeLessThan(doc.params.valueBytes + 1024);
    // Values the feed left out are fetched in batches: far fewer `changes` requests than writes.
    expect(f.changesRequestsPerLiveWrite.median).toBeLessThan(1);
    expect(fs.readdirSync(dir)).toEqual(["bench.json"]);
  });
});
