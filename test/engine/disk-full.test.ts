/**
 * Issue #8 item 5: a full or failing disk. Faults come from src/testing/fault-io.ts in front of
 * the segment log. A write that fails gets IO (retryable); reads keep working throughout; once the
 * fault clears, writes work again without a restart; and after a restart nothing that was
 * answered with an error appears while everything acknowledged is there (kv included).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { StoreOptions } from "../../src/config.js";
import { nodeFileIo, type FileIo } from "../../src/log/file-io.js";
import { listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import { Store } from "../../src/store.js";
import { FaultIo } from "../../src/testing/fault-io.js";
import { captureLogger, type LogEvent } from "../helpers/capture-logger.js";
import { all } from "../helpers/collect.js";

const KiB = 1024;
const T0 = 1_700_000_000_000;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));
const codeOf = (p: Promise<unknown>) => p.then(() => "OK", (e: { code?: string; retryable?: boolean }) => `${e.code}${e.retryable ? "(retryable)" : ""}`);

let dir: string;
let store: Store | undefined;
let warnings: string[] = [];
let events: LogEvent[] = [];
const open = (extra: Partial<StoreOptions> = {}) => Store.open({ dir, sweepTimers: false, clock: () => T0, logger: captureLogger({ warnings, events }).logger, ...extra });

beforeEach(() => {
  warnings = [];
  events = [];
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-diskfull-"));
});
afterEach(async () => {
  await store?.close();
  store = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

async function values(s: Store, loc: string): Promise<Array<string | undefined>> {
  return (await all(s.stream(loc).getAll())).map((m) => dec(m.value));
}

/** The log's bytes on disk equal the end of the last acknowledged record: no failed bytes stay. */
function expectNoFailedBytes(s: Store): void {
  expect(fs.statSync(segmentPath(path.join(dir, "segments"), s.log.activeId)).size).toBe(s.log.activeSize);
  expect(Math.max(...listSegmentIds(path.join(dir, "segments")))).toBe(s.log.activeId);
}

describe.each([
  ["write", "ENOSPC"],
  ["write", "EIO"],
  ["fsync", "ENOSPC"],
  ["fsync", "EIO"],
  ["torn write", "ENOSPC"],
] as const)("%s fails with %s", (op, code) => {
  it("answers IO, keeps reads working, writes again at once, and a restart shows exactly what was acknowledged", async () => {
    const io = new FaultIo({ seed: 7 });
    store = await open({ io });
    const s = store.stream("d/s");
    const kv = store.kv("d/k");
    await s.append({ value: enc("a") });
    await kv.set("key", enc("v1"));
    const segBefore = store.log.activeId;

    if (op === "torn write") io.tearNext(1, code);
    else io.failNext(op, 1, code);
    // One batch: a stream append and a kv set that would replace an acknowledged value.
    const failed = await Promise.all([codeOf(s.append({ value: enc("lost") })), codeOf(kv.set("key", enc("lost")))]);
    expect(failed).toEqual(["IO(retryable)", "IO(retryable)"]);
    expectNoFailedBytes(store);
    // After a failed fsync the next writes go to a new segment file.
    expect(store.log.activeId).toBe(op === "fsync" ? segBefore + 1 : segBefore);

    // Reads keep working, and show only what was acknowledged.
    expect(await values(store, "d/s")).toEqual(["a"]);
    expect(dec((await kv.get("key"))?.value)).toBe("v1");
    expect(store.inventory("d/s")).toMatchObject({ count: 1, lastSeq: 1 });

    // The fault was transient: writes work again with no restart, at the seq after the last acknowledged one.
    expect(await s.append({ value: enc("b") })).toMatchObject({ seq: 2 });
    expect(await kv.set("other", enc("o1"))).toMatchObject({ revision: 2 });
    expect(io.injected).toBe(1);
    // The operator hears of it once when it starts and once when it ends.
    expect(warnings.filter((w) => /log writes (are failing|work again)/.test(w))).toEqual([expect.stringContaining("are failing"), "log writes work again"]);
    expect(events.filter((e) => e.event?.startsWith("log_writes_"))).toEqual([
      expect.objectContaining({ event: "log_writes_failing", level: 50, code: "IO", error: expect.any(String) }),
      expect.objectContaining({ event: "log_writes_recovered", level: 40 }),
    ]);

    await store.close();
    store = await open();
    expect(await values(store, "d/s")).toEqual(["a", "b"]);
    expect(dec((await store.kv("d/k").get("key"))?.value)).toBe("v1");
    expect(store.recovery.cut).toBeUndefined();
    // A full rebuild from the log agrees.
    await store.close();
    store = undefined;
    await Store.reindex({ dir });
    store = await open();
    expect(await values(store, "d/s")).toEqual(["a", "b"]);
    expect(dec((await store.kv("d/k").get("key"))?.value)).toBe("v1");
  });
});

describe("a disk that stays full", () => {
  it("fails every write with IO while reads work, and recovers once space is freed, also when the repair itself fails at first", async () => {
    const io = new FaultIo({ seed: 11 });
    store = await open({ io });
    const s = store.stream("f/s");
    await s.append({ value: enc("kept") });
    io.failRate("write", 1);
    io.failNext("truncate", 2, "EIO");
    for (let i = 0; i < 4; i++) {
      expect(await codeOf(s.append({ value: enc(`x${i}`) }))).toBe("IO(retryable)");
      expect(await values(store, "f/s")).toEqual(["kept"]);
      expect(store.inventory("f/s")).toMatchObject({ count: 1 });
    }
    io.clear();
    expect(await s.append({ value: enc("after") })).toMatchObject({ seq: 2 });
    expectNoFailedBytes(store);
    await store.close();
    store = await open();
    expect(await values(store, "f/s")).toEqual(["kept", "after"]);
  });
});

/** A FileIo that holds each fdatasync of the thread pool until released (open the store with fsyncInlineMaxMs 0), so a test can queue writes behind it. */
function gatedIo(inner: FileIo): FileIo & { waiting: number; release: () => void } {
  let gates: Array<() => void> = [];
  const io = {
    ...nodeFileIo,
    waiting: 0,
    release() {
      const g = gates;
      gates = [];
      io.waiting = 0;
      g.forEach((f) => f());
    },
  };
  for (const name of Object.keys(nodeFileIo) as Array<keyof FileIo>) (io as Record<string, unknown>)[name] = (inner[name] as (...a: unknown[]) => unknown).bind(inner);
  io.fdatasync = async (fd: number) => {
    io.waiting++;
    await new Promise<void>((resolve) => gates.push(resolve));
    return inner.fdatasync(fd);
  };
  return io;
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await new Promise((r) => setImmediate(r));
  expect(cond()).toBe(true);
}

describe("the commit queue after a failed batch", () => {
  it("re-decides the batch queued behind the failed one instead of writing it with stale seqs", async () => {
    const fault = new FaultIo({ seed: 3 });
    const io = gatedIo(fault);
    // The thread pool's fdatasync, which the gate can hold (a lone write's would run on the event loop).
    store = await open({ io, limits: { fsyncInlineMaxMs: 0 } });
    const s = store.stream("q/s");
    const first = s.append({ value: enc("one") });
    await until(() => io.waiting === 1);
    io.release();
    expect(await first).toMatchObject({ seq: 1 });

    fault.failNext("fsync", 1, "EIO");
    const failing = codeOf(s.append({ value: enc("lost") }));
    await until(() => io.waiting === 1);
    // Decided on top of the batch in flight (which will fail): it would get seq 3.
    const behind = s.append({ value: enc("two") }, { expectedLastSeq: 2 }).then(
      (r) => r,
      (e: { code: string }) => e.code,
    );
    const behindOk = s.append({ value: enc("three") });
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    io.release();
    expect(await failing).toBe("IO(retryable)");
    await until(() => io.waiting === 1);
    io.release();
    // Re-decided against the log as it is: expectedLastSeq 2 no longer holds, seq 2 is next.
    expect(await behind).toBe("CONFLICT");
    expect(await behindOk).toMatchObject({ seq: 2 });
    await store.close();
    store = await open();
    expect(await values(store, "q/s")).toEqual(["one", "three"]);
  });

  it("cuts a batch that spans segments as a whole, including the part in a segment it completed", async () => {
    const fault = new FaultIo({ seed: 5 });
    // Arms a write fault once the batch has rolled to a new segment (opened "r+" after creation).
    const io = {} as FileIo;
    for (const name of Object.keys(nodeFileIo) as Array<keyof FileIo>) (io as unknown as Record<string, unknown>)[name] = (fault[name] as (...a: unknown[]) => unknown).bind(fault);
    let armed = false;
    io.openSync = (p, f) => {
      const fd = fault.openSync(p, f);
      if (armed && f === "r+" && p.endsWith(".seg")) {
        armed = false;
        fault.failNext("write", 1, "ENOSPC");
      }
      return fd;
    };
    io.open = async (p, f) => {
      const fd = await fault.open(p, f);
      if (armed && f === "r+" && p.endsWith(".seg")) {
        armed = false;
        fault.failNext("write", 1, "ENOSPC");
      }
      return fd;
    };
    store = await open({ io, limits: { segmentBytesMax: 64 * KiB, recordBytesMax: 24 * KiB, chunkBytes: 16 * KiB, headersBytesMax: 4 * KiB, syncWriteBytesMax: 256 * KiB } });
    const s = store.stream("m/s");
    await s.append({ value: enc("kept") });
    const seg = store.log.activeId;
    armed = true;
    const big = new Uint8Array(10 * KiB);
    const outcomes = await Promise.all(Array.from({ length: 12 }, () => codeOf(s.append({ value: big }))));
    expect(outcomes.every((o) => o === "IO(retryable)")).toBe(true);
    expect(fault.injected).toBe(1);
    expect(store.log.activeId).toBe(seg);
    expectNoFailedBytes(store);
    expect(await s.append({ value: enc("after") })).toMatchObject({ seq: 2 });
    await store.close();
    store = await open();
    expect(await values(store, "m/s")).toEqual(["kept", "after"]);
  });
});
