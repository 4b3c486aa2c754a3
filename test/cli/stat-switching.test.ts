/**
 * `strata stat --data DIR` (src/data-stat.ts, src/cli/stat.ts) on a data directory whose last
 * compaction's switch was cut short (docs/compaction.md, step 4): the output the index records as
 * "switching" is shown as "switching" (not as a local-only segment), in the segment tallies, in the
 * outputs table and with a line saying what it means; once the server has started (and finished
 * the switch) the same output shows its final state and its inputs as superseded.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatStat } from "../../src/cli/stat.js";
import { compactFaultHook } from "../../src/compact.js";
import type { StoreOptions } from "../../src/config.js";
import { dataStat } from "../../src/data-stat.js";
import { pendingSwitches } from "../../src/index/switch-journal.js";
import { Store } from "../../src/store.js";

const LIMITS = { segmentBytesMax: 64 * 1024, recordBytesMax: 16 * 1024, chunkBytes: 4096, headersBytesMax: 4096, compactSwitchChunkRecords: 8, compactRetainMs: 3_600_000 };

let root: string;
beforeAll(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-stat-switching-"))));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe("strata stat and a switch cut short", () => {
  it("shows the output as switching, then, after a start finished it, as sealed with its inputs superseded", async () => {
    const dir = path.join(root, "data");
    const opts: StoreOptions = { dir, limits: LIMITS, sweepTimers: false, compaction: false };
    const store = await Store.open(opts);
    let out: number | undefined;
    try {
      const kv = store.kv("st/kv");
      for (let r = 0; r < 3; r++) await Promise.all(Array.from({ length: 200 }, (_, k) => kv.set(`k${k}`, Buffer.from(`${k}-${r}`.padEnd(150, "v")))));
      await store.sealActive();
      compactFaultHook.fn = (step, info) => {
        if (step === "switch-chunk" && info.seg === 2) {
          out = info.out;
          throw new Error("stop between chunks");
        }
      };
      await expect(store.compact()).rejects.toThrow("stop between chunks");
      expect(pendingSwitches(store.index)).toEqual([out]);
    } finally {
      compactFaultHook.fn = undefined;
      await store.close();
    }
    const cut = await dataStat(dir);
    expect(cut.segments.switching.count).toBe(1);
    expect(cut.segments.switching.bytes).toBeGreaterThan(0);
    expect(cut.segments["local-only"].count, "the sealed inputs only (no tier)").toBe(cut.segments.total.count - 2);
    expect(cut.compaction.outputs.map((o) => [o.id, o.state, o.localMarker])).toEqual([[out, "switching", true]]);
    const text = formatStat(cut, { all: false });
    expect(text).toMatch(/^\s*switching\s+1\s/m);
    expect(text).toContain("switching: a compaction output whose switch was cut short");
    expect(text).toMatch(new RegExp(`^\\s*${out}\\s+switching\\s`, "m"));

    // A start finishes the switch.
    const reopened = await Store.open(opts);
    try {
      expect(reopened.recovery.switchesFinished).toEqual([out]);
    } finally {
      await reopened.close();
    }
    const done = await dataStat(dir);
    expect(done.segments.switching.count).toBe(0);
    expect(done.segments.superseded.count).toBeGreaterThan(0);
    expect(done.compaction.outputs.map((o) => [o.id, o.state])).toEqual([[out, "sealed"]]);
    expect(formatStat(done, { all: false })).not.toMatch(/^\s*switching/m);
  }, 30_000);
});
