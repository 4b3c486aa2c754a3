/**
 * The hot-path counters and histograms (src/metrics/hot.ts) expose exactly what prom-client's own
 * Counter and Histogram expose for the same observations (fast-check: any sequence of values,
 * including bucket bounds, zero, negatives and values past the last bucket), so a scraper cannot
 * tell them apart; and a wrong number of label values is refused at set-up.
 */
import fc from "fast-check";
import { Counter, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { HotCounter, HotHistogram } from "../../src/metrics/hot.js";
import { LATENCY_BUCKETS_SECONDS } from "../../src/metrics/metrics.js";

const BOUNDS = [0.001, 0.01, 0.1, 1];
const value = fc.oneof(fc.constantFrom(...BOUNDS, 0, -1, 5), fc.double({ min: -1, max: 10, noNaN: true }));

describe("hot metrics match prom-client's", () => {
  it("a histogram with labels", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom("local", "object"), value), { maxLength: 200 }), async (obs) => {
        const a = new Registry();
        const b = new Registry();
        const hot = new HotHistogram(a, "x_seconds", "h", BOUNDS, ["ack"]);
        const children = { local: hot.child("local"), object: hot.child("object") };
        const ref = new Histogram({ name: "x_seconds", help: "h", buckets: BOUNDS, labelNames: ["ack"], registers: [b] });
        ref.labels("local").observe(0);
        ref.labels("object").observe(0);
        children.local.observe(0);
        children.object.observe(0);
        for (const [ack, v] of obs) {
          children[ack].observe(v);
          ref.labels(ack).observe(v);
        }
        expect(await a.metrics()).toBe(await b.metrics());
      }),
      { numRuns: 100 },
    );
  });

  it("an unlabelled histogram with the latency buckets, and a labelled counter", async () => {
    const a = new Registry();
    const b = new Registry();
    const h = new HotHistogram(a, "y_seconds", "h", LATENCY_BUCKETS_SECONDS).child();
    const rh = new Histogram({ name: "y_seconds", help: "h", buckets: LATENCY_BUCKETS_SECONDS, registers: [b] });
    const c = new HotCounter(a, "z_total", "c", ["kind", "op"]);
    const rc = new Counter({ name: "z_total", help: "c", labelNames: ["kind", "op"], registers: [b] });
    const set = c.child("stream", "set");
    const del = c.child("kv", "delete");
    for (const v of [0.00001, 0.0003, 0.02, 3, 11, 0.0003]) {
      h.observe(v);
      rh.observe(v);
    }
    set.inc();
    set.inc(41);
    del.inc(0);
    rc.labels("stream", "set").inc(42);
    rc.labels("kv", "delete").inc(0);
    expect(await a.metrics()).toBe(await b.metrics());
  });

  it("refuses a wrong number of label values", () => {
    const c = new HotCounter(new Registry(), "w_total", "c", ["kind", "op"]);
    expect(() => c.child("stream")).toThrow(/label values/);
  });
});
