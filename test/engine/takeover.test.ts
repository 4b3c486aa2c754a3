/**
 * The engine side of a takeover (Store.importLocations, docs/failover.md "Foreign pointers"):
 * a store imports locations from another server's object-store data (a directory tier in a temp
 * dir, real files) and serves them read for read as the origin did, with no value copied; writes
 * continue its seqs, revisions, msgId dedup and TTLs; the cut is respected; restart, reindex and a
 * restore of an empty disk redo the imports; moves chain (A→B→C with no checkpoint at B, A→B→A).
 */
import { encode } from "cbor-x";
import fs from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { FOREIGN_SEG_SPAN } from "../../src/index/foreign-logs.js";
import { decodeRecord, encodeRecord, type ImportRecord } from "../../src/log/record.js";
import { Store } from "../../src/store.js";
import { checkpointsPrefix, segmentKey } from "../../src/tier/segment-keys.js";
import { DirObjectStore } from "../../src/tier/dir-store.js";
import { LIMITS, LOCS, World, bytes, dump, enc, shipAll, workload } from "./takeover-helpers.js";

let w: World;
beforeEach(() => {
  w = new World();
});
afterEach(async () => {
  await w.dispose();
});

const { streams, kvs } = LOCS("t");
const ITEMS = (from: string, cut: number, epoch = 1) => [...streams, ...kvs].map((location) => ({ location, from, cut, epoch }));

/** A writes the workload (optionally with a checkpoint part way) and ships it; returns its dump and last segment. */
async function origin(opts: { checkpoint: boolean }): Promise<{ want: Record<string, unknown>; cut: number }> {
  const a = await w.store("a");
  await workload(a, w, "t");
  if (opts.checkpoint) {
    await shipAll(a);
    await a.tier!.checkpoint();
    // More after the checkpoint: the import reads the checkpoint and then the segments after it.
    await a.stream("t/stream").append({ value: enc("after checkpoint") }, { msgId: "id-after" });
    await a.kv("t/kv").set("after", enc("ckpt"));
    await a.stream("t/stream").delete(4);
  }
  const want = await dump(a, streams, kvs);
  const cut = await shipAll(a);
  await w.close(a);
  return { want, cut };
}

describe("import", () => {
  for (const checkpoint of [false, true]) {
    it(`B serves what A served and continues it (${checkpoint ? "with" : "without"} a checkpoint)`, async () => {
      const { want, cut } = await origin({ checkpoint });
      const b = await w.store("b");
      expect(await b.lastSegmentOf("a")).toBe(cut);
      const imported = await b.importLocations(ITEMS("a", cut));
      expect(imported.map((i) => [i.location, i.kind])).toEqual([
        ["t/stream", "stream"],
        ["t/kv", "kv"],
      ]);
      expect(imported.every((i) => i.ptr.seg < FOREIGN_SEG_SPAN)).toBe(true); // the import record is in B's own log
      expect(await dump(b, streams, kvs)).toEqual(want);
      // Nothing of A's values was copied: B's log holds only the import records.
      expect(b.log.activeSize).toBeLessThan(1024);
      expect(b.inventory("t/noise").count).toBe(0);
      if (checkpoint) expect(b.importer!.stats.checkpointsRead).toBe(1);

      // B continues: seqs and revisions follow A's, A's msgIds dedup, TTLs expire.
      const st = b.stream("t/stream");
      const inv = b.inventory("t/stream");
      const next = await st.append({ value: enc("on b") });
      expect(next).toMatchObject({ seq: inv.lastSeq + 1, revision: inv.revision + 1 });
      const dup = await st.append({ value: enc("again") }, { msgId: "id-5" });
      expect(dup.seq).toBe(5);
      expect(b.inventory("t/stream").revision).toBe(inv.revision + 1);
      const kv = b.kv("t/kv");
      const a = await kv.get("a");
      await expect(kv.set("a", enc("x"), { expectedRevision: a!.revision - 1 })).rejects.toMatchObject({ code: "CONFLICT" });
      expect((await kv.set("a", enc("A3"), { expectedRevision: a!.revision })).revision).toBe(b.inventory("t/kv").revision);
      expect(await kv.get("ttl")).toBeDefined();
      w.now += 6000;
      expect(await kv.get("ttl")).toBeUndefined();
      expect((await b.sweep()).expired).toBe(1);
      expect((await b.changesSince("t/kv", 0, 1000)).at(-1)).toMatchObject({ op: "expire", key: "ttl" });
      expect(await kv.get("long")).toBeDefined();
      expect(Buffer.from((await st.get(next.seq))!.value).toString()).toBe("on b");
    });
  }

  it("respects the cut: records in A's segments after it are not imported", async () => {
    const a = await w.store("a");
    await workload(a, w, "t");
    const want = await dump(a, streams, kvs);
    const cut = await shipAll(a);
    await a.stream("t/stream").append({ value: enc("past the cut") }, { msgId: "late" });
    await a.kv("t/kv").delete("a");
    await a.kv("t/kv").set("late", enc("late"));
    expect(await shipAll(a)).toBeGreaterThan(cut);
    await w.close(a);
    const b = await w.store("b");
    await b.importLocations(ITEMS("a", cut));
    expect(await dump(b, streams, kvs)).toEqual(want);
    // The late msgId is not known: appending it writes.
    expect((await b.stream("t/stream").append({ value: enc("x") }, { msgId: "late" })).seq).toBe((want["t/stream"] as { inv: { lastSeq: number } }).inv.lastSeq + 1);
  });

  for (const checkpointB of [false, true]) {
    it(`B's restart, reindex and restore of an empty disk redo the import (${checkpointB ? "with" : "without"} a checkpoint of B)`, async () => {
      const { cut } = await origin({ checkpoint: true });
      let b = await w.store("b");
      await b.importLocations(ITEMS("a", cut));
      await b.stream("t/stream").append({ value: enc("b's own") }, { msgId: "b1" });
      await b.kv("t/kv").set("bkey", bytes(9000, 3));
      const want = await dump(b, streams, kvs);
      await w.close(b);

      b = await w.store("b"); // restart: the index is reopened, nothing replayed
      expect(await dump(b, streams, kvs)).toEqual(want);
      await w.close(b);

      const report = await Store.reindex({ dir: w.dir("b"), id: "b", tier: w.tier, limits: LIMITS, clock: () => w.now });
      expect(report.imports).toBe(2);
      expect(report.importMismatches).toBeUndefined();
      b = await w.store("b");
      expect(await dump(b, streams, kvs)).toEqual(want);
      if (checkpointB) {
        await shipAll(b);
        await b.tier!.checkpoint();
      }
      await w.close(b);

      fs.rmSync(w.dir("b"), { recursive: true, force: true });
      b = await w.store("b");
      expect(b.recovery.restoredCheckpoint !== undefined).toBe(checkpointB);
      expect(b.recovery.imports ?? 0).toBe(checkpointB ? 0 : 2);
      expect(await dump(b, streams, kvs)).toEqual(want);
      // And it goes on from there.
      expect((await b.stream("t/stream").append({ value: enc("z") }, { msgId: "b1" })).duplicate).toBe(true);
    });
  }

  it("A→B→C where B made no checkpoint after importing: C recurses through B's import record", async () => {
    const { want: fromA, cut } = await origin({ checkpoint: true });
    const b = await w.store("b");
    await b.importLocations(ITEMS("a", cut));
    await b.stream("t/stream").append({ value: bytes(10_000, 9) }, { msgId: "on-b" });
    await b.kv("t/kv").delete("long");
    const want = await dump(b, streams, kvs);
    expect(want).not.toEqual(fromA);
    const cutB = await shipAll(b);
    await w.close(b);
    const c = await w.store("c");
    await c.importLocations(ITEMS("b", cutB, 2));
    expect(await dump(c, streams, kvs)).toEqual(want);
    expect((await c.stream("t/stream").append({ value: enc("x") }, { msgId: "id-1" })).duplicate).toBe(true);
    expect((await c.stream("t/stream").append({ value: enc("x") }, { msgId: "on-b" })).duplicate).toBe(true);
  });

  it("A→B→A: the location comes home, its pointers map back to A's own segments", async () => {
    const { cut } = await origin({ checkpoint: false });
    const b = await w.store("b");
    await b.importLocations(ITEMS("a", cut));
    await b.stream("t/stream").append({ value: enc("written on b") });
    await b.kv("t/kv").set("fromb", bytes(9000, 4));
    const want = await dump(b, streams, kvs);
    const cutB = await shipAll(b);
    await w.close(b);
    const a = await w.store("a"); // A's disk still holds its old rows of the locations
    await a.importLocations(ITEMS("b", cutB, 3));
    expect(await dump(a, streams, kvs)).toEqual(want);
    // Only B's own writes stay foreign; A's records are read from A's own segments again.
    const meta = a.index.meta("t/stream")!;
    const segs = [...a.index.seqs.getRange({ start: [meta.id, 0], end: [meta.id + 1, 0] })].map((e) => e.value[0]);
    expect(segs.filter((s) => s >= FOREIGN_SEG_SPAN)).toHaveLength(1);
    await w.close(a);
    const again = await w.store("a");
    expect(await dump(again, streams, kvs)).toEqual(want);
  });
});

describe("bad input and damage", () => {
  it("refuses an import without a tier, and a log with imports opened without one", async () => {
    const plain = await Store.open({ dir: w.dir("p"), limits: LIMITS, sweepTimers: false });
    await expect(plain.importLocations(ITEMS("a", 1))).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await plain.close();
    const b = await w.store("b");
    await b.importLocations(ITEMS("nobody", 0));
    await w.close(b);
    fs.rmSync(path.join(w.dir("b"), "index"), { recursive: true, force: true });
    await expect(Store.open({ dir: w.dir("b"), id: "b", limits: LIMITS, sweepTimers: false })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it("validates items: location, server id, cut, epoch, duplicates", async () => {
    const b = await w.store("b");
    const bad: unknown[] = [
      [{ location: "bad loc", from: "a", cut: 1, epoch: 1 }],
      [{ location: "x", from: "a/b", cut: 1, epoch: 1 }],
      [{ location: "x", from: "a", cut: -1, epoch: 1 }],
      [{ location: "x", from: "a", cut: 2 ** 32, epoch: 1 }],
      [{ location: "x", from: "a", cut: 1, epoch: 1.5 }],
      [
        { location: "x", from: "a", cut: 1, epoch: 1 },
        { location: "x", from: "b", cut: 1, epoch: 1 },
      ],
      "not an array",
    ];
    for (const items of bad) await expect(b.importLocations(items as never)).rejects.toMatchObject({ code: expect.stringMatching(/^INVALID_(ARGUMENT|LOCATION)$/) });
    await expect(b.lastSegmentOf("../x")).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(b.log.activeSize).toBeLessThan(64); // nothing written
  });

  it("an unknown origin gives an empty location, replacing what this store held of it", async () => {
    const b = await w.store("b");
    await b.stream("t/stream").append({ value: enc("stale") });
    expect(await b.lastSegmentOf("nobody")).toBeUndefined();
    const [r] = await b.importLocations([{ location: "t/stream", from: "nobody", cut: 0, epoch: 1 }]);
    expect(r).toMatchObject({ location: "t/stream", rev: 0 });
    expect(r!.kind).toBeUndefined();
    expect(b.inventory("t/stream")).toMatchObject({ count: 0, revision: 0, lastSeq: 0 });
    expect(await b.stream("t/stream").get(1)).toBeUndefined();
    // It can even become a kv now: nothing of the old stream is left.
    await b.kv("t/stream").set("k", enc("v"));
    await w.close(b);
    const again = await w.store("b");
    expect(again.inventory("t/stream")).toMatchObject({ kind: "kv", count: 1, revision: 1 });
  });

  it("a damaged origin checkpoint falls back to an older one, or to every segment", async () => {
    const { want, cut } = await origin({ checkpoint: true });
    const objects = new DirObjectStore({ path: w.tier.slice(4) });
    const keys: string[] = [];
    for await (const o of objects.list(checkpointsPrefix("a"))) keys.push(o.key);
    expect(keys).toHaveLength(1);
    const body = Buffer.from((await objects.get(keys[0]!))!);
    body[body.length - 10]! ^= 0xff;
    await objects.put(keys[0]!, body);
    await objects.close();
    const b = await w.store("b");
    await b.importLocations(ITEMS("a", cut));
    expect(await dump(b, streams, kvs)).toEqual(want);
    expect(b.importer!.stats.damagedCheckpoints).toBe(1);
    expect(w.log.find("takeover_checkpoint_damaged"), w.warnings.join("\n")).toMatchObject({ code: "CORRUPT", from: "a", checkpoint: keys[0] });
  });

  it("a segment object that fails its checksum fails the import with CORRUPT and changes nothing", async () => {
    const { cut } = await origin({ checkpoint: false });
    const objects = new DirObjectStore({ path: w.tier.slice(4) });
    const key = segmentKey("a", 1);
    const body = Buffer.from((await objects.get(key))!);
    body[40]! ^= 0xff;
    await objects.put(key, body);
    await objects.close();
    const b = await w.store("b");
    await b.stream("t/stream").append({ value: enc("mine") });
    await expect(b.importLocations(ITEMS("a", cut))).rejects.toMatchObject({ code: "CORRUPT" });
    expect(b.inventory("t/stream")).toMatchObject({ count: 1, revision: 1 });
  });

  it("the import record round-trips and its decoder checks every field", () => {
    const rec: ImportRecord = { t: "import", loc: "a/b", from: "srv-1", cut: 7, epoch: 3, ckpt: "srv-1/checkpoints/x", rev: 12 };
    expect(decodeRecord(encodeRecord(rec))).toEqual(rec);
    const bare: ImportRecord = { t: "import", loc: "a/b", from: "srv-1", cut: 0, epoch: 0 };
    expect(decodeRecord(encodeRecord(bare))).toEqual(bare);
    for (const a of [
      [7, "a", "s", -1, 0],
      [7, "a", 5, 1, 0],
      [7, "", "s", 1, 0],
      [7, "a", "s", 1, 0, 5],
      [7, "a", "s", 1, 0, null, "x"],
      [7, "a", "s", 1, 0, null, 1, 9],
      [7, "a", "s", 1, 0, null],
    ]) {
      expect(() => decodeRecord(encode(a)), JSON.stringify(a)).toThrow(StrataError);
    }
  });
});

