/**
 * The net bench's open-loop paced load (bench/net-load.ts runPaced): every operation is started
 * on its schedule whatever the earlier ones do, each ack is recorded once, and a failure rejects
 * only once every operation has settled.
 */
import { describe, expect, it } from "vitest";
import { runPaced } from "../bench/net-load.js";
import { latencyHistogram } from "../bench/lib/stats.js";

describe("runPaced", () => {
  it("starts every operation without waiting for earlier acks and records each ack once", async () => {
    const histogram = latencyHistogram();
    const pending: Array<() => void> = [];
    let started = 0;
    const run = runPaced(20_000, 200, () => {
      started += 1;
      return new Promise<void>((resolve) => pending.push(resolve));
    }, histogram);
    // No ack arrives until all 200 were sent: an open loop sends them all anyway.
    while (started < 200) await new Promise((resolve) => setTimeout(resolve, 1));
    expect(histogram.totalCount).toBe(0);
    for (const resolve of pending) resolve();
    const result = await run;
    expect(result.messages).toBe(200);
    expect(histogram.totalCount).toBe(200);
    histogram.destroy();
  });

  it("rejects with the first failure, after every operation settled", async () => {
    const histogram = latencyHistogram();
    let settled = 0;
    const run = runPaced(10_000, 50, async (i) => {
      await new Promise((resolve) => setTimeout(resolve, i === 10 ? 1 : 5));
      settled += 1;
      if (i === 10 || i === 20) throw new Error(`op ${i} failed`);
    }, histogram);
    await expect(run).rejects.toThrow("op 10 failed");
    expect(settled).toBe(50);
    expect(histogram.totalCount).toBe(48);
    histogram.destroy();
  });
});
