/**
 * The one backoff (src/backoff.ts): delays double up to the maximum with jitter in [0.5, 1.5) of
 * the step, never exceed the maximum, start over after reset, and replay exactly from a seed.
 */
import { describe, expect, it } from "vitest";
import { backoff } from "../../src/backoff.js";
import { mulberry32 } from "../../src/random.js";

describe("backoff", () => {
  it("doubles with jitter up to the maximum, resets, and replays from a seed", () => {
    const a = backoff({ initialMs: 50, maxMs: 1000, random: mulberry32(1) });
    const delays = Array.from({ length: 10 }, () => a.next());
    let step = 50;
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(Math.min(1000, step * 0.5));
      expect(d).toBeLessThanOrEqual(Math.min(1000, step * 1.5));
      step = Math.min(step * 2, 1000);
    }
    a.reset();
    expect(a.next()).toBeLessThan(75);
    const b = backoff({ initialMs: 50, maxMs: 1000, random: mulberry32(1) });
    expect(Array.from({ length: 10 }, () => b.next())).toEqual(delays);
  });

  it("works with a maximum as small as the first step", () => {
    const c = backoff({ initialMs: 20, maxMs: 20, random: () => 0.99 });
    expect([c.next(), c.next()]).toEqual([20, 20]);
  });
});
