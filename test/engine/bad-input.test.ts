/**
 * Every error code the in-process engine produces, produced by a test: bad locations, keys and
 * arguments, the wrong kind, failed conditions, limits, a closed or locked store, and damaged
 * segments. Every rejected write is checked to have written NOTHING (inventories, contents and,
 * where the write is refused before reaching the log, the number of committed records).
 * FORBIDDEN and TIMEOUT belong to the NATS layer and are not produced here.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { segmentPath } from "../../src/log/segment-files.js";
import { Store } from "../../src/store.js";
import type { StoreOptions } from "../../src/config.js";
import { all } from "../helpers/collect.js";

const LIMITS = { valueBytesMax: 1000, chunkBytes: 256, headersBytesMax: 256, headersCountMax: 4, manyItemsMax: 10, msgIdBytesMax: 32, ttlMsMax: 60_000 };
const enc = (s: string) => new TextEncoder().encode(s);
const dirs: string[] = [];
let dir: string;
let store: Store;

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "strata-bad-"));
  dirs.push(d);
  return d;
}
const open = (extra: Partial<StoreOptions> = {}) => Store.open({ dir, limits: LIMITS, sweepTimers: false, ...extra });

beforeEach(async () => {
  dir = tempDir();
  store = await open();
  for (const v of ["a", "b", "c"]) await store.stream("s").append({ value: enc(v) });
  await store.kv("k").set("x", enc("1"));
  await store.kv("k").set("y", enc("2"));
});
afterEach(async () => {
  await store.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** The code of what `fn` throws or rejects with (draining async iterables), or "OK". */
async function codeOf(fn: () => unknown): Promise<string> {
  try {
    const r = fn();
    if (r instanceof Promise) await r;
    else if (r && typeof r === "object" && Symbol.asyncIterator in r) for await (const _ of r as AsyncIterable<unknown>) void _;
  } catch (err) {
    if (err instanceof StrataError) return err.code;
    throw err;
  }
  return "OK";
}

async function dump(s: Store): Promise<unknown> {
  const out: Record<string, unknown> = {};
  for (const loc of ["s", "k", "fresh", "s2"]) out[`inv:${loc}`] = s.inventory(loc);
  out.s = await all(s.stream("s").getAll());
  out.k = await all(s.kv("k").getAll());
  return out;
}

/** Runs each call, expects `code`, and checks that nothing was written. `logged` = false when chunks may reach the log. */
async function rejectsAll(code: string, calls: Array<() => unknown>, logged = false): Promise<void> {
  const before = await dump(store);
  const records = store.stats().records;
  for (const [i, call] of calls.entries()) expect(await codeOf(call), `call #${i}: ${call.toString()}`).toBe(code);
  expect(await dump(store)).toEqual(before);
  if (!logged) expect(store.stats().records).toBe(records);
}

describe("INVALID_LOCATION", () => {
  const bad: unknown[] = ["", "a b", "a//b", "/a", "a/", "a.b", "é", "a\n", `${"a/".repeat(16)}a`, "x".repeat(256), 123, null, undefined, {}, ["a"]];
  it("is thrown for every malformed location, by stream, kv and inventory", async () => {
    await rejectsAll(
      "INVALID_LOCATION",
      bad.flatMap((loc) => [() => store.stream(loc as string), () => store.kv(loc as string), () => store.inventory(loc as string)]),
    );
  });
  it("accepts the boundaries: 16 segments, 255 bytes, all allowed characters", async () => {
    for (const loc of [`${"a/".repeat(15)}a`, "x".repeat(255), "-_=aZ09/b"]) expect((await store.stream(loc).append({})).seq).toBe(1);
  });
});

describe("INVALID_KEY", () => {
  it("is thrown for every malformed key by set, get, delete and setMany items", async () => {
    const kv = store.kv("k");
    const bad: unknown[] = ["", "a b", "ä", "a\0", "k".repeat(1025), 5, null, undefined, {}];
    await rejectsAll("INVALID_KEY", bad.flatMap((key) => [() => kv.set(key as string, enc("v")), () => kv.get(key as string), () => kv.delete(key as string)]));
    const res = await kv.setMany([{ key: "a b", value: enc("v") }]);
    expect(res).toMatchObject([{ ok: false, error: { code: "INVALID_KEY" } }]);
    for (const key of ["k".repeat(1024), "a/b.c-d_e=f"]) expect(await codeOf(() => kv.set(key, enc("v")))).toBe("OK");
  });
});

describe("INVALID_ARGUMENT", () => {
  it("refuses bad seqs", async () => {
    const s = store.stream("s");
    const bad: unknown[] = [0, -1, 1.5, NaN, Infinity, "1", null, undefined, 2 ** 53, 1n];
    await rejectsAll("INVALID_ARGUMENT", bad.flatMap((seq) => [() => s.get(seq as number), () => s.set(seq as number, { value: enc("v") }), () => s.delete(seq as number), () => s.setFrom(seq as number, source([enc("v")]))]));
  });

  it("refuses bad message shapes and values", async () => {
    const s = store.stream("s");
    const shapes: unknown[] = [null, undefined, "x", 5, [], enc("raw bytes"), true];
    const values: unknown[] = ["abc", [1, 2], new ArrayBuffer(2), new Int8Array(2), new DataView(new ArrayBuffer(2)), {}, 5, null];
    await rejectsAll("INVALID_ARGUMENT", [
      ...shapes.flatMap((m) => [() => s.append(m as never), () => s.set(9, m as never)]),
      ...values.flatMap((value) => [() => s.append({ value } as never), () => s.set(9, { value } as never), () => store.kv("k").set("z", value as never)]),
      () => s.appendFrom(source(["not bytes" as never])),
      () => store.kv("k").setFrom("z", source([enc("ok"), 7 as never])),
      () => s.appendFrom(source([]), { value: enc("x") } as never),
    ]);
  });

  it("refuses unknown option names and options that are not objects", async () => {
    const s = store.stream("s");
    const kv = store.kv("k");
    const m = { value: enc("v") };
    await rejectsAll("INVALID_ARGUMENT", [
      () => s.append(m, { foo: 1 } as never),
      () => s.append(m, { seq: 4 } as never),
      () => s.append(m, "local" as never),
      () => s.append(m, null as never),
      () => s.append(m, [] as never),
      () => s.set(9, m, { msgId: "x" } as never),
      () => s.delete(1, { force: true } as never),
      () => s.deleteAll({ startSeq: 1 } as never),
      () => s.getAll({ endSeq: 1 } as never),
      () => kv.set("z", enc("v"), { ttl: 5 } as never),
      () => kv.delete("x", { expectedRevision: 1 } as never),
    ]);
  });

  it("refuses bad ack, ttl, headers, timestamp, startSeq, endSeq, expectedLastSeq, expectedRevision and msgId", async () => {
    const s = store.stream("s");
    const kv = store.kv("k");
    const m = { value: enc("v") };
    await rejectsAll("INVALID_ARGUMENT", [
      ...["remote", true, 1, null].flatMap((ack) => [() => s.append(m, { ack } as never), () => kv.set("z", enc("v"), { ack } as never), () => s.delete(1, { ack } as never)]),
      ...[0, -1, 1.5, NaN, 60_001, "10"].map((ttlMs) => () => kv.set("z", enc("v"), { ttlMs } as never)),
      ...[null, [], "h", { a: 1 }, { "": "x" }, { a: null }].flatMap((headers) => [() => s.append({ value: enc("v"), headers } as never), () => kv.set("z", enc("v"), { headers } as never)]),
      ...[-1, 1.5, "now", NaN, new Date()].map((timestamp) => () => s.append({ value: enc("v"), timestamp } as never)),
      ...[0, -1, 1.5, "1"].map((startSeq) => () => s.getAll({ startSeq } as never)),
      ...[-1, 1.5, "3"].map((endSeq) => () => s.deleteAll({ endSeq } as never)),
      ...[-1, 1.5, "1"].map((expectedLastSeq) => () => s.append(m, { expectedLastSeq } as never)),
      ...[-1, 1.5, "0"].map((expectedRevision) => () => kv.set("x", enc("v"), { expectedRevision } as never)),
      ...["", 5].map((msgId) => () => s.append(m, { msgId } as never)),
      ...["x", {}, null].flatMap((items) => [() => s.appendMany(items as never), () => s.setMany(items as never), () => kv.setMany(items as never)]),
    ]);
  });

  it("reports bad items of appendMany one by one and writes the good ones", async () => {
    const res = await store.stream("s").appendMany([{ message: { value: enc("d") } }, { message: null as never }, null as never, { message: { value: "x" as never } }]);
    expect(res.map((r) => (r.ok ? r.result.seq : r.error.code))).toEqual([4, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT"]);
    expect(store.inventory("s")).toMatchObject({ count: 4, lastSeq: 4, revision: 4 });
  });

  it("refuses bad Store.open options and inconsistent limits before creating anything", async () => {
    const fresh = path.join(tempDir(), "never-created");
    const MiB = 1024 * 1024;
    const bad: unknown[] = [
      null, {}, { dir: "" }, { dir: 5 }, { dir: fresh, id: "bad id" }, { dir: fresh, id: "" },
      { dir: fresh, limits: { nope: 1 } }, { dir: fresh, cacheBytes: -1 }, { dir: fresh, sealIntervalMs: 0 },
      ...[0, -5, 1.5, "1", NaN, 2 ** 60].map((chunkBytes) => ({ dir: fresh, limits: { chunkBytes } })),
      { dir: fresh, limits: { chunkBytes: 2 * MiB } }, // chunk + 4 KiB > recordBytesMax
      { dir: fresh, limits: { headersBytesMax: 2 * MiB } },
      { dir: fresh, limits: { segmentBytesMax: MiB } }, // less than two records
      { dir: fresh, limits: { commitBatchBytesMax: 1024 } },
      { dir: fresh, limits: { scanPageSize: 200_000 } },
      { dir: fresh, limits: { keyBytesMax: 2000 } },
    ];
    for (const options of bad) expect(await codeOf(() => Store.open(options as StoreOptions)), JSON.stringify(options)).toBe("INVALID_ARGUMENT");
    expect(fs.existsSync(fresh)).toBe(false);
  });

  // Engine bug: resolveStoreConfig ignores option names it does not know, so a typo such as
  // `sweepTimer` or `limit` silently runs with defaults. Fix: check the names with
  // validateOptionsObject at the top of resolveStoreConfig, as resolveLimits does for limits.
  it("refuses unknown Store.open option names, as it refuses unknown limits", async () => {
    const fresh = path.join(tempDir(), "never-created");
    for (const options of [{ dir: fresh, sweepTimer: false }, { dir: fresh, limit: { chunkBytes: 1 } }]) {
      expect(await codeOf(() => Store.open(options as StoreOptions).then((s) => s.close())), JSON.stringify(options)).toBe("INVALID_ARGUMENT");
    }
    expect(fs.existsSync(fresh)).toBe(false);
  });

  // The string warning callback was removed before 1.0 (warnings are log events): a caller still
  // passing one is refused like any unknown option, and told what to pass instead, rather than
  // never hearing of a warning again.
  it("refuses the removed onWarning option and says to pass logger", async () => {
    const fresh = path.join(tempDir(), "never-created");
    const onWarning = (_message: string): void => undefined;
    const opens: Array<() => Promise<unknown>> = [() => Store.open({ dir: fresh, onWarning } as StoreOptions), () => Store.reindex({ dir: fresh, onWarning } as StoreOptions)];
    for (const open of opens) {
      const err = await open().then(
        async (s) => {
          if (s instanceof Store) await s.close();
          return "opened";
        },
        (e: unknown) => e,
      );
      expect(StrataError.is(err, "INVALID_ARGUMENT"), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/unknown Store\.open option "onWarning".*pass logger/);
    }
    expect(fs.existsSync(fresh)).toBe(false);
  });
});

describe("WRONG_KIND", () => {
  it("refuses kv reads and writes on a stream, and stream reads and writes on a kv", async () => {
    const kvOnStream = store.kv("s");
    const streamOnKv = store.stream("k");
    await rejectsAll("WRONG_KIND", [
      () => kvOnStream.set("x", enc("v")), () => kvOnStream.get("x"), () => kvOnStream.delete("x"), () => kvOnStream.keys(), () => kvOnStream.getAll(),
      () => kvOnStream.setFrom("x", source([enc("v")])),
      () => streamOnKv.append({ value: enc("v") }), () => streamOnKv.set(1, {}), () => streamOnKv.get(1), () => streamOnKv.delete(1),
      () => streamOnKv.deleteAll(), () => streamOnKv.getAll(), () => streamOnKv.appendFrom(source([enc("v")])), () => streamOnKv.setFrom(1, source([enc("v")])),
    ]);
    expect(await kvOnStream.setMany([{ key: "x", value: enc("v") }])).toMatchObject([{ ok: false, error: { code: "WRONG_KIND" } }]);
    expect(await streamOnKv.appendMany([{ message: {} }])).toMatchObject([{ ok: false, error: { code: "WRONG_KIND" } }]);
  });

  it("leaves nothing visible when a chunked value is refused for the wrong kind", async () => {
    await rejectsAll("WRONG_KIND", [() => store.kv("s").set("big", new Uint8Array(900)), () => store.stream("k").append({ value: new Uint8Array(900) })], true);
  });

  it("lets exactly one kind win when both race for a fresh location in one batch", async () => {
    const [a, b] = await Promise.allSettled([store.stream("fresh").append({}), store.kv("fresh").set("x", enc("v"))]);
    const codes = [a, b].map((r) => (r.status === "fulfilled" ? "OK" : (r.reason as StrataError).code)).sort();
    expect(codes).toEqual(["OK", "WRONG_KIND"]);
    expect(store.inventory("fresh")).toMatchObject({ kind: a.status === "fulfilled" ? "stream" : "kv", count: 1, revision: 1 });
  });
});

describe("CONFLICT", () => {
  it("enforces expectedLastSeq, and lets exactly one of several racing appends win", async () => {
    const s = store.stream("s2");
    await rejectsAll("CONFLICT", [() => s.append({}, { expectedLastSeq: 1 })]);
    expect((await s.append({}, { expectedLastSeq: 0 })).seq).toBe(1);
    await s.set(5, {});
    await rejectsAll("CONFLICT", [() => s.append({}, { expectedLastSeq: 0 }), () => s.append({}, { expectedLastSeq: 1 }), () => s.append({}, { expectedLastSeq: 6 })]);
    expect((await s.append({}, { expectedLastSeq: 5 })).seq).toBe(6);
    const race = await Promise.allSettled(Array.from({ length: 5 }, () => s.append({}, { expectedLastSeq: 6 })));
    expect(race.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(race.filter((r) => r.status === "rejected").every((r) => StrataError.is((r as PromiseRejectedResult).reason, "CONFLICT"))).toBe(true);
    expect(store.inventory("s2")).toMatchObject({ lastSeq: 7, count: 4, revision: 4 });
  });

  it("returns the original of a repeated msgId rather than a CONFLICT for its stale expectedLastSeq", async () => {
    const s = store.stream("s");
    const first = await s.append({ value: enc("once") }, { msgId: "m1", expectedLastSeq: 3 });
    const again = await s.append({ value: enc("once") }, { msgId: "m1", expectedLastSeq: 3 });
    expect(again).toEqual({ ...first, duplicate: true });
  });

  it("enforces expectedRevision, where 0 means the key must not exist", async () => {
    const kv = store.kv("k");
    const x = (await kv.get("x"))!.revision;
    await rejectsAll("CONFLICT", [
      () => kv.set("x", enc("v"), { expectedRevision: 0 }),
      () => kv.set("x", enc("v"), { expectedRevision: x + 1 }),
      () => kv.set("nope", enc("v"), { expectedRevision: 1 }),
    ]);
    const r = await kv.set("x", enc("v2"), { expectedRevision: x });
    await rejectsAll("CONFLICT", [() => kv.set("x", enc("v3"), { expectedRevision: x })]);
    await kv.delete("x");
    await rejectsAll("CONFLICT", [() => kv.set("x", enc("v3"), { expectedRevision: r.revision })]);
    expect(await codeOf(() => kv.set("x", enc("v3"), { expectedRevision: 0 }))).toBe("OK");
  });
});

describe("TOO_LARGE", () => {
  it("refuses values, headers, msgIds and batches over their limits, and accepts the boundaries", async () => {
    const s = store.stream("s");
    const kv = store.kv("k");
    const big = new Uint8Array(1001);
    const fiveHeaders = { a: "1", b: "2", c: "3", d: "4", e: "5" };
    const fatHeaders = { h: "x".repeat(256) };
    const eleven = Array.from({ length: 11 }, () => ({ message: { value: enc("v") } }));
    await rejectsAll("TOO_LARGE", [
      () => s.append({ value: big }), () => s.set(9, { value: big }), () => kv.set("z", big),
      () => s.append({ headers: fiveHeaders }), () => s.append({ headers: fatHeaders }), () => kv.set("z", enc("v"), { headers: fatHeaders }),
      () => s.append({}, { msgId: "m".repeat(33) }),
      () => s.appendMany(eleven), () => s.setMany(eleven.map((e, i) => ({ seq: i + 1, ...e }))),
      () => kv.setMany(eleven.map((_, i) => ({ key: `k${i}`, value: enc("v") }))),
    ]);
    expect(await s.appendMany([{ message: { value: big } }])).toMatchObject([{ ok: false, error: { code: "TOO_LARGE" } }]);
    expect(await codeOf(() => s.append({ value: new Uint8Array(1000), headers: { a: "1", b: "2", c: "3", d: "x".repeat(249) } }, { msgId: "m".repeat(32) }))).toBe("OK");
    expect((await s.appendMany(eleven.slice(1))).every((r) => r.ok)).toBe(true);
  });

  it("refuses a streamed value over the limit mid-stream and leaves nothing visible", async () => {
    const pieces = () => source(Array.from({ length: 8 }, () => new Uint8Array(200)));
    await rejectsAll("TOO_LARGE", [() => store.stream("s").appendFrom(pieces()), () => store.stream("s").setFrom(2, pieces()), () => store.kv("k").setFrom("x", pieces())], true);
  });
});

describe("CLOSED and UNAVAILABLE", () => {
  it("refuses every use after close, but finishes writes already in flight", async () => {
    const s = store.stream("s");
    const kv = store.kv("k");
    const inflight = s.append({ value: enc("last") });
    await store.close();
    expect((await inflight).seq).toBe(4);
    for (const call of [
      () => store.stream("s"), () => store.kv("k"), () => store.inventory("s"), () => store.changesSince("s", 0, 10),
      () => s.append({}), () => s.set(1, {}), () => s.get(1), () => s.delete(1), () => s.deleteAll(), () => s.getAll(), () => s.inventory(),
      () => kv.set("x", enc("v")), () => kv.get("x"), () => kv.delete("x"), () => kv.keys(), () => kv.getAll(),
    ]) {
      expect(await codeOf(call), call.toString()).toBe("CLOSED");
    }
    expect(await s.appendMany([{ message: {} }])).toMatchObject([{ ok: false, error: { code: "CLOSED" } }]);
    await store.close(); // a second close is harmless
    store = await open();
    expect(store.inventory("s")).toMatchObject({ count: 4, lastSeq: 4 });
  });

  it("refuses a second open of the same directory in one process, and a directory held by a live process", async () => {
    const err = await Store.open({ dir }).catch((e: unknown) => e);
    expect(StrataError.is(err, "UNAVAILABLE") && err.retryable).toBe(true);
    expect((await store.stream("s").get(1))?.value).toEqual(enc("a"));
    await store.close();
    fs.writeFileSync(path.join(dir, "LOCK"), String(process.ppid));
    expect(await codeOf(() => open())).toBe("UNAVAILABLE");
    const dead = spawnSync(process.execPath, ["-e", ""]).pid;
    fs.writeFileSync(path.join(dir, "LOCK"), String(dead));
    store = await open(); // a lock left by a dead process is taken over
    expect(store.inventory("s").count).toBe(3);
  });

  it("refuses writes with a retryable UNAVAILABLE when the write queue is full", async () => {
    await store.close();
    store = await open({ limits: { ...LIMITS, writeQueueMax: 5 } });
    const res = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => store.stream("s2").append({ value: enc(String(i)) })));
    const ok = res.filter((r) => r.status === "fulfilled").length;
    const refused = res.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason as StrataError);
    expect(ok).toBeGreaterThanOrEqual(5);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.every((e) => e.code === "UNAVAILABLE" && e.retryable)).toBe(true);
    expect(store.inventory("s2")).toMatchObject({ count: ok, lastSeq: ok, revision: ok });
  });
});

describe("CORRUPT and IO", () => {
  /** Fills several segments; returns the pointer of seq 1 of stream "seg" (in the first segment). */
  async function multiSegment(): Promise<{ seg: number; off: number; len: number }> {
    await store.close();
    store = await open({ limits: { ...LIMITS, chunkBytes: 1024, recordBytesMax: 8192, headersBytesMax: 1024, segmentBytesMax: 16384 } });
    for (let i = 0; i < 40; i++) await store.stream("seg").append({ value: new Uint8Array(900).fill(i) });
    const e = store.index.seqs.get([store.index.locs.get("seg")!.id, 1])!;
    expect(store.log.activeId).toBeGreaterThan(e[0] + 1);
    return { seg: e[0], off: e[1], len: e[2] };
  }
  const flip = (file: string, at: number) => {
    const fd = fs.openSync(file, "r+");
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0]! ^= 0x40;
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
  };

  it("opens (and reindexes) a log with a damaged record in a non-last segment, skipping only that record, and recovers it once repaired", async () => {
    const ptr = await multiSegment();
    await store.close();
    const file = segmentPath(path.join(dir, "segments"), ptr.seg);
    const original = fs.readFileSync(file);
    flip(file, ptr.off + 8 + (ptr.len >> 1));
    // With its index intact the store opens (it does not rescan old segments), but the read fails.
    store = await open();
    expect(await codeOf(() => store.stream("seg").get(1))).toBe("CORRUPT");
    expect(await codeOf(() => store.stream("seg").getAll())).toBe("CORRUPT");
    expect((await store.stream("seg").get(40))!.value[0]).toBe(39);
    await store.close();
    // Without an index the log must be replayed: the damaged record is skipped and reported, never
    // cut, and every record after it is kept (issue #8 item 2).
    fs.rmSync(path.join(dir, "index"), { recursive: true });
    store = await open();
    expect(store.recovery.damaged).toEqual([expect.objectContaining({ seg: ptr.seg, off: ptr.off, bytes: ptr.len })]);
    expect(store.inventory("seg")).toMatchObject({ count: 39, lastSeq: 40 });
    expect(await store.stream("seg").get(1)).toBeUndefined();
    expect((await store.stream("seg").get(2))!.value[0]).toBe(1);
    await store.close();
    expect((await Store.reindex({ dir, limits: LIMITS })).damaged).toHaveLength(1);
    expect(fs.statSync(file).size).toBe(original.byteLength);
    fs.writeFileSync(file, original);
    await Store.reindex({ dir, limits: LIMITS });
    store = await open();
    expect(store.inventory("seg")).toMatchObject({ count: 40, lastSeq: 40 });
    expect((await store.stream("seg").get(1))!.value[0]).toBe(0);
  });

  it("throws CORRUPT, never garbage, when indexed bytes are damaged under an open store", async () => {
    await store.stream("s").append({ value: new Uint8Array(700).fill(9) }); // chunked: 3 chunk records
    const segs = path.join(dir, "segments");
    const p = (e: number[]) => ({ seg: e[0]!, off: e[1]!, len: e[2]! });
    const sPtr = p(store.index.seqs.get([store.index.locs.get("s")!.id, 2])!);
    const kPtr = p(store.index.kvs.get([store.index.locs.get("k")!.id, "y"])!);
    const bigRec = await store.readRecord(p(store.index.seqs.get([store.index.locs.get("s")!.id, 4])!));
    const chunk = bigRec.t === "sset" ? bigRec.chunks![1]! : undefined;
    for (const ptr of [sPtr, kPtr, chunk!]) flip(segmentPath(segs, ptr.seg), ptr.off + ptr.len - 2);
    expect(await codeOf(() => store.stream("s").get(2))).toBe("CORRUPT");
    expect(await codeOf(() => store.kv("k").get("y"))).toBe("CORRUPT");
    expect(await codeOf(() => store.stream("s").get(4))).toBe("CORRUPT");
    expect(await codeOf(() => store.kv("k").getAll())).toBe("CORRUPT");
    expect((await store.stream("s").get(1))!.value).toEqual(enc("a"));
  });

  it("throws CORRUPT for a missing segment and IO for one that cannot be read", async () => {
    const ptr = await multiSegment();
    await store.close();
    store = await open(); // a fresh store has no read descriptor cached yet
    const file = segmentPath(path.join(dir, "segments"), ptr.seg);
    fs.renameSync(file, `${file}.away`);
    expect(await codeOf(() => store.stream("seg").get(1))).toBe("CORRUPT");
    fs.mkdirSync(file); // opens, but every read fails with EISDIR
    const err = await store.stream("seg").get(1).catch((e: unknown) => e);
    expect(StrataError.is(err, "IO") && err.retryable).toBe(true);
    fs.rmdirSync(file);
    fs.renameSync(`${file}.away`, file);
  });
});

async function* source(pieces: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of pieces) yield p;
}
