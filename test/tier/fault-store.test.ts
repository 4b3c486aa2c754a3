/**
 * The fault injector must be deterministic (a seed replays exactly, or a failing property test
 * cannot be debugged) and its faults must look like the real ones: UNAVAILABLE errors, writes
 * that are all-or-nothing, corruption only of what is handed out.
 */
import { describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { FaultyObjectStore, MemoryObjectStore, mulberry32, type FaultOptions } from "../../src/testing/fault-store.js";
import { collect } from "./object-store-suite.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Runs a fixed script of calls and records the outcome of each: value, error code, or corruption. */
async function script(options: FaultOptions): Promise<string[]> {
  const memory = new MemoryObjectStore();
  const store = new FaultyObjectStore(memory, options);
  const outcomes: string[] = [];
  const record = async (label: string, call: () => Promise<unknown>) => {
    try {
      const value = await call();
      outcomes.push(`${label} ok ${value instanceof Uint8Array ? Buffer.from(value).toString("hex") : JSON.stringify(value)}`);
    } catch (err) {
      outcomes.push(`${label} ${err instanceof StrataError ? err.code : "CRASH"}`);
    }
  };
  for (let i = 0; i < 60; i++) {
    const key = `k/${i % 7}`;
    await record(`put ${key}`, () => store.put(key, enc(`value-${i}`)));
    await record(`get ${key}`, () => store.get(key));
    await record(`range ${key}`, () => store.get(key, { offset: 2, length: 3 }));
    await record(`head ${key}`, () => store.head(key));
    if (i % 5 === 0) await record(`delete ${key}`, () => store.delete(key));
    if (i % 10 === 0) await record("list", () => collect(store.list("k/")));
  }
  // What was really stored is part of the pattern too (failed-but-applied writes show up here).
  outcomes.push(JSON.stringify(await collect(memory.list(""))));
  await store.close();
  return outcomes;
}

const FAULTY: Omit<FaultOptions, "seed"> = { putFailRate: 0.2, getFailRate: 0.2, corruptRate: 0.2, failAfterApplyRate: 0.5 };

describe("FaultyObjectStore", () => {
  it("replays exactly the same faults for the same seed", async () => {
    const first = await script({ seed: 42, ...FAULTY });
    const second = await script({ seed: 42, ...FAULTY });
    expect(second).toEqual(first);
    // The script did meet every kind of fault, or the comparison above proves little.
    const failed = first.filter((o) => o.endsWith(" UNAVAILABLE")).length;
    expect(failed).toBeGreaterThan(10);
    expect(first.some((o) => o.includes("CRASH"))).toBe(false);
  });

  it("gives a different fault pattern for a different seed", async () => {
    expect(await script({ seed: 43, ...FAULTY })).not.toEqual(await script({ seed: 42, ...FAULTY }));
  });

  it("injects nothing when every rate is zero", async () => {
    const outcomes = await script({ seed: 1 });
    expect(outcomes.filter((o) => o.endsWith(" UNAVAILABLE"))).toEqual([]);
  });

  it("corrupts one byte of the returned copy, never the stored object", async () => {
    const memory = new MemoryObjectStore();
    const store = new FaultyObjectStore(memory, { seed: 5, corruptRate: 1 });
    const body = enc("the stored bytes");
    await store.put("k", body);
    for (let i = 0; i < 20; i++) {
      const got = (await store.get("k"))!;
      expect(got.length).toBe(body.length);
      const differing = [...got].filter((b, j) => b !== body[j]).length;
      expect(differing).toBe(1);
    }
    expect(await memory.get("k")).toEqual(body);
    expect(store.counts.corruptions).toBe(20);
    expect(await store.get("missing")).toBeUndefined(); // nothing to corrupt
  });

  it("makes failed writes all-or-nothing, applied or not as drawn", async () => {
    const memory = new MemoryObjectStore();
    const store = new FaultyObjectStore(memory, { seed: 9, putFailRate: 1, failAfterApplyRate: 0.5 });
    for (let i = 0; i < 40; i++) {
      const before = await memory.get("k");
      const err = await store.put("k", enc(`v${i}`)).then(() => undefined, (e: unknown) => e);
      expect(StrataError.is(err, "UNAVAILABLE")).toBe(true);
      const after = await memory.get("k");
      expect([before, enc(`v${i}`)]).toContainEqual(after);
    }
    const { writeFailures, appliedThenFailed } = store.counts;
    expect(writeFailures).toBe(40);
    expect(appliedThenFailed).toBeGreaterThan(5);
    expect(appliedThenFailed).toBeLessThan(35);
  });

  it("fails create-only puts like puts: a failure after the write leaves the object created, and a retry says exists", async () => {
    const memory = new MemoryObjectStore();
    const store = new FaultyObjectStore(memory, { seed: 9, putFailRate: 1, failAfterApplyRate: 0.5 });
    expect(store.createOnly).toBe("enforced");
    for (let i = 0; i < 40; i++) {
      const key = `c/${i}`;
      const err = await store.putIfAbsent(key, enc(`v${i}`)).then(() => undefined, (e: unknown) => e);
      expect(StrataError.is(err, "UNAVAILABLE")).toBe(true);
      const applied = (await memory.get(key)) !== undefined;
      expect(await memory.putIfAbsent(key, enc("other"))).toBe(applied ? "exists" : "created");
      expect(await memory.get(key)).toEqual(applied ? enc(`v${i}`) : enc("other"));
    }
    expect(store.counts.writeFailures).toBe(40);
    expect(store.counts.appliedThenFailed).toBeGreaterThan(5);
    expect(store.counts.appliedThenFailed).toBeLessThan(35);
  });

  it("fails every call while offline and recovers after", async () => {
    const store = new FaultyObjectStore(new MemoryObjectStore(), { seed: 3 });
    await store.put("k", enc("v"));
    store.setOffline(true);
    const settled = await Promise.allSettled([store.put("k", enc("w")), store.get("k"), store.head("k"), store.delete("k"), collect(store.list(""))]);
    for (const outcome of settled) {
      expect(outcome.status).toBe("rejected");
      const err = (outcome as PromiseRejectedResult).reason as unknown;
      expect(StrataError.is(err, "UNAVAILABLE")).toBe(true);
      expect((err as StrataError).retryable).toBe(true);
    }
    store.setOffline(false);
    expect(await store.get("k")).toEqual(enc("v"));
    expect(store.counts.offlineRejections).toBe(5);
  });

  it("validates input before injecting faults", async () => {
    const store = new FaultyObjectStore(new MemoryObjectStore(), { seed: 3, putFailRate: 1, getFailRate: 1 });
    store.setOffline(true);
    const settled = await Promise.allSettled([store.put("/bad", enc("x")), store.get("a//b"), collect(store.list("/"))]);
    for (const outcome of settled) {
      expect(outcome.status).toBe("rejected");
      const err = (outcome as PromiseRejectedResult).reason as unknown;
      expect(StrataError.is(err, "INVALID_ARGUMENT")).toBe(true);
    }
  });

  it("refuses rates outside [0, 1] and a missing seed", () => {
    const memory = new MemoryObjectStore();
    expect(() => new FaultyObjectStore(memory, { seed: 1, getFailRate: 1.5 })).toThrow(StrataError);
    expect(() => new FaultyObjectStore(memory, { seed: 1, putFailRate: Number.NaN })).toThrow(StrataError);
    expect(() => new FaultyObjectStore(memory, { seed: 1, delayMsMax: -1 })).toThrow(StrataError);
    expect(() => new FaultyObjectStore(memory, { seed: 0.5 })).toThrow(StrataError);
  });

  it("delays calls by at most delayMsMax without changing their outcome", async () => {
    const store = new FaultyObjectStore(new MemoryObjectStore(), { seed: 11, delayMsMax: 3 });
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.put(`d/${String(i).padStart(2, "0")}`, enc(String(i)))));
    expect((await collect(store.list("d/"))).length).toBe(20);
  });

  it("has a PRNG that is a pure function of its seed", () => {
    const a = mulberry32(123), b = mulberry32(123), c = mulberry32(124);
    const seqA = Array.from({ length: 5 }, a);
    expect(Array.from({ length: 5 }, b)).toEqual(seqA);
    expect(Array.from({ length: 5 }, c)).not.toEqual(seqA);
    expect(seqA.every((x) => x >= 0 && x < 1)).toBe(true);
  });
});
