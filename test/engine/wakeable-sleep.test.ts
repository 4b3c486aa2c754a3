/**
 * WakeableSleep (src/wakeable-sleep.ts): a pause that ends after its time (true), or at once on wake() (false);
 * a wake with no pause under way changes nothing, and the next pause is a full one.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { WakeableSleep } from "../../src/wakeable-sleep.js";

describe("WakeableSleep", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("ends after its time", async () => {
    const w = new WakeableSleep();
    let done = false;
    let result: boolean | undefined;
    void w.sleep(100).then((r) => {
      done = true;
      result = r;
    });
    await vi.advanceTimersByTimeAsync(99);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(done).toBe(true);
    expect(result).toBe(true);
  });

  it("ends at once on wake, leaving no timer behind", async () => {
    const w = new WakeableSleep();
    const started = Date.now();
    const pause = w.sleep(60_000);
    w.wake();
    expect(await pause).toBe(false);
    expect(Date.now()).toBe(started);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("a wake with no pause under way does not shorten the next pause", async () => {
    const w = new WakeableSleep();
    await (async () => {
      const first = w.sleep(10);
      await vi.advanceTimersByTimeAsync(10);
      await first;
    })();
    w.wake();
    let done = false;
    void w.sleep(50).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(49);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(done).toBe(true);
  });
});
