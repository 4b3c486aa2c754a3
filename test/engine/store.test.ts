/**
 * Semantics of the in-process Store: streams, kv, msgId dedup, TTL, the change hook, large and
 * streamed values, and durability across reopen, index loss, reindex, a torn tail and segment
 * rolls. Time is an injected clock; nothing waits on a timer. Limits are small so that chunking,
 * paging and segment rolls happen with little data.
 */
import { randomBytes } from "node:crypto";
import { encode } from "cbor-x";
import fs from "node:fs";
import { segmentRecordsEnd } from "../../src/log/segment-end.js";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { StoreOptions } from "../../src/config.js";
import { frame } from "../../src/log/framing.js";
import { encodeRecord } from "../../src/log/record.js";
import { listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import { seqMax } from "../../src/limits.js";
import { Store } from "../../src/store.js";
import type { Change } from "../../src/types.js";
import { captureLogger, type LogEvent } from "../helpers/capture-logger.js";
import { all } from "../helpers/collect.js";

const KiB = 1024;
const LIMITS = { chunkBytes: 16 * KiB, recordBytesMax: 24 * KiB, headersBytesMax: 4 * KiB, segmentBytesMax: 64 * KiB, scanPageSize: 4, dedupWindowMs: 1000, valueBytesMax: 200 * KiB };
const T0 = 1_700_000_000_000;
const enc = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array | undefined) => (b === undefined ? undefined : Buffer.from(b).toString("hex"));

let dir: string;
let now: number;
let store: Store;
let warnings: string[];
let events: LogEvent[];
const open = (extra: Partial<StoreOptions> = {}) =>
  Store.open({ dir, limits: LIMITS, sweepTimers: false, clock: () => now, logger: captureLogger({ warnings, events }).logger, ...extra });

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-store-"));
  now = T0;
  warnings = [];
  events = [];
  store = await open();
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function* pieces(list: Uint8Array[], seen?: { pulled: number; finished: boolean }): AsyncGenerator<Uint8Array> {
  try {
    for (const p of list) {
      if (seen) seen.pulled++;
      yield p;
    }
  } finally {
    if (seen) seen.finished = true;
  }
}

/** Everything observable about some locations, with bytes as hex so reads compare exactly. */
async function dump(s: Store, streams: string[], kvs: string[]): Promise<unknown> {
  const out: Record<string, unknown> = {};
  for (const loc of streams) {
    out[loc] = { inv: s.inventory(loc), msgs: (await all(s.stream(loc).getAll())).map((m) => ({ ...m, value: hex(m.value) })) };
  }
  for (const loc of kvs) {
    out[loc] = { inv: s.inventory(loc), entries: (await all(s.kv(loc).getAll())).map((e) => ({ ...e, value: hex(e.value) })) };
  }
  for (const loc of [...streams, ...kvs]) out[`changes:${loc}`] = (await s.changesSince(loc, 0, 100_000)).map((c) => JSON.stringify(c));
  return out;
}

describe("streams", () => {
  it("appends, sets, gets, deletes and deletes all, with inventory to match", async () => {
    const s = store.stream("acct/a/chat");
    expect(await s.deleteAll()).toEqual({ count: 0, revision: 0 });
    expect(await s.append({ value: enc("one"), headers: { h: "1" } })).toEqual({ seq: 1, revision: 1, timestamp: T0 });
    expect(await s.append({ value: enc("two"), timestamp: 5 })).toEqual({ seq: 2, revision: 2, timestamp: 5 });
    expect(await s.set(10, { value: enc("ten") })).toEqual({ seq: 10, revision: 3, timestamp: T0 });
    expect((await s.append({ value: enc("eleven") })).seq).toBe(11);
    const one = await s.get(1);
    expect({ ...one, value: hex(one!.value) }).toEqual({ seq: 1, value: hex(enc("one")), headers: { h: "1" }, timestamp: T0 });
    expect((await s.get(2))!.timestamp).toBe(5);
    expect(await s.get(5)).toBeUndefined();
    expect(await s.get(12)).toBeUndefined();
    await s.set(2, { value: enc("TWO!") }); // overwrite: count same, bytes change
    expect(await s.inventory()).toMatchObject({ kind: "stream", count: 4, bytes: 3 + 4 + 3 + 6, firstSeq: 1, lastSeq: 11, revision: 5 });
    expect(await s.delete(2)).toEqual({ deleted: true, revision: 6 });
    expect(await s.delete(2)).toEqual({ deleted: false, revision: 6 });
    expect((await all(s.getAll({ startSeq: 2 }))).map((m) => m.seq)).toEqual([10, 11]);
    expect(await s.deleteAll({ endSeq: 10 })).toEqual({ count: 2, revision: 7 });
    expect(await s.deleteAll({ endSeq: 0 })).toEqual({ count: 0, revision: 7 });
    expect(await s.inventory()).toMatchObject({ count: 1, bytes: 6, firstSeq: 11, lastSeq: 11, revision: 7 });
    expect(await s.deleteAll()).toEqual({ count: 1, revision: 8 });
    const empty = await s.inventory();
    expect(empty).toMatchObject({ count: 0, bytes: 0, lastSeq: 11, revision: 8 });
    expect(empty.firstSeq).toBeUndefined();
    expect((await s.append({}, { expectedLastSeq: 11 })).seq).toBe(12); // seqs are never reused
    const never = await store.stream("never/written").inventory();
    expect(never).toMatchObject({ count: 0, lastSeq: 0, revision: 0 });
    expect(never.kind).toBeUndefined();
  });

  it("streams getAll a page at a time, seeing appends and deletes made while it iterates", async () => {
    const s = store.stream("paged");
    for (let i = 1; i <= 30; i++) await s.append({ value: enc(String(i)) });
    const spy = vi.spyOn(store.index.seqs, "getRange");
    const seen: number[] = [];
    for await (const m of s.getAll({ startSeq: 3 })) {
      if (seen.length === 0) expect(spy).toHaveBeenCalledTimes(1); // lazy: one page read so far, not the whole stream
      seen.push(m.seq);
      expect(new TextDecoder().decode(m.value)).toBe(String(m.seq));
      if (m.seq === 5) await s.delete(20);
      const last = (await s.inventory()).lastSeq;
      if (last < 40) await s.append({ value: enc(String(last + 1)) });
    }
    expect(seen).toEqual(Array.from({ length: 38 }, (_, i) => i + 3).filter((n) => n !== 20));
    const pages = spy.mock.calls.filter(([o]) => (o as { values?: boolean } | undefined)?.values !== false); // inventory's getKeys also lands here
    expect(pages.every(([o]) => o?.limit === LIMITS.scanPageSize)).toBe(true);
    expect(pages.length).toBeGreaterThanOrEqual(Math.ceil(seen.length / LIMITS.scanPageSize));
    expect(pages.length).toBeLessThanOrEqual(Math.ceil(seen.length / LIMITS.scanPageSize) + 1);
    spy.mockRestore();
  });

  it("deduplicates a msgId within the window (also across reopen) and writes again after it", async () => {
    const s = store.stream("dedup");
    const first = await s.append({ value: enc("x") }, { msgId: "m" });
    const records = store.stats().records;
    expect(await s.append({ value: enc("other") }, { msgId: "m" })).toEqual({ ...first, duplicate: true });
    expect(store.stats().records).toBe(records);
    expect(hex((await s.get(1))!.value)).toBe(hex(enc("x")));
    const race = await Promise.all([1, 2, 3].map((i) => s.append({ value: enc(`n${i}`) }, { msgId: "n" })));
    expect(new Set(race.map((r) => r.seq))).toEqual(new Set([2]));
    expect(race.filter((r) => r.duplicate)).toHaveLength(2);
    now += LIMITS.dedupWindowMs; // still inside the window
    expect((await s.append({}, { msgId: "m" })).duplicate).toBe(true);
    await store.close();
    store = await open();
    expect((await store.stream("dedup").append({}, { msgId: "n" })).duplicate).toBe(true);
    now += 1; // past the window of "m" and "n"
    const again = await store.stream("dedup").append({ value: enc("y") }, { msgId: "m" });
    expect(again).toEqual({ seq: 3, revision: 3, timestamp: now });
    expect((await store.stream("dedup").inventory()).count).toBe(3);
    await store.sweep(); // forgets old msgIds
    expect([...store.index.dedupAge.getKeys()].map((k) => k[2])).toEqual(["m"]);
  });
});

describe("kv", () => {
  it("sets, gets, deletes and lists keys in order, a page at a time", async () => {
    const kv = store.kv("acct/a/settings");
    const r1 = await kv.set("theme", enc("dark"), { headers: { by: "me" } });
    expect(r1).toEqual({ revision: 1, timestamp: T0 });
    const keys = Array.from({ length: 10 }, (_, i) => `k/${String(i).padStart(2, "0")}`);
    for (const k of keys.slice().reverse()) await kv.set(k, enc(k));
    const e = await kv.get("theme");
    expect({ ...e, value: hex(e!.value) }).toEqual({ key: "theme", value: hex(enc("dark")), headers: { by: "me" }, revision: 1, timestamp: T0 });
    expect(await kv.get("absent")).toBeUndefined();
    expect(await all(kv.keys())).toEqual([...keys, "theme"]);
    expect((await all(kv.getAll())).map((x) => [x.key, new TextDecoder().decode(x.value), x.revision])).toEqual([
      ...keys.map((k, i) => [k, k, 11 - i]),
      ["theme", "dark", 1],
    ]);
    expect(await kv.set("theme", enc("light"), { expectedRevision: 1 })).toEqual({ revision: 12, timestamp: T0 });
    expect((await kv.get("theme"))!.revision).toBe(12);
    expect(await kv.inventory()).toMatchObject({ kind: "kv", count: 11, bytes: 5 + 10 * 4, revision: 12, lastSeq: 0 });
    expect(await kv.delete("theme")).toEqual({ deleted: true, revision: 13 });
    expect(await kv.delete("theme")).toEqual({ deleted: false, revision: 13 });
    expect(await kv.get("theme")).toBeUndefined();
    expect(await kv.set("theme", enc("new"), { expectedRevision: 0 })).toMatchObject({ revision: 14 });
    expect(await kv.inventory()).toMatchObject({ count: 11, revision: 14 });
  });

  it("hides an entry at once when its TTL passes, and sweep turns it into an expire change", async () => {
    const kv = store.kv("ttl");
    const changes: Change[] = [];
    store.onChange((c) => changes.push(c));
    await kv.set("t", enc("1"), { ttlMs: 100 });
    await kv.set("u", enc("2"), { ttlMs: 100 });
    await kv.set("v", enc("3"), { ttlMs: 100 });
    await kv.set("u", enc("2b")); // overwritten without TTL: never expires
    await kv.delete("v");
    expect((await kv.get("t"))!.expiresAt).toBe(T0 + 100);
    now += 99;
    expect(await store.sweep()).toEqual({ expired: 0 });
    expect(await all(kv.keys())).toEqual(["t", "u"]);
    now += 1;
    expect(await kv.get("t")).toBeUndefined();
    expect(await all(kv.keys())).toEqual(["u"]);
    expect((await all(kv.getAll())).map((e) => e.key)).toEqual(["u"]);
    expect(await store.sweep()).toEqual({ expired: 1 });
    expect(changes.at(-1)).toEqual({ location: "ttl", kind: "kv", revision: 6, timestamp: now, op: "expire", key: "t" });
    expect(await kv.inventory()).toMatchObject({ count: 1, revision: 6 });
    expect(await store.sweep()).toEqual({ expired: 0 });
    expect(hex((await kv.get("u"))!.value)).toBe(hex(enc("2b")));
  });
});

describe("change hook", () => {
  it("reports every change in commit order with consecutive revisions, like changesSince", async () => {
    const changes: Change[] = [];
    const off = store.onChange((c) => changes.push(c));
    store.onChange(() => {
      throw new Error("a broken listener");
    });
    const s = store.stream("feed/s");
    const kv = store.kv("feed/kv");
    const results = await Promise.all([
      ...Array.from({ length: 20 }, (_, i) => s.append({ value: enc(`m${i}`) })),
      ...Array.from({ length: 10 }, (_, i) => kv.set(`k${i}`, enc(`v${i}`))),
      s.append({ value: randomBytes(LIMITS.chunkBytes + 1) }),
    ]);
    await Promise.all([s.delete(3), kv.delete("k1"), s.deleteAll({ endSeq: 5 }), kv.set("k2", enc("again"))]);
    for (const loc of ["feed/s", "feed/kv"]) {
      const mine = changes.filter((c) => c.location === loc);
      expect(mine.map((c) => c.revision)).toEqual(Array.from({ length: mine.length }, (_, i) => i + 1));
      const since = await store.changesSince(loc, 0, 1000);
      const countless = (c: Change) => (c.op === "deleteAll" ? { ...c, count: 0 } : c); // the log does not record the count
      expect(since.map((c) => JSON.stringify(countless(c)))).toEqual(mine.map((c) => JSON.stringify(countless(c))));
      expect((await store.changesSince(loc, 2, 3)).map((c) => c.revision)).toEqual([3, 4, 5]);
    }
    expect(changes).toHaveLength(20 + 10 + 1 + 4);
    for (const r of results) expect(changes.some((c) => c.revision === r.revision)).toBe(true);
    expect(changes.find((c) => c.op === "deleteAll")).toMatchObject({ endSeq: 5, count: 4 });
    expect(changes.find((c) => c.op === "set" && c.chunked)).toMatchObject({ size: LIMITS.chunkBytes + 1, seq: 21 });
    expect(warnings.filter((w) => w.includes("a broken listener")).length).toBe(changes.length);
    off();
    await s.append({});
    expect(changes).toHaveLength(35);
  });
});

describe("large values", () => {
  it("round trips values across the chunk boundary, in memory and from async sources", async () => {
    const s = store.stream("big");
    const kv = store.kv("bigkv");
    const chunked: boolean[] = [];
    store.onChange((c) => c.op === "set" && chunked.push(c.chunked));
    const sizes = [0, LIMITS.chunkBytes - 1, LIMITS.chunkBytes, LIMITS.chunkBytes + 1, 5 * LIMITS.chunkBytes, 100 * KiB + 3];
    const values = sizes.map((n) => randomBytes(n));
    for (const v of values) await s.append({ value: v });
    for (const [i, v] of values.entries()) await kv.set(`k${i}`, v);
    expect(chunked).toEqual([false, false, false, true, true, true, false, false, false, true, true, true]);
    const split = (v: Uint8Array) => [v.subarray(0, 1), v.subarray(1, 7000), v.subarray(7000, 7000), v.subarray(7000, 40_000), v.subarray(40_000)];
    const streamed = randomBytes(70 * KiB);
    expect((await s.appendFrom(pieces(split(streamed)), { headers: { a: "b" } })).seq).toBe(7);
    await s.setFrom(3, pieces(split(streamed)));
    await kv.setFrom("from", pieces(split(streamed)), { headers: { a: "b" } });
    await kv.setFrom("small", pieces([enc("ab"), enc("c")]));
    const check = async (st: Store) => {
      for (const [i, v] of values.entries()) {
        if (i !== 2) expect(hex((await st.stream("big").get(i + 1))!.value), `seq ${i + 1}`).toBe(hex(v)); // seq 3 was overwritten
        expect(hex((await st.kv("bigkv").get(`k${i}`))!.value), `key k${i}`).toBe(hex(v));
      }
      expect(hex((await st.stream("big").get(3))!.value)).toBe(hex(streamed));
      expect((await st.stream("big").get(7))).toMatchObject({ headers: { a: "b" }, value: expect.anything() });
      expect(hex((await st.stream("big").get(7))!.value)).toBe(hex(streamed));
      expect(hex((await st.kv("bigkv").get("from"))!.value)).toBe(hex(streamed));
      expect(hex((await st.kv("bigkv").get("small"))!.value)).toBe(hex(enc("abc")));
      expect((await st.stream("big").inventory()).bytes).toBe(sizes.reduce((a, b) => a + b, 0) - sizes[2]! + 2 * streamed.byteLength);
    };
    await check(store);
    await store.close();
    store = await open();
    await check(store);
  });

  it("stops a streamed value at valueBytesMax and leaves nothing visible", async () => {
    await store.stream("big").append({ value: enc("keep") });
    const before = [store.inventory("big"), store.inventory("bigkv")];
    for (const write of [
      (src: AsyncIterable<Uint8Array>) => store.stream("big").appendFrom(src),
      (src: AsyncIterable<Uint8Array>) => store.stream("big").setFrom(1, src),
      (src: AsyncIterable<Uint8Array>) => store.kv("bigkv").setFrom("x", src),
    ]) {
      const seen = { pulled: 0, finished: false };
      const err = await write(pieces(Array.from({ length: 30 }, () => randomBytes(10 * KiB)), seen)).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "TOO_LARGE" });
      expect(seen).toEqual({ pulled: LIMITS.valueBytesMax / (10 * KiB) + 1, finished: true }); // the source is closed, not drained
    }
    const failing = async function* () {
      yield randomBytes(40 * KiB);
      throw new Error("upload broke");
    };
    await expect(store.stream("big").appendFrom(failing())).rejects.toThrow("upload broke");
    expect([store.inventory("big"), store.inventory("bigkv")]).toEqual(before);
    expect(hex((await store.stream("big").get(1))!.value)).toBe(hex(enc("keep")));
  });
});

describe("durability", () => {
  const STREAMS = ["d/s1", "d/s2"];
  const KVS = ["d/kv"];
  /** A mixed history over many segments: appends, overwrites, deletes, deleteAll, chunked values, TTLs, msgIds. */
  async function populate(st: Store): Promise<void> {
    for (let i = 0; i < 60; i++) {
      const v = randomBytes(i % 7 === 0 ? 20 * KiB + i : (i * 97) % 3000);
      await Promise.all([st.stream(STREAMS[i % 2]!).append({ value: v, headers: { i: String(i) } }, { msgId: `id${i}` }), st.kv(KVS[0]!).set(`key${i % 25}`, v, i % 5 === 0 ? { ttlMs: 50 + i } : {})]);
    }
    await st.stream("d/s1").delete(7);
    await st.stream("d/s2").deleteAll({ endSeq: 10 });
    await st.stream("d/s2").set(100, { value: enc("far") });
    await st.kv("d/kv").delete("key3");
    now += 80; // some TTLs have passed
  }
  const segFiles = () => listSegmentIds(path.join(dir, "segments"));

  it("keeps everything across reopen, a deleted index, and reindex", async () => {
    await populate(store);
    const before = await dump(store, STREAMS, KVS);
    expect(segFiles().length).toBeGreaterThan(5); // the log rolled several times
    await store.close();
    store = await open();
    expect(store.recovery).toMatchObject({ replayed: 0, rebuilt: false });
    expect(await dump(store, STREAMS, KVS)).toEqual(before);
    await store.close();
    fs.rmSync(path.join(dir, "index"), { recursive: true });
    store = await open();
    expect(store.recovery.rebuilt).toBe(true);
    expect(store.recovery.replayed).toBeGreaterThan(120);
    expect(await dump(store, STREAMS, KVS)).toEqual(before);
    expect((await store.stream("d/s1").append({}, { msgId: "id58" })).duplicate).toBe(true); // dedup rebuilt too
    await store.close();
    const report = await Store.reindex({ dir, limits: LIMITS, clock: () => now });
    expect(report).toMatchObject({ rebuilt: true, rebuildReason: "requested" });
    expect(report.replayed).toBeGreaterThan(120);
    store = await open();
    expect(store.recovery.replayed).toBe(0);
    expect(await dump(store, STREAMS, KVS)).toEqual(before);
  });

  it("cuts a torn tail on reopen, reports it, and keeps appending after it", async () => {
    await populate(store);
    const before = await dump(store, STREAMS, KVS);
    const inv = store.inventory("d/s1");
    await store.close();
    const last = segFiles().at(-1)!;
    const file = segmentPath(path.join(dir, "segments"), last);
    // The active segment may be a pre-zeroed file: make it end at its last record, as a segment
    // of an older version does (torn tails inside a zero tail: test/log/zero-tail.test.ts).
    const size = segmentRecordsEnd(file);
    fs.truncateSync(file, size);
    const rec = encodeRecord({ t: "sset", loc: "d/s1", seq: inv.lastSeq + 1, rev: inv.revision + 1, ts: now, value: enc("never acked"), size: 11 });
    const half = frame(rec).subarray(0, 20);
    for (const tail of [half, randomBytes(777)]) {
      fs.appendFileSync(file, tail);
      store = await open();
      expect(store.recovery.cut).toMatchObject({ seg: last, off: size, bytes: tail.byteLength });
      expect(warnings.at(-1)).toContain(`cut ${tail.byteLength} bytes`);
      expect(events.filter((e) => e.event === "torn_tail_cut").at(-1)).toMatchObject({ level: 40, segment: last, offset: size, bytes: tail.byteLength, reason: expect.any(String) });
      expect(fs.statSync(file).size).toBe(size);
      expect(await dump(store, STREAMS, KVS)).toEqual(before);
      await store.close();
    }
    // Zeros after the last record are the zero tail of a pre-zeroed segment: the end of the log,
    // not damage (nothing cut, nothing reported); appends overwrite them.
    fs.appendFileSync(file, Buffer.alloc(64));
    store = await open();
    expect(store.recovery.cut).toBeUndefined();
    expect(await dump(store, STREAMS, KVS)).toEqual(before);
    await store.close();
    fs.truncateSync(file, size);
    // A whole record that reached the log but not the index is replayed, not cut.
    fs.appendFileSync(file, frame(rec));
    store = await open();
    expect(store.recovery).toMatchObject({ replayed: 1 });
    expect(store.recovery.cut).toBeUndefined();
    expect(hex((await store.stream("d/s1").get(inv.lastSeq + 1))!.value)).toBe(hex(enc("never acked")));
    const next = await store.stream("d/s1").append({ value: enc("after") });
    expect(next).toMatchObject({ seq: inv.lastSeq + 2, revision: inv.revision + 2 });
    await store.close();
    store = await open();
    expect(store.recovery.cut).toBeUndefined();
    expect(hex((await store.stream("d/s1").get(next.seq))!.value)).toBe(hex(enc("after")));
  });

  it("shares fsyncs between concurrent writes (group commit)", async () => {
    const before = store.stats();
    const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => store.stream("gc").append({ value: enc(String(i)) })));
    const after = store.stats();
    expect(results.map((r) => r.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(results.every((r) => r.revision === r.seq)).toBe(true);
    expect(after.records - before.records).toBe(1000);
    expect(after.fsyncs - before.fsyncs).toBeLessThan(100);
    expect(after.batches - before.batches).toBeLessThan(100);
    expect((await store.stream("gc").inventory()).count).toBe(1000);
  });
});

// Regression tests of engine bugs found while writing this suite (each comment says the fix).
describe("engine regressions", () => {
  // Fix: remember a msgId by commit time (an extra record field for the batch clock), not by the
  // caller's message timestamp, in IndexBatch.apply and BatchView.storedDedup.
  it("dedups a msgId whose message carries its own (older) timestamp", async () => {
    const s = store.stream("bug/dedup");
    const first = await s.append({ value: enc("x"), timestamp: 1000 }, { msgId: "m" });
    expect(await s.append({ value: enc("x"), timestamp: 1000 }, { msgId: "m" })).toEqual({ ...first, duplicate: true });
    expect((await s.inventory()).count).toBe(1);
  });

  // Fix: BatchView.streamDeleteAll counts what it removes (index range count + batch overlay) and
  // the sdelall record carries that count, so changesSince can report it.
  it("changesSince reports a deleteAll with the count it removed, as onChange does", async () => {
    const s = store.stream("bug/count");
    for (let i = 0; i < 3; i++) await s.append({});
    const live: Change[] = [];
    store.onChange((c) => live.push(c));
    expect(await s.deleteAll()).toMatchObject({ count: 3 });
    expect(await store.changesSince("bug/count", 3, 10)).toEqual(live);
  });

  // Fix: BatchView.append refuses (e.g. TOO_LARGE) when lastSeq is Number.MAX_SAFE_INTEGER.
  it("refuses to append past the largest seq (seqMax) rather than write a record no reader accepts", async () => {
    const s = store.stream("bug/max");
    await s.set(seqMax, {});
    expect(await s.append({}).then(() => "written", (e: { code?: string }) => e.code)).toBe("TOO_LARGE");
    expect(store.inventory("bug/max")).toMatchObject({ count: 1, lastSeq: seqMax });
  });

  // Fix: in recovery.replaySegment, a frame that passes its CRC but does not decode is not a torn
  // write (it was fully written): refuse to open with CORRUPT even in the last segment, never cut.
  it("never cuts acknowledged records that follow a record which passes its checksum but does not decode", async () => {
    await store.log.writeBatch([frame(encode(["a record from a buggy or newer writer"]))]);
    const acked = await store.stream("bug/after").append({ value: enc("acknowledged") });
    await store.close();
    fs.rmSync(path.join(dir, "index"), { recursive: true });
    const outcome = await open().then(
      async (s) => ((store = s), hex((await s.stream("bug/after").get(acked.seq))?.value)),
      (e: { code?: string }) => e.code,
    );
    expect([hex(enc("acknowledged")), "CORRUPT"]).toContain(outcome);
  });
});
