/**
 * Recovery, restore, takeover and `strata stat` once compaction outputs exist (docs/compaction.md,
 * src/open-segments.ts, src/recovery.ts, src/replay.ts, src/tier/takeover.ts): outputs are built
 * by hand here (records copied frame for frame from their inputs into a new segment with an output
 * id, as the compactor's writer does for a run where nothing is dead), so these tests depend only
 * on the segment-set rules. Real stores over a directory tier.
 */
import fs from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { dataStat } from "../../src/data-stat.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, segmentHeader, segmentPath } from "../../src/log/segment-files.js";
import { COMPACTED_SEG_BASE, listLocalMarkers, writeLocalMarker, type Cover } from "../../src/log/segment-set.js";
import { Store } from "../../src/store.js";
import { DirObjectStore } from "../../src/tier/dir-store.js";
import { listPins, pinnedCut } from "../../src/tier/pins.js";
import { sealSegmentAsync, unsealSegment } from "../../src/tier/sealed-segment.js";
import { checkpointsPrefix, compactionMarkerKey, segmentKey } from "../../src/tier/segment-keys.js";
import { LIMITS, World, dump, enc } from "./takeover-helpers.js";

let w: World;
beforeEach(() => {
  w = new World();
});
afterEach(async () => {
  await w.dispose();
});

const STREAMS = ["c/stream"];
const KVS = ["c/kv"];
const objectsDir = () => path.join(w.root, "objects");
const objects = () => new DirObjectStore({ path: objectsDir() });

/** Records in `rounds` sealed segments (small values: no chunk pointers, so records copy as they are). */
async function fill(s: Store, rounds: number, tag = ""): Promise<void> {
  const st = s.stream("c/stream");
  const kv = s.kv("c/kv");
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < 5; i++) await st.append({ value: enc(`${tag}m${r}.${i}`) }, { msgId: `${tag}id-${r}-${i}` });
    await kv.set(`k${r % 3}`, enc(`${tag}v${r}`));
    if (r % 2 === 1) await st.delete(r * 5 + 1);
    if (r === 2) await kv.delete("k0");
    await s.sealActive();
  }
  w.now += 10;
}

/** The body (records, no header) of each input as an unsealed segment. */
function bodyOf(raw: Buffer): Buffer {
  return raw.subarray(SEGMENT_HEADER_BYTES);
}

/** Writes output `c` in `dir` from local inputs lo..hi (records copied frame for frame); returns it. */
function localOutput(dir: string, c: Cover, marker: boolean): void {
  const bodies: Buffer[] = [];
  for (let id = c.lo; id <= c.hi; id++) bodies.push(bodyOf(fs.readFileSync(segmentPath(dir, id))));
  fs.writeFileSync(segmentPath(dir, c.id), Buffer.concat([segmentHeader(c.id), ...bodies]));
  if (marker) writeLocalMarker(dir, c);
}

/** Puts output `c` of `server` into the object store, from its input objects lo..hi, with its marker. */
async function objectOutput(server: string, c: Cover, opts: { marker: boolean; deleteInputs: boolean }): Promise<void> {
  const o = objects();
  const bodies: Buffer[] = [];
  for (let id = c.lo; id <= c.hi; id++) bodies.push(bodyOf(unsealSegment(id, (await o.get(segmentKey(server, id)))!)));
  const raw = Buffer.concat([segmentHeader(c.id), ...bodies]);
  await o.put(segmentKey(server, c.id), await sealSegmentAsync(c.id, raw, LIMITS.blockBytes, LIMITS.recordBytesMax));
  if (opts.marker) await o.put(compactionMarkerKey(server, c), new Uint8Array(0));
  if (opts.deleteInputs) for (let id = c.lo; id <= c.hi; id++) await o.delete(segmentKey(server, id));
  await o.close();
}

const exists = async (key: string) => {
  const o = objects();
  try {
    return (await o.head(key)) !== undefined;
  } finally {
    await o.close();
  }
};

describe("recovery with compaction outputs (local, no tier)", () => {
  async function plain(): Promise<Store> {
    return w.store("p", { tier: undefined });
  }

  it("a full rebuild reads an output with its marker instead of its inputs, gone or not", async () => {
    let s = await plain();
    await fill(s, 5);
    const want = await dump(s, STREAMS, KVS);
    const last = s.log.activeId - 1;
    await w.close(s);
    const dir = path.join(w.dir("p"), "segments");
    const c = { id: COMPACTED_SEG_BASE, lo: 1, hi: 3 };
    localOutput(dir, c, true);

    // Inputs still there: replayed once, through the output; the inputs are superseded.
    let report = await Store.reindex({ dir: w.dir("p"), id: "p", limits: LIMITS, clock: () => w.now });
    expect(report.segments.map((e) => e.id)).toEqual([c.id, ...Array.from({ length: last + 1 - 3 }, (_, i) => 4 + i)]);
    expect(report.superseded).toEqual([1, 2, 3]);
    s = await plain();
    expect(await dump(s, STREAMS, KVS)).toEqual(want);
    expect(s.log.activeId).toBe(last + 1);
    await w.close(s);

    // Inputs gone: the output alone holds their records.
    for (let id = 1; id <= 3; id++) fs.rmSync(segmentPath(dir, id));
    report = await Store.reindex({ dir: w.dir("p"), id: "p", limits: LIMITS, clock: () => w.now });
    expect(report.superseded).toEqual([]);
    s = await plain();
    expect(await dump(s, STREAMS, KVS)).toEqual(want);
    // And it goes on: new writes, a restart without a rebuild.
    await s.stream("c/stream").append({ value: enc("after") });
    const after = await dump(s, STREAMS, KVS);
    await w.close(s);
    s = await plain();
    expect(s.recovery.rebuilt).toBe(false);
    expect(await dump(s, STREAMS, KVS)).toEqual(after);
  });

  it("an output covering the last segment: appends go to a new segment after it, and the checkpoint names a normal segment", async () => {
    let s = await plain();
    await fill(s, 3);
    await s.stream("c/stream").append({ value: enc("in the last one") });
    const want = await dump(s, STREAMS, KVS);
    const last = s.log.activeId;
    await w.close(s);
    const dir = path.join(w.dir("p"), "segments");
    localOutput(dir, { id: COMPACTED_SEG_BASE + 4, lo: 2, hi: last }, true);
    const report = await Store.reindex({ dir: w.dir("p"), id: "p", limits: LIMITS, clock: () => w.now });
    // The log ends in the output: recovery starts the next segment itself and moves the checkpoint
    // there, so no checkpoint ever names an output (a crash before the first write included).
    expect(report.active).toEqual({ id: last + 1, size: SEGMENT_HEADER_BYTES });
    s = await plain();
    expect(await dump(s, STREAMS, KVS)).toEqual(want);
    expect(s.log.activeId).toBe(last + 1);
    expect(s.index.checkpoint()!.seg).toBe(last + 1);
    expect(s.index.sys.get("compactedNext")).toBe(5);
    await s.kv("c/kv").set("new", enc("x"));
    const after = await dump(s, STREAMS, KVS);
    await w.close(s);
    s = await plain();
    expect(s.recovery.rebuilt).toBe(false);
    expect(await dump(s, STREAMS, KVS)).toEqual(after);
  });

  it("deletes orphans at open (an output without a marker; an output and marker the index does not know) and reads their inputs", async () => {
    let s = await plain();
    await fill(s, 4);
    const want = await dump(s, STREAMS, KVS);
    await w.close(s);
    const dir = path.join(w.dir("p"), "segments");
    const unmarked = { id: COMPACTED_SEG_BASE, lo: 1, hi: 2 };
    const unknown = { id: COMPACTED_SEG_BASE + 1, lo: 3, hi: 4 };
    localOutput(dir, unmarked, false);
    localOutput(dir, unknown, true);
    fs.writeFileSync(`${segmentPath(dir, COMPACTED_SEG_BASE + 2)}.tmp`, "half written");
    s = await plain();
    expect(s.recovery.rebuilt).toBe(false);
    expect(s.recovery.orphans.map((o) => o.id).sort()).toEqual([unmarked.id, unknown.id]);
    expect(s.recovery.tempOutputsRemoved).toBe(1);
    expect(listSegmentIds(dir).filter((id) => id >= COMPACTED_SEG_BASE)).toEqual([]);
    expect(listLocalMarkers(dir)).toEqual([]);
    expect(fs.readdirSync(dir).some((n) => n.endsWith(".tmp"))).toBe(false);
    expect(await dump(s, STREAMS, KVS)).toEqual(want);
    // An id is never given twice: compactedNext is past the orphans (a `.tmp` was never an output).
    expect(s.index.sys.get("compactedNext")).toBe(2);
    await w.close(s);
  });

  it("drops a torn last normal segment even when outputs (with higher ids) exist", async () => {
    let s = await plain();
    await fill(s, 3);
    const want = await dump(s, STREAMS, KVS);
    const active = s.log.activeId;
    await w.close(s);
    const dir = path.join(w.dir("p"), "segments");
    localOutput(dir, { id: COMPACTED_SEG_BASE, lo: 1, hi: 2 }, true);
    // A crash while the next segment was being created: a file with half a header.
    fs.writeFileSync(segmentPath(dir, active + 1), segmentHeader(active + 1).subarray(0, 7));
    s = await plain();
    expect(await dump(s, STREAMS, KVS)).toEqual(want);
    await w.close(s);
  });
});

describe("restore from the object store with compaction outputs", () => {
  it("replays an output with its marker when its inputs are gone (no checkpoint)", async () => {
    let s = await w.store("a");
    await fill(s, 5);
    const want = await dump(s, STREAMS, KVS);
    await s.sealActive();
    await s.tier!.drained();
    await w.close(s);
    const c = { id: COMPACTED_SEG_BASE + 7, lo: 2, hi: 4 };
    await objectOutput("a", c, { marker: true, deleteInputs: true });
    fs.rmSync(w.dir("a"), { recursive: true, force: true });
    s = await w.store("a");
    expect(s.recovery.segments.some((e) => e.id === c.id)).toBe(true);
    expect(await dump(s, STREAMS, KVS)).toEqual(want);
    expect(s.index.segs.get(c.id)).toMatchObject({ lo: 2, hi: 4 });
    expect(s.index.sys.get("compactedNext")).toBe(8);
    await w.close(s);
  });

  it("a restore from a checkpoint made before the compaction deletes the output it does not know, in the object store too", async () => {
    let s = await w.store("a");
    await fill(s, 4);
    await s.sealActive();
    await s.tier!.drained();
    await s.tier!.checkpoint();
    await fill(s, 2, "x");
    const want = await dump(s, STREAMS, KVS);
    await s.sealActive();
    await s.tier!.drained();
    await w.close(s);
    const c = { id: COMPACTED_SEG_BASE, lo: 2, hi: 5 };
    await objectOutput("a", c, { marker: true, deleteInputs: false });
    fs.rmSync(w.dir("a"), { recursive: true, force: true });
    s = await w.store("a");
    expect(s.recovery.restoredCheckpoint).toBeDefined();
    expect(s.recovery.orphans).toEqual([{ id: c.id, removed: true }]);
    expect(await exists(segmentKey("a", c.id))).toBe(false);
    expect(await exists(compactionMarkerKey("a", c))).toBe(false);
    expect(await dump(s, STREAMS, KVS)).toEqual(want);
    await w.close(s);
  });

  it("a checkpoint taken after the output was recorded keeps it (the index knows it), and a restore reads it", async () => {
    let s = await w.store("a");
    await fill(s, 4);
    await s.sealActive();
    await s.tier!.drained();
    await w.close(s);
    const c = { id: COMPACTED_SEG_BASE, lo: 1, hi: 3 };
    await objectOutput("a", c, { marker: true, deleteInputs: true });
    // A rebuild learns the output (as the switch would record it), then a checkpoint carries it.
    await Store.reindex({ dir: w.dir("a"), id: "a", tier: w.tier, limits: LIMITS, clock: () => w.now });
    s = await w.store("a");
    await s.stream("c/stream").append({ value: enc("after") });
    const want = await dump(s, STREAMS, KVS);
    await s.sealActive();
    await s.tier!.drained();
    await s.tier!.checkpoint();
    await w.close(s);
    fs.rmSync(w.dir("a"), { recursive: true, force: true });
    s = await w.store("a");
    expect(s.recovery.restoredCheckpoint).toBeDefined();
    expect(s.recovery.orphans).toEqual([]);
    expect(await exists(segmentKey("a", c.id))).toBe(true);
    expect(await dump(s, STREAMS, KVS)).toEqual(want);
    await w.close(s);
  });
});

describe("takeover with compaction: pins and the origin's segment set", () => {
  const ITEMS = (from: string, cut: number) => [...STREAMS, ...KVS].map((location) => ({ location, from, cut, epoch: 1 }));

  it("pins the origin before reading it, and reads an origin whose segments were compacted", async () => {
    const a = await w.store("a");
    await fill(a, 5);
    const want = await dump(a, STREAMS, KVS);
    await a.sealActive();
    await a.tier!.drained();
    await w.close(a);
    await objectOutput("a", { id: COMPACTED_SEG_BASE, lo: 1, hi: 3 }, { marker: true, deleteInputs: true });
    const b = await w.store("b");
    const cut = (await b.lastSegmentOf("a"))!;
    expect(cut).toBeLessThan(COMPACTED_SEG_BASE); // a cut is a normal position, never an output id
    expect(await pinnedCut(objects(), "a")).toBeUndefined();
    await b.importLocations(ITEMS("a", cut));
    expect(await dump(b, STREAMS, KVS)).toEqual(want);
    expect(await listPins(objects(), "a")).toEqual([{ importer: "b", cut }]);
    expect(await pinnedCut(objects(), "a")).toBe(cut);
  });

  it("an import whose named checkpoint was deleted is redone from an older one or every segment", async () => {
    const a = await w.store("a");
    await fill(a, 3);
    await a.sealActive();
    await a.tier!.drained();
    await a.tier!.checkpoint();
    await fill(a, 2, "y");
    const want = await dump(a, STREAMS, KVS);
    await a.sealActive();
    await a.tier!.drained();
    await w.close(a);
    let b = await w.store("b");
    const cut = (await b.lastSegmentOf("a"))!;
    await b.importLocations(ITEMS("a", cut));
    expect(b.importer!.stats.checkpointsRead).toBe(1);
    expect(await dump(b, STREAMS, KVS)).toEqual(want);
    await w.close(b);
    // The checkpoint the import records name is gone (pruned, or reclaimed by compaction).
    const o = objects();
    for await (const x of o.list(checkpointsPrefix("a"))) await o.delete(x.key);
    await o.close();
    const report = await Store.reindex({ dir: w.dir("b"), id: "b", tier: w.tier, limits: LIMITS, clock: () => w.now });
    expect(report.imports).toBe(2);
    expect(report.importMismatches).toBeUndefined();
    b = await w.store("b");
    expect(await dump(b, STREAMS, KVS)).toEqual(want);
    await w.close(b);
  });
});

describe("strata stat with compaction outputs", () => {
  it("lists outputs with their covers, superseded inputs, orphans, live and dead bytes, and the object store's markers and pins", async () => {
    let s = await w.store("a");
    await fill(s, 4);
    await s.sealActive();
    await s.tier!.drained();
    await w.close(s);
    const dir = path.join(w.dir("a"), "segments");
    const c = { id: COMPACTED_SEG_BASE, lo: 1, hi: 2 };
    await objectOutput("a", c, { marker: true, deleteInputs: false });
    // Rebuilt: the output becomes known, inputs 1 and 2 superseded.
    await Store.reindex({ dir: w.dir("a"), id: "a", tier: w.tier, limits: LIMITS, clock: () => w.now });
    s = await w.store("a");
    await w.close(s);
    // A local orphan (no marker, unknown): reported, not touched by stat.
    localOutput(dir, { id: COMPACTED_SEG_BASE + 1, lo: 3, hi: 3 }, false);
    const b = await w.store("b");
    await b.importLocations(ITEMS2("a", 4));
    await w.close(b);
    const o = objects();
    const stat = await dataStat(w.dir("a"), { tier: { objects: o, serverId: "a" } });
    await o.close();
    expect(stat.compaction.outputs).toEqual([expect.objectContaining({ id: c.id, lo: 1, hi: 2, state: "evicted" })]);
    expect(stat.compaction.orphans).toEqual([COMPACTED_SEG_BASE + 1]);
    expect(stat.compaction.next).toBe(1);
    expect(stat.segments.superseded.count).toBe(2);
    expect(stat.space.localBytes).toBe(stat.space.liveBytes + stat.space.deadBytes + stat.space.supersededBytes);
    expect(stat.objectStore).toMatchObject({ server: "a", markers: [c], pins: [{ importer: "b", cut: 4 }], pinnedCut: 4, superseded: [1, 2], orphans: [] });
    expect(stat.objectStore!.segments.outputs).toBe(1);
    // Outputs are never the active segment.
    expect(stat.segments.active.count).toBe(1);
  });
});

const ITEMS2 = (from: string, cut: number) => [...STREAMS, ...KVS].map((location) => ({ location, from, cut, epoch: 1 }));
