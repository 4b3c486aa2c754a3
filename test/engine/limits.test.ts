/**
 * Per-location limits in the in-process Store (docs/compaction.md, "Per-location limits"):
 * validation, persistence (reopen, reindex), enforcement in the same commit (discard old/new,
 * maxMsgBytes, kv keys and bytes, default TTL, denyDelete), the maxAgeMs sweep, per-stream dedup
 * windows, and what watchers see. Time is an injected clock; nothing waits on a timer.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { StoreOptions } from "../../src/config.js";
import { applyRecords } from "../../src/index/apply.js";
import { LmdbIndex } from "../../src/index/lmdb-index.js";
import { Store } from "../../src/store.js";
import type { Change, LocationLimits } from "../../src/types.js";
import { all } from "../helpers/collect.js";

const LIMITS = { segmentBytesMax: 64 * 1024, recordBytesMax: 24 * 1024, chunkBytes: 16 * 1024, headersBytesMax: 4 * 1024, scanPageSize: 4, dedupWindowMs: 1000, ageSweepMsgsMax: 64 };
const T0 = 1_700_000_000_000;
const b = (n: number, fill = 1) => new Uint8Array(n).fill(fill);

let dir: string;
let now: number;
let store: Store;
const open = (extra: Partial<StoreOptions> = {}) => Store.open({ dir, limits: LIMITS, sweepTimers: false, clock: () => now, ...extra });

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-limits-"));
  now = T0;
  store = await open();
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const seqs = async (loc: string) => (await all(store.stream(loc).getAll())).map((m) => m.seq);
const code = (p: Promise<unknown>) => p.then(() => "ok", (e: { code?: string }) => e.code ?? String(e));

describe("validation", () => {
  const bad: Array<[string, "stream" | "kv", unknown]> = [
    ["negative", "stream", { maxMsgs: -1 }],
    ["zero maxMsgs", "stream", { maxMsgs: 0 }],
    ["fraction", "stream", { maxBytes: 1.5 }],
    ["string", "kv", { maxMsgs: "10" }],
    ["unknown field", "stream", { maxMessages: 10 }],
    ["ttlMs on a stream", "stream", { ttlMs: 1000 }],
    ["maxAgeMs on a kv", "kv", { maxAgeMs: 1000 }],
    ["dedupWindowMs on a kv", "kv", { dedupWindowMs: 1000 }],
    ['discard "old" on a kv', "kv", { discard: "old" }],
    ["bad discard", "stream", { discard: "oldest" }],
    ["denyDelete not boolean", "stream", { denyDelete: 1 }],
    ["maxMsgBytes > maxBytes", "stream", { maxBytes: 10, maxMsgBytes: 11 }],
    ["absurd maxAgeMs", "stream", { maxAgeMs: Number.MAX_SAFE_INTEGER }],
    ["absurd dedupWindowMs", "stream", { dedupWindowMs: 365 * 24 * 3600_000 }],
    ["not an object", "stream", 5],
    ["an array", "kv", []],
    ["null", "kv", null],
  ];
  for (const [what, kind, limits] of bad) {
    it(`refuses ${what} with INVALID_ARGUMENT and writes nothing`, async () => {
      const h = kind === "stream" ? store.stream("a/x") : store.kv("a/x");
      const err = await h.config(limits as LocationLimits).catch((e: unknown) => e as { code: string; message: string });
      expect((err as { code: string }).code).toBe("INVALID_ARGUMENT");
      expect((err as { message: string }).message.length).toBeGreaterThan(20);
      expect((await h.inventory()).kind).toBeUndefined();
    });
  }

  it("normalises: absent fields and denyDelete false are left out, order is fixed", async () => {
    const got = await store.stream("a/s").config({ denyDelete: false, maxBytes: 100, discard: "old", maxMsgs: 5, maxAgeMs: undefined });
    expect(Object.entries(got)).toEqual([
      ["maxMsgs", 5],
      ["maxBytes", 100],
      ["discard", "old"],
    ]);
  });

  it("a config of the other kind is WRONG_KIND; a config on a new location creates it", async () => {
    await store.kv("a/k").config({ maxMsgs: 2 });
    const inv = await store.kv("a/k").inventory();
    expect(inv.kind).toBe("kv");
    expect(inv.revision).toBe(0);
    expect(inv.limits.maxMsgs).toBe(2);
    expect(await code(store.stream("a/k").config({ maxMsgs: 2 }))).toBe("WRONG_KIND");
    expect(await code(store.stream("a/k").append({ value: b(1) }))).toBe("WRONG_KIND");
  });
});

describe("streams", () => {
  it("discard old with maxMsgs drops the oldest in the same commit; watchers see the deleteAll", async () => {
    const changes: Change[] = [];
    store.onChange((c) => changes.push(c));
    const s = store.stream("a/s");
    await s.config({ maxMsgs: 3 });
    for (let i = 0; i < 5; i++) await s.append({ value: b(1) });
    expect(await seqs("a/s")).toEqual([3, 4, 5]);
    const inv = await s.inventory();
    expect([inv.count, inv.firstSeq, inv.lastSeq]).toEqual([3, 3, 5]);
    expect(changes.filter((c) => c.op === "deleteAll").map((c) => c.op === "deleteAll" && [c.endSeq, c.count])).toEqual([
      [1, 1],
      [2, 1],
    ]);
    // A watcher replaying the feed holds what the stream holds.
    const held = new Set<number>();
    for (const c of changes) {
      if (c.kind !== "stream") continue;
      if (c.op === "set") held.add(c.seq);
      if (c.op === "deleteAll") for (const q of [...held]) if (q <= c.endSeq) held.delete(q);
    }
    expect([...held].sort((x, y) => x - y)).toEqual([3, 4, 5]);
    // The feed read back from the log says the same.
    const feed = await store.changesSince("a/s", 0, 100);
    expect(feed.map((c) => c.op)).toEqual(changes.map((c) => c.op));
  });

  it("appends in one batch stay exact (maxBytes, discard old)", async () => {
    const s = store.stream("a/s");
    await s.config({ maxBytes: 10 });
    const res = await s.appendMany([3, 4, 5, 2, 6].map((n) => ({ message: { value: b(n) } })));
    expect(res.every((r) => r.ok)).toBe(true);
    // 3+4+5+2+6: keep the newest whose sum fits in 10 → 2+6 = 8 (adding 5 would make 13).
    expect(await seqs("a/s")).toEqual([4, 5]);
    expect((await s.inventory()).bytes).toBe(8);
  });

  it("discard new refuses with LIMIT and writes nothing", async () => {
    const s = store.stream("a/s");
    await s.config({ maxMsgs: 2, maxBytes: 10, discard: "new" });
    await s.append({ value: b(4) });
    await s.append({ value: b(4) });
    const before = await s.inventory();
    expect(await code(s.append({ value: b(1) }))).toBe("LIMIT");
    // Overwriting with fewer bytes passes; more bytes past maxBytes does not.
    await s.set(1, { value: b(2) });
    expect(await code(s.set(1, { value: b(7) }))).toBe("LIMIT");
    const after = await s.inventory();
    expect([after.count, after.bytes, after.lastSeq, after.revision]).toEqual([2, 6, 2, before.revision + 1]);
  });

  it("maxMsgBytes and a value larger than maxBytes are refused whatever discard says", async () => {
    const s = store.stream("a/s");
    await s.config({ maxMsgBytes: 8, maxBytes: 8 });
    expect(await code(s.append({ value: b(9) }))).toBe("LIMIT");
    await s.config({ maxBytes: 8 });
    expect(await code(s.append({ value: b(9) }))).toBe("LIMIT");
    expect((await s.inventory()).revision).toBe(0);
  });

  it("lowering a limit drops what no longer fits, in the config's own batch", async () => {
    const s = store.stream("a/s");
    for (let i = 0; i < 10; i++) await s.append({ value: b(2) });
    await s.delete(3);
    const changes: Change[] = [];
    store.onChange((c) => changes.push(c));
    await s.config({ maxMsgs: 4 });
    expect(await seqs("a/s")).toEqual([7, 8, 9, 10]);
    expect(changes).toMatchObject([{ op: "deleteAll", endSeq: 6, count: 5 }]);
    // discard new drops nothing when lowered.
    await s.config({ maxMsgs: 2, discard: "new" });
    expect(await seqs("a/s")).toEqual([7, 8, 9, 10]);
    expect(await code(s.append({ value: b(1) }))).toBe("LIMIT");
  });

  it("denyDelete refuses delete and deleteAll with FORBIDDEN; limits still drop", async () => {
    const s = store.stream("a/s");
    await s.config({ denyDelete: true, maxMsgs: 2 });
    for (let i = 0; i < 3; i++) await s.append({ value: b(1) });
    expect(await code(s.delete(2))).toBe("FORBIDDEN");
    expect(await code(s.deleteAll())).toBe("FORBIDDEN");
    expect(await seqs("a/s")).toEqual([2, 3]);
  });

  it("denyDelete is sticky: no config lifts it or drops more, and set() cannot overwrite", async () => {
    const s = store.stream("a/s");
    await s.config({ denyDelete: true, maxMsgs: 5, discard: "new" });
    for (let i = 0; i < 3; i++) await s.append({ value: b(1) });
    for (const bad of [{}, { maxMsgs: 5, discard: "new" as const }, { denyDelete: true, maxMsgs: 2, discard: "new" as const }, { denyDelete: true, maxMsgs: 5 }, { denyDelete: true, maxMsgs: 5, discard: "new" as const, maxAgeMs: 1000 }, { denyDelete: true, maxMsgs: 5, discard: "new" as const, maxBytes: 10 }]) {
      expect(await code(s.config(bad))).toBe("FORBIDDEN");
    }
    expect(await code(s.set(2, { value: b(2) }))).toBe("FORBIDDEN");
    expect(await seqs("a/s")).toEqual([1, 2, 3]);
    expect((await s.inventory()).limits).toMatchObject({ denyDelete: true, maxMsgs: 5, discard: "new" });
    // Loosening is allowed: a higher maxMsgs, or none.
    await s.config({ denyDelete: true, maxMsgs: 10, discard: "new" });
    await s.config({ denyDelete: true, discard: "new" });
    await s.set(9, { value: b(3) }); // a new seq is not an overwrite
    expect(await seqs("a/s")).toEqual([1, 2, 3, 9]);
  });

  it("maxAgeMs: the sweep drops messages in seq order while the oldest is too old", async () => {
    const s = store.stream("a/s");
    await s.config({ maxAgeMs: 1000 });
    await s.append({ value: b(1) });
    now += 500;
    await s.append({ value: b(1) });
    await s.append({ value: b(1), timestamp: T0 - 10_000 }); // old, but behind a young one
    now += 600;
    const changes: Change[] = [];
    store.onChange((c) => changes.push(c));
    await store.sweep();
    expect(await seqs("a/s")).toEqual([2, 3]);
    expect(changes).toMatchObject([{ op: "deleteAll", endSeq: 1, count: 1 }]);
    now += 1000;
    await store.sweep();
    expect(await seqs("a/s")).toEqual([]);
  });

  it("maxAgeMs: a write between the sweep's read and its drop makes the drop a no-op (nothing young is dropped)", async () => {
    const s = store.stream("a/s");
    await s.config({ maxAgeMs: 1000 });
    await s.append({ value: b(1) });
    await s.append({ value: b(1) });
    now += 2000;
    // The sweep reads seqs 1 and 2 as old; the overwrite of seq 1 is queued before its drop.
    const sweeping = store.sweep();
    const fresh = s.set(1, { value: b(2) });
    await Promise.all([sweeping, fresh]);
    expect(await seqs("a/s")).toEqual([1, 2]);
    expect((await s.get(1))?.timestamp).toBe(now);
    // The next sweep drops only what is old and stops at the young seq 1.
    await store.sweep();
    expect(await seqs("a/s")).toEqual([1, 2]);
    now += 2000;
    await store.sweep();
    expect(await seqs("a/s")).toEqual([]);
  });

  it("maxAgeMs sweep work is bounded and the rest is dropped by later sweeps", async () => {
    const s = store.stream("a/s");
    await s.config({ maxAgeMs: 10 });
    await s.appendMany(Array.from({ length: 150 }, () => ({ message: { value: b(1) } })));
    now += 100;
    await store.sweep();
    const left = (await s.inventory()).count;
    expect(left).toBe(150 - LIMITS.ageSweepMsgsMax);
    await store.sweep();
    await store.sweep();
    expect((await s.inventory()).count).toBe(0);
  });

  it("a per-stream dedup window replaces the store's, for lookups and pruning; 0 turns dedup off", async () => {
    const s = store.stream("a/s");
    await s.config({ dedupWindowMs: 10_000 });
    const first = await s.append({ value: b(1) }, { msgId: "m" });
    now += 5000; // past the store's window (1000), inside the stream's
    await store.sweep();
    expect(await s.append({ value: b(1) }, { msgId: "m" })).toMatchObject({ seq: first.seq, duplicate: true });
    now += 6000;
    await store.sweep();
    expect((await s.append({ value: b(1) }, { msgId: "m" })).duplicate).toBeUndefined();
    const o = store.stream("a/o");
    await o.config({ dedupWindowMs: 0 });
    await o.append({ value: b(1) }, { msgId: "m" });
    expect((await o.append({ value: b(1) }, { msgId: "m" })).seq).toBe(2);
  });
});

describe("kv", () => {
  it("maxMsgs counts keys, maxBytes value bytes (discard new); overwrites and deletes make room", async () => {
    const kv = store.kv("a/k");
    await kv.config({ maxMsgs: 2, maxBytes: 10, maxMsgBytes: 6 });
    await kv.set("a", b(4));
    await kv.set("b", b(4));
    expect(await code(kv.set("c", b(1)))).toBe("LIMIT");
    expect(await code(kv.set("a", b(7)))).toBe("LIMIT"); // maxMsgBytes
    await kv.set("a", b(6)); // 6 + 4 = 10 fits
    expect(await code(kv.set("b", b(5)))).toBe("LIMIT"); // 6 + 5 > 10
    await kv.delete("b");
    await kv.set("c", b(4));
    expect((await all(kv.keys())).sort()).toEqual(["a", "c"]);
    const inv = await kv.inventory();
    expect([inv.count, inv.bytes]).toEqual([2, 10]);
  });

  it("ttlMs is the default TTL of a set without one", async () => {
    const kv = store.kv("a/k");
    await kv.config({ ttlMs: 1000 });
    await kv.set("d", b(1));
    await kv.set("own", b(1), { ttlMs: 5000 });
    expect((await kv.get("d"))?.expiresAt).toBe(T0 + 1000);
    now += 1001;
    expect(await kv.get("d")).toBeUndefined();
    expect(await kv.get("own")).toBeDefined();
  });

  it("denyDelete refuses delete; TTL expiry still removes", async () => {
    const kv = store.kv("a/k");
    await kv.config({ denyDelete: true, ttlMs: 10 });
    await kv.set("x", b(1));
    expect(await code(kv.delete("x"))).toBe("FORBIDDEN");
    now += 20;
    expect((await store.sweep()).expired).toBe(1);
  });
});

describe("persistence", () => {
  it("config, drops and usage survive a reopen and a forced reindex", async () => {
    const s = store.stream("a/s");
    await s.config({ maxMsgs: 3, dedupWindowMs: 5000, maxAgeMs: 100_000 });
    for (let i = 0; i < 6; i++) await s.append({ value: b(i + 1) }, { msgId: `m${i}` });
    await store.kv("a/k").config({ maxMsgs: 1, ttlMs: 50_000 });
    const snap = async () => ({ s: await store.stream("a/s").inventory(), k: await store.kv("a/k").inventory(), seqs: await seqs("a/s") });
    const want = await snap();
    expect(want.seqs).toEqual([4, 5, 6]);
    await store.close();
    store = await open();
    expect(await snap()).toEqual(want);
    await store.close();
    await Store.reindex({ dir, limits: LIMITS, clock: () => now });
    store = await open();
    expect(await snap()).toEqual(want);
    // The config is still enforced, and the per-stream window still finds a msgId past the store's.
    now += 2000;
    expect((await store.stream("a/s").append({ value: b(1) }, { msgId: "m5" })).duplicate).toBe(true);
    await store.stream("a/s").append({ value: b(1) });
    expect(await seqs("a/s")).toEqual([5, 6, 7]);
    expect(await code(store.kv("a/k").set("y", b(1)).then(() => store.kv("a/k").set("z", b(1))))).toBe("LIMIT");
  });

  it("sdel and sdelall raise lastSeq on replay (a compacted log may lack the deleted sets)", async () => {
    await store.close();
    const idx = LmdbIndex.open(path.join(dir, "idx2"), { metaCacheMax: 16 });
    try {
      const ptr = { seg: 1, off: 16, len: 10 };
      applyRecords(idx, [{ rec: { t: "sdel", loc: "a/s", seq: 7, rev: 3, ts: T0 }, ptr }], { replay: true, dedupWindowMs: 1000, now: T0 }, { seg: 1, off: 26 });
      expect(idx.meta("a/s")?.lastSeq).toBe(7);
      applyRecords(idx, [{ rec: { t: "sdelall", loc: "a/s", endSeq: 12, rev: 4, ts: T0 }, ptr: { seg: 1, off: 26, len: 10 } }], { replay: true, dedupWindowMs: 1000, now: T0 }, { seg: 1, off: 36 });
      expect(idx.meta("a/s")?.lastSeq).toBe(12);
    } finally {
      await idx.close();
      store = await open();
    }
  });
});
