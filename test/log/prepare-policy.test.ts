/**
 * PreparePolicy (src/log/prepare-policy.ts): the next segment is prepared while the log's recent
 * fdatasyncs covered at most segmentPrepareSyncBytesMax each, and left plain once many bytes share
 * one; the judgement follows a change of load within two windows.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PreparePolicy } from "../../src/log/prepare-policy.js";

const KiB = 1024;
const MAX = 64 * KiB;

/** Feeds batches of `bytes`, one fdatasync each, every `stepMs` from `t`; returns the sync count and time after. */
function feed(p: PreparePolicy, batches: number, bytes: number, syncs: number, t: number, stepMs: number): { syncs: number; t: number } {
  for (let i = 0; i < batches; i++) {
    syncs += 1;
    p.appended(bytes, syncs, t);
    t += stepMs;
  }
  return { syncs, t };
}

describe("PreparePolicy", () => {
  it("prepares while nothing has been written", () => {
    const p = new PreparePolicy(MAX);
    expect(p.syncBytes(0)).toBe(0);
    expect(p.shouldPrepare(0)).toBe(true);
  });

  it("prepares at few bytes per fdatasync (one request in flight) and not at many (group commits)", () => {
    const few = new PreparePolicy(MAX);
    const a = feed(few, 500, KiB, 0, 0, 1);
    expect(few.shouldPrepare(a.syncs)).toBe(true);
    const many = new PreparePolicy(MAX);
    const b = feed(many, 500, 256 * KiB, 0, 0, 1);
    expect(many.shouldPrepare(b.syncs)).toBe(false);
    expect(many.syncBytes(b.syncs)).toBe(256 * KiB);
  });

  it("counts bytes not yet synced (fsync interval) as one sync's", () => {
    const p = new PreparePolicy(MAX);
    for (let i = 0; i < 40; i++) p.appended(KiB, 0, i);
    expect(p.syncBytes(0)).toBe(40 * KiB);
    expect(p.shouldPrepare(0)).toBe(true);
    for (let i = 0; i < 40; i++) p.appended(KiB, 0, 40 + i);
    expect(p.shouldPrepare(0)).toBe(false);
    // The interval's fdatasync: the bytes so far shared one.
    expect(p.syncBytes(1)).toBe(80 * KiB);
  });

  it("follows a change of load within two windows, both ways", () => {
    const p = new PreparePolicy(MAX);
    let s = feed(p, 3000, 256 * KiB, 0, 0, 1); // 3 s of large group commits
    expect(p.shouldPrepare(s.syncs)).toBe(false);
    s = feed(p, 2100, KiB, s.syncs, s.t, 1); // then 2.1 s at one in flight
    expect(p.shouldPrepare(s.syncs)).toBe(true);
    s = feed(p, 2100, 256 * KiB, s.syncs, s.t, 1);
    expect(p.shouldPrepare(s.syncs)).toBe(false);
  });

  it("property: with a steady batch size, the judgement is that size against the limit, whatever the timing", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 * MAX }), fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 1, maxLength: 200 }), (bytes, gaps) => {
        const p = new PreparePolicy(MAX);
        let t = 0;
        let syncs = 0;
        for (const gap of gaps) {
          t += gap;
          p.appended(bytes, ++syncs, t);
        }
        expect(p.syncBytes(syncs)).toBeCloseTo(bytes, 6);
        expect(p.shouldPrepare(syncs)).toBe(bytes <= MAX);
      }),
    );
  });
});
