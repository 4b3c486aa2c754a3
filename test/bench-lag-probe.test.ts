/**
 * The net bench's lag probe (bench/lib/lag-probe.ts): a separate idle process whose timers show
 * the machine's own stalls around a load. A window reports its ticks; a stall of the probe's
 * process (SIGSTOP for STOP_MS, as a host taking its vCPU would) shows as a lag of about that
 * long; a failing load still closes its window; the process is gone after stop.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LagProbe } from "../bench/lib/lag-probe.js";

const STOP_MS = 80;
let probe: LagProbe;

beforeAll(async () => {
  probe = await LagProbe.start(2);
});
afterAll(async () => {
  await probe?.stop();
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("the lag probe", () => {
  it("counts its ticks in a window and returns the load's value", async () => {
    const { value, lag } = await probe.during(async () => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      return "done";
    });
    expect(value).toBe("done");
    expect(lag.ticks).toBeGreaterThanOrEqual(10);
    expect(lag.maxMs).toBeGreaterThanOrEqual(lag.p999Ms);
    expect(lag.p999Ms).toBeGreaterThanOrEqual(lag.p99Ms);
    expect(lag.p99Ms).toBeGreaterThanOrEqual(0);
  });

  it("shows a stall of its process as a timer lag of about the stall's length", async () => {
    const { lag } = await probe.during(async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      process.kill(probe.pid, "SIGSTOP");
      try {
        await new Promise((resolve) => setTimeout(resolve, STOP_MS)); // the stall's length, not a wait for an event
      } finally {
        process.kill(probe.pid, "SIGCONT");
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    });
    expect(lag.maxMs).toBeGreaterThanOrEqual(STOP_MS - 25);
  });

  it("closes the window when the load fails, and the next window starts afresh", async () => {
    await expect(probe.during(() => Promise.reject(new Error("the load failed")))).rejects.toThrow("the load failed");
    const { lag } = await probe.during(() => new Promise((resolve) => setTimeout(resolve, 30)));
    expect(lag.ticks).toBeGreaterThan(0);
    expect(lag.ticks).toBeLessThan(200);
  });

  it("stops its process", async () => {
    const other = await LagProbe.start(2);
    expect(alive(other.pid)).toBe(true);
    await other.stop();
    expect(alive(other.pid)).toBe(false);
  });
});
