/**
 * Where a batch's fdatasync runs at fsync "always" (src/log/segment-log.ts `appendLast`): a lone
 * write (one write, nothing queued behind it) is fdatasync'd on the event loop, which saves the
 * thread pool's two hand-offs; writes issued together, large writes and fsync "interval" keep the
 * thread pool; after one fdatasync on the event loop took longer than `fsyncInlineMaxMs`, lone
 * writes use the thread pool for `fsyncInlineOffMs` (also as a fast-check property against a
 * model of that rule, over any run of sync durations and gaps); a loop awaiting lone writes still gives the
 * event loop a turn per write (counted with setImmediate, no clock); a failing one on the event
 * loop answers IO and leaves nothing behind, as in the thread pool.
 *
 * The disk is real; the FileIo in front of it counts where each fdatasync ran, and can make one on
 * the event loop take longer by moving the (faked) performance clock.
 */
import fc from "fast-check";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { StoreOptions } from "../../src/config.js";
import { nodeFileIo, type FileIo } from "../../src/log/file-io.js";
import { Store } from "../../src/store.js";
import { FaultIo } from "../../src/testing/fault-io.js";
import { all } from "../helpers/collect.js";
import { turnsDuring } from "../helpers/turns.js";

const KiB = 1024;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

let dir: string;
let store: Store | undefined;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-fsync-inline-"));
});
afterEach(async () => {
  vi.useRealTimers();
  await store?.close();
  store = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Counts the log's fdatasyncs by where they ran; `slowMs` is added to the clock by each one on the event loop. */
function countingIo(inner: FileIo = nodeFileIo): FileIo & { inline: number; pool: number; slowMs: number } {
  const io = {
    ...nodeFileIo,
    inline: 0,
    pool: 0,
    slowMs: 0,
  };
  for (const name of Object.keys(nodeFileIo) as Array<keyof FileIo>) (io as Record<string, unknown>)[name] = (inner[name] as (...a: unknown[]) => unknown).bind(inner);
  io.fdatasync = async (fd: number) => {
    io.pool++;
    return inner.fdatasync(fd);
  };
  io.fdatasyncSync = (fd: number) => {
    io.inline++;
    inner.fdatasyncSync(fd);
    if (io.slowMs > 0) vi.advanceTimersByTime(io.slowMs);
  };
  return io;
}

const open = (io: FileIo, extra: Partial<StoreOptions> = {}) => Store.open({ dir, sweepTimers: false, io, ...extra });

/** The fdatasyncs a call made, by where they ran. */
async function syncsOf(io: { inline: number; pool: number }, fn: () => Promise<unknown>): Promise<{ inline: number; pool: number }> {
  const before = { inline: io.inline, pool: io.pool };
  await fn();
  return { inline: io.inline - before.inline, pool: io.pool - before.pool };
}

describe("fsync always: where a batch's fdatasync runs", () => {
  it("a lone write's on the event loop, one each; writes issued together share one in the thread pool", async () => {
    const io = countingIo();
    store = await open(io);
    const s = store.stream("i/s");
    const kv = store.kv("i/k");
    await s.append({ value: enc("warm") }); // the segment file and the location exist
    for (let i = 0; i < 5; i++) expect(await syncsOf(io, () => s.append({ value: enc(`lone${i}`) }))).toEqual({ inline: 1, pool: 0 });
    // A kv set writes a record and its follow-up in one batch: still one lone write.
    expect(await syncsOf(io, () => kv.set("k", enc("v")))).toEqual({ inline: 1, pool: 0 });
    const together = await syncsOf(io, () => Promise.all([0, 1, 2, 3].map((i) => s.append({ value: enc(`together${i}`) }))));
    expect(together.inline).toBe(0);
    expect(together.pool).toBeGreaterThanOrEqual(1);
    expect((await all(s.getAll())).map((m) => dec(m.value))).toEqual(["warm", ...[0, 1, 2, 3, 4].map((i) => `lone${i}`), ...[0, 1, 2, 3].map((i) => `together${i}`)]);
  });

  it("a write larger than syncWriteBytesMax goes to the thread pool, alone or not", async () => {
    const io = countingIo();
    store = await open(io, { limits: { syncWriteBytesMax: 4 * KiB } });
    const s = store.stream("i/big");
    await s.append({ value: enc("warm") });
    expect(await syncsOf(io, () => s.append({ value: new Uint8Array(8 * KiB).fill(1) }))).toEqual({ inline: 0, pool: 1 });
    expect(await syncsOf(io, () => s.append({ value: new Uint8Array(1 * KiB).fill(2) }))).toEqual({ inline: 1, pool: 0 });
  });

  it("never on the event loop with fsyncInlineMaxMs 0, and none at the write with fsync interval", async () => {
    const io = countingIo();
    store = await open(io, { limits: { fsyncInlineMaxMs: 0 } });
    await store.stream("i/s").append({ value: enc("warm") });
    expect(await syncsOf(io, () => store!.stream("i/s").append({ value: enc("a") }))).toEqual({ inline: 0, pool: 1 });
    await store.close();
    store = await open(io, { fsync: "interval" });
    expect(await syncsOf(io, () => store!.stream("i/s").append({ value: enc("b") }))).toEqual({ inline: 0, pool: 0 });
  });

  it("after one on the event loop took longer than fsyncInlineMaxMs, lone writes use the thread pool for fsyncInlineOffMs", async () => {
    vi.useFakeTimers({ toFake: ["performance"] });
    const io = countingIo();
    store = await open(io, { limits: { fsyncInlineMaxMs: 5, fsyncInlineOffMs: 1000 } });
    const s = store.stream("i/slow");
    await s.append({ value: enc("warm") });
    io.slowMs = 5; // not longer than the limit: stays on the event loop
    expect(await syncsOf(io, () => s.append({ value: enc("a") }))).toEqual({ inline: 1, pool: 0 });
    io.slowMs = 6;
    expect(await syncsOf(io, () => s.append({ value: enc("b") }))).toEqual({ inline: 1, pool: 0 });
    io.slowMs = 0;
    for (const v of ["c", "d"]) expect(await syncsOf(io, () => s.append({ value: enc(v) }))).toEqual({ inline: 0, pool: 1 });
    vi.advanceTimersByTime(999);
    expect(await syncsOf(io, () => s.append({ value: enc("e") }))).toEqual({ inline: 0, pool: 1 });
    vi.advanceTimersByTime(1);
    expect(await syncsOf(io, () => s.append({ value: enc("f") }))).toEqual({ inline: 1, pool: 0 });
    expect((await all(s.getAll())).map((m) => dec(m.value))).toEqual(["warm", "a", "b", "c", "d", "e", "f"]);
  });

  it("property: for any run of fdatasync durations and gaps, a lone write goes to the event loop exactly when no slow one is fsyncInlineOffMs recent", async () => {
    vi.useFakeTimers({ toFake: ["performance"] });
    const MAX_MS = 5;
    const OFF_MS = 100;
    // Gaps of exactly OFF_MS and syncs of exactly MAX_MS land on the rule's boundaries.
    const step = fc.record({ gapMs: fc.oneof(fc.constantFrom(0, OFF_MS), fc.integer({ min: 0, max: 150 })), syncMs: fc.oneof(fc.constant(MAX_MS), fc.integer({ min: 0, max: 12 })) });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), async (steps) => {
        const io = countingIo();
        const s1 = await Store.open({ dir: path.join(dir, `p${run++}`), sweepTimers: false, io, limits: { fsyncInlineMaxMs: MAX_MS, fsyncInlineOffMs: OFF_MS } });
        try {
          const s = s1.stream("i/prop");
          await s.append({ value: enc("warm") });
          let offUntil = -Infinity; // the model
          for (const [i, { gapMs, syncMs }] of steps.entries()) {
            vi.advanceTimersByTime(gapMs);
            const inline = performance.now() >= offUntil;
            io.slowMs = syncMs;
            expect(await syncsOf(io, () => s.append({ value: enc(`v${i}`) }))).toEqual(inline ? { inline: 1, pool: 0 } : { inline: 0, pool: 1 });
            if (inline && syncMs > MAX_MS) offUntil = performance.now() + OFF_MS;
          }
        } finally {
          await s1.close();
        }
      }),
      { numRuns: 25 },
    );
  });

  it("a loop awaiting lone writes still lets the event loop turn (timers and I/O run), a turn per write at least", async () => {
    const io = countingIo();
    store = await open(io);
    const s = store.stream("i/loop");
    await s.append({ value: enc("warm") });
    const before = io.inline;
    const { turns } = await turnsDuring(async () => {
      for (let i = 0; i < 50; i++) await s.append({ value: enc(`v${i}`) });
    });
    expect(io.inline - before).toBe(50);
    expect(turns).toBeGreaterThanOrEqual(49);
  });

  it("a failing one on the event loop answers IO, leaves nothing of the write, and the next lone write works", async () => {
    const fault = new FaultIo({ seed: 5 });
    const io = countingIo(fault);
    store = await open(io);
    const s = store.stream("i/fail");
    await s.append({ value: enc("kept") });
    fault.failNext("fsync", 1, "EIO");
    const inlineBefore = io.inline;
    await expect(s.append({ value: enc("lost") })).rejects.toMatchObject({ code: "IO", retryable: true });
    expect(io.inline).toBe(inlineBefore + 1);
    expect(fault.injected).toBe(1);
    expect(await s.append({ value: enc("after") })).toMatchObject({ seq: 2 });
    await store.close();
    store = await open(nodeFileIo);
    expect((await all(store.stream("i/fail").getAll())).map((m) => dec(m.value))).toEqual(["kept", "after"]);
  });
});
