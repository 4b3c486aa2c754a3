/**
 * The pacing of segment preparation (src/log/segment-prepare.ts): zeros are written a step at a
 * time, and after each step the preparer waits so that steps take `segmentPrepareDutyPercent` of
 * the time, leaving the disk to the appends' fdatasyncs in between; when the log needs the file
 * soon the steps follow each other at once; a pause lasts at most a second; closing ends a pause
 * at once.
 *
 * The file system here is a double whose fdatasync takes 10 ms of fake time: the pauses are
 * computed from measured step times, so only a clock the test drives makes them exact.
 */
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { SegmentPreparer } from "../../src/log/segment-prepare.js";
import { nodeFileIo, type FileIo } from "../../src/log/file-io.js";
import { resolveLimits } from "../../src/limits.js";

const KiB = 1024;
const SYNC_MS = 10;
const STEPS = 8;

function limitsWith(duty: number) {
  return resolveLimits({
    chunkBytes: 8 * KiB,
    recordBytesMax: 16 * KiB,
    headersBytesMax: 2 * KiB,
    segmentBytesMax: STEPS * 16 * KiB,
    segmentPrepareAtBytes: 8 * KiB,
    segmentPrepareWriteBytes: 16 * KiB,
    segmentPrepareDutyPercent: duty,
  });
}

/** Times (fake ms) at which each step's write began; fdatasync takes SYNC_MS. */
function timedIo(writes: number[], syncMs = SYNC_MS): FileIo {
  return {
    ...nodeFileIo,
    open: async () => 1000,
    close: async () => undefined,
    closeSync: () => undefined,
    fsync: async () => undefined,
    rename: async () => undefined,
    write: async (_fd, _buf, _offset, length) => {
      writes.push(performance.now());
      return length;
    },
    fdatasync: () => new Promise<void>((resolve) => setTimeout(resolve, syncMs)),
  };
}

function gaps(times: number[]): number[] {
  return times.slice(1).map((t, i) => Math.round(t - times[i]!));
}

describe("segment preparation pacing", () => {
  const dir = path.join(os.tmpdir(), "strata-prepare-pacing-nonexistent");
  beforeEach(() => vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] }));
  afterEach(() => vi.useRealTimers());

  it("waits three step-times after each step at 25 %, none after the last", async () => {
    const writes: number[] = [];
    const preparer = new SegmentPreparer(dir, limitsWith(25), timedIo(writes));
    const t0 = performance.now();
    preparer.start();
    await vi.advanceTimersByTimeAsync(STEPS * SYNC_MS * 4);
    expect(preparer.ready).toBe(true);
    expect(writes).toHaveLength(STEPS);
    expect(gaps(writes)).toEqual(Array(STEPS - 1).fill(SYNC_MS * 4));
    // Done after the last step's fdatasync, with no pause behind it.
    expect(writes[STEPS - 1]! + SYNC_MS - t0).toBe((STEPS - 1) * SYNC_MS * 4 + SYNC_MS);
    preparer.closeFdSync();
  });

  it("writes back to back at 100 %, and while the log needs the file soon", async () => {
    for (const [duty, urgent] of [
      [100, false],
      [25, true],
    ] as const) {
      const writes: number[] = [];
      const preparer = new SegmentPreparer(dir, limitsWith(duty), timedIo(writes), () => urgent);
      preparer.start();
      await vi.advanceTimersByTimeAsync(STEPS * SYNC_MS);
      expect(preparer.ready).toBe(true);
      expect(gaps(writes)).toEqual(Array(STEPS - 1).fill(SYNC_MS));
      preparer.closeFdSync();
    }
  });

  it("follows the log's need as it changes: pauses stop once it is urgent", async () => {
    const writes: number[] = [];
    let urgent = false;
    const preparer = new SegmentPreparer(dir, limitsWith(25), timedIo(writes), () => urgent);
    preparer.start();
    await vi.advanceTimersByTimeAsync(2 * SYNC_MS * 4);
    urgent = true;
    await vi.advanceTimersByTimeAsync(STEPS * SYNC_MS);
    expect(preparer.ready).toBe(true);
    // Two paced steps, then (from the next pause decision on) back to back.
    expect(gaps(writes).slice(0, 2)).toEqual([SYNC_MS * 4, SYNC_MS * 4]);
    expect(gaps(writes).slice(3)).toEqual(Array(STEPS - 4).fill(SYNC_MS));
    preparer.closeFdSync();
  });

  it("keeps each step's share of the time at the duty, for any duty and step time (property)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 400 }), async (duty, syncMs) => {
        const writes: number[] = [];
        const preparer = new SegmentPreparer(dir, limitsWith(duty), timedIo(writes, syncMs));
        preparer.start();
        const pause = Math.min(1000, (syncMs * (100 - duty)) / duty);
        await vi.advanceTimersByTimeAsync(STEPS * (syncMs + Math.ceil(pause) + 1));
        expect(preparer.ready).toBe(true);
        for (const gap of gaps(writes)) expect(Math.abs(gap - (syncMs + (pause >= 1 ? pause : 0)))).toBeLessThanOrEqual(1);
        preparer.closeFdSync();
      }),
      { numRuns: 40 },
    );
  });

  it("pauses at most a second, however slow a step was", async () => {
    const writes: number[] = [];
    const slowMs = 2000;
    const preparer = new SegmentPreparer(dir, limitsWith(25), timedIo(writes, slowMs));
    preparer.start();
    await vi.advanceTimersByTimeAsync(STEPS * (slowMs + 1000));
    expect(preparer.ready).toBe(true);
    expect(gaps(writes)).toEqual(Array(STEPS - 1).fill(slowMs + 1000));
    preparer.closeFdSync();
  });

  it("close ends a pause at once and leaves no prepared file", async () => {
    const writes: number[] = [];
    const preparer = new SegmentPreparer(dir, limitsWith(25), timedIo(writes));
    preparer.start();
    await vi.advanceTimersByTimeAsync(SYNC_MS + 1);
    expect(writes).toHaveLength(1);
    const before = performance.now();
    // Only the pause's timer is pending; close must not wait for it (fake time stands still).
    await preparer.close();
    expect(performance.now()).toBe(before);
    expect(writes).toHaveLength(1);
    expect(preparer.ready).toBe(false);
  });

  it("refuses a duty outside 1-100", () => {
    expect(() => limitsWith(0)).toThrow(/segmentPrepareDutyPercent/);
    expect(() => limitsWith(101)).toThrow(/segmentPrepareDutyPercent/);
  });
});
