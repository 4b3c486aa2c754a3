/**
 * An index that cannot be written at all (its disk is full) must neither wedge the store for good
 * nor make a write answered with an error appear later: the durable batch waits, unanswered and
 * invisible to reads, is indexed and acknowledged once the index takes writes again, and is
 * acknowledged as durable (visible at the next open) if the store closes meanwhile. The failure is
 * injected with the test-only apply hook throwing a plain Error, as LMDB's own errors are.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { applyFaultHook } from "../../src/index/apply.js";
import { StrataError } from "../../src/errors.js";
import { Store } from "../../src/store.js";
import { captureLogger } from "../helpers/capture-logger.js";

const enc = (s: string) => new TextEncoder().encode(s);
const text = (v: Uint8Array | undefined) => (v === undefined ? undefined : Buffer.from(v).toString());

let root: string;
let n = 0;
beforeAll(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-index-full-"))));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
afterEach(() => void delete applyFaultHook.fn);

/** A store whose log events can be awaited. */
async function open(dir: string) {
  const log = captureLogger();
  const store = await Store.open({ dir, sweepTimers: false, limits: { indexRetryMaxMs: 50 }, logger: log.logger });
  return { store, warnings: log.warnings, log, warned: (event: string) => log.waitFor(event) };
}

function fillIndexDisk(): { free: () => void } {
  let full = true;
  applyFaultHook.fn = () => {
    if (full) throw new Error("MDB_PROBLEM: no space left on device (simulated)");
  };
  return { free: () => void (full = false) };
}

describe("an index that cannot be written", () => {
  it("holds the write unanswered and unseen, then acknowledges it once the index takes writes again", async () => {
    const dir = path.join(root, `d${n++}`);
    const { store, warnings, warned, log } = await open(dir);
    try {
      const kv = store.kv("k/v");
      await kv.set("a", enc("1"));
      const disk = fillIndexDisk();
      let answered = false;
      const pending = kv.set("b", enc("2")).finally(() => (answered = true));
      expect(await warned("index_writes_failing")).toMatchObject({ level: 50, error: expect.any(String), msg: expect.stringContaining("the index cannot be written") });
      // Not answered, not visible, and reads go on.
      expect(answered).toBe(false);
      expect(await kv.get("b")).toBeUndefined();
      expect(text((await kv.get("a"))?.value)).toBe("1");
      disk.free();
      await expect(pending).resolves.toMatchObject({ revision: 2 });
      expect(text((await kv.get("b"))?.value)).toBe("2");
      expect(await warned("index_writes_recovered")).toMatchObject({ level: 40, attempts: expect.any(Number), msg: expect.stringContaining("the index takes writes again") });
      // Writes go on; nothing was quarantined for the environment's failure.
      await expect(kv.set("c", enc("3"))).resolves.toMatchObject({ revision: 3 });
      expect(warnings.some((w) => w.includes("quarantined"))).toBe(false);
      expect(log.find("record_quarantined")).toBeUndefined();
    } finally {
      await store.close();
    }
    const again = await Store.open({ dir, sweepTimers: false });
    expect((await again.kv("k/v").get("c"))?.revision).toBe(3);
    await again.close();
  });

  it("acknowledges a waiting write as durable when the store closes, and it is there at the next open", async () => {
    const dir = path.join(root, `d${n++}`);
    const { store, warned } = await open(dir);
    await store.stream("s/a").append({ value: enc("one") });
    fillIndexDisk();
    const pending = store.stream("s/a").append({ value: enc("two") });
    await warned("index_writes_failing");
    await store.close();
    await expect(pending).resolves.toMatchObject({ seq: 2 });
    delete applyFaultHook.fn;
    const again = await Store.open({ dir, sweepTimers: false });
    expect(text((await again.stream("s/a").get(2))?.value)).toBe("two");
    await again.close();
  });

  it("fails an open whose replay cannot write the index with IO, and the next open completes it", async () => {
    const dir = path.join(root, `d${n++}`);
    const first = await Store.open({ dir, sweepTimers: false });
    for (let i = 0; i < 5; i++) await first.stream("s/r").append({ value: enc(`m${i}`) });
    await first.close();
    fs.rmSync(path.join(dir, "index"), { recursive: true, force: true }); // forces a replay of the log
    fillIndexDisk();
    const failed = await Store.open({ dir, sweepTimers: false }).catch((e: unknown) => e);
    expect(StrataError.is(failed, "IO")).toBe(true);
    expect((failed as StrataError).retryable).toBe(true);
    delete applyFaultHook.fn;
    const again = await Store.open({ dir, sweepTimers: false });
    expect((await again.stream("s/r").get(5))?.value).toEqual(enc("m4"));
    expect(again.recovery.quarantined ?? []).toEqual([]);
    await again.close();
  });
});
