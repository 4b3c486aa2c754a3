/**
 * Compaction in the engine without a tier (docs/compaction.md): a kv overwrite workload shrinks to
 * about its live bytes; every read gives the same before and after; chunked values survive; a
 * reopen and `Store.reindex` give exactly the live data; readers paused across a compaction and
 * its reclaim (compactRetainMs 0) still get everything; open chunks block a run; a dry run writes
 * nothing; dead bytes are counted by live writes and by a rebuild alike.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compactFaultHook } from "../../src/compact.js";
import { StrataError } from "../../src/errors.js";
import { resolveLimits } from "../../src/limits.js";
import { deadBytesBySegment } from "../../src/index/dead-chunks.js";
import { listSegmentIds } from "../../src/log/segment-files.js";
import { segmentRecordsEnd } from "../../src/log/segment-end.js";
import { isCompacted } from "../../src/log/segment-set.js";
import type { StoreOptions } from "../../src/config.js";
import { Store } from "../../src/store.js";

const LIMITS = { segmentBytesMax: 128 * 1024, recordBytesMax: 16 * 1024, chunkBytes: 4096, headersBytesMax: 4096, compactRetainMs: 1 };
const KEYS = 60;
const ROUNDS = 20;
const VALUE_BYTES = 512;

let root: string;
beforeAll(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-compact-"))));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const opts = (name: string, extra: Partial<StoreOptions> = {}): StoreOptions => ({ dir: path.join(root, name), limits: LIMITS, sweepTimers: false, ...extra });
const val = (k: number, r: number) => new Uint8Array(VALUE_BYTES).fill((k * 31 + r) & 0xff);
const segDir = (name: string) => path.join(root, name, "segments");
/** Bytes of the segment files up to their last record (the active segment's pre-zeroed tail is not data). */
const localBytes = (name: string) => listSegmentIds(segDir(name)).reduce((n, id) => n + segmentRecordsEnd(path.join(segDir(name), `${id.toString(16).padStart(16, "0")}.seg`)), 0);

/** Everything a reader can see of the store, for before/after comparisons. */
async function snapshot(store: Store): Promise<unknown> {
  const kv = store.kv("k/v");
  const kvAll: Array<[string, string, number]> = [];
  for await (const e of kv.getAll()) kvAll.push([e.key, Buffer.from(e.value).toString("hex"), e.revision]);
  const kvGets = await Promise.all(Array.from({ length: KEYS }, (_, k) => kv.get(`key${k}`).then((e) => e && [e.revision, Buffer.from(e.value).toString("hex")])));
  const s = store.stream("s/a");
  const msgs: Array<[number, string, number]> = [];
  for await (const m of s.getAll()) msgs.push([m.seq, Buffer.from(m.value).toString("hex"), m.timestamp]);
  const gets = await Promise.all(msgs.map((m) => s.get(m[0]).then((x) => x && Buffer.from(x.value).toString("hex"))));
  return { kvAll, kvGets, msgs, gets, inv: [store.inventory("k/v"), store.inventory("s/a"), store.inventory("s/big")], kvChanges: await lastChanges(store, "k/v"), streamChanges: await lastChanges(store, "s/a") };
}

/**
 * The last change of every key or seq (and every deleteAll) a watcher catching up from revision 0
 * sees: compaction drops the changes of dropped records, never a key's or seq's last one (a seq a
 * later deleteAll removed has that deleteAll as its last change).
 */
async function lastChanges(store: Store, loc: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const changes = await store.changesSince(loc, 0, 100_000);
  // A seq a later deleteAll removed is shown by that deleteAll: its own set may be compacted away.
  const covered = (seq: number, rev: number) => changes.some((d) => d.op === "deleteAll" && d.revision > rev && d.endSeq >= seq);
  for (const c of changes) {
    if (c.kind === "stream" && "seq" in c && covered(c.seq, c.revision)) continue;
    const id = "key" in c ? `k:${String(c.key)}` : "seq" in c ? `s:${String(c.seq)}` : `r:${c.revision}`;
    // A deleteAll's `count` is not compared: once compaction rewrote the records it removed, a
    // catch-up reports 0 (a known gap, noted in the #11 closing note).
    const shown = c.op === "deleteAll" ? { ...c, count: undefined } : c;
    out[id] = JSON.stringify(shown, (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString("hex").slice(0, 16) : v));
  }
  return out;
}

/** The segment files and markers of a data directory, without the log's next segment being prepared in the background. */
function logFiles(name: string): string[] {
  return fs
    .readdirSync(segDir(name))
    .filter((f) => f !== "prepared.tmp" && f !== "prepared.pre")
    .sort();
}

async function workload(store: Store): Promise<void> {
  const kv = store.kv("k/v");
  for (let r = 0; r < ROUNDS; r++) await Promise.all(Array.from({ length: KEYS }, (_, k) => kv.set(`key${k}`, val(k, r))));
  for (let k = 0; k < 10; k++) await kv.delete(`key${k}`);
  const s = store.stream("s/a");
  for (let i = 0; i < 200; i++) await s.append({ value: val(i, 7) });
  for (let i = 1; i <= 150; i += 2) await s.delete(i);
  await s.deleteAll({ endSeq: 40 });
  // A large value (chunked) that stays, and one that is overwritten.
  await store.kv("k/v").set("big", new Uint8Array(20_000).fill(9));
  await store.kv("k/v").set("gone", new Uint8Array(20_000).fill(8));
  await store.kv("k/v").set("gone", new Uint8Array(10).fill(1));
  await store.stream("s/big").append({ value: new Uint8Array(30_000).fill(5) });
}

describe("compaction without a tier", () => {
  it("shrinks a kv overwrite workload to about its live bytes; reads, reopen and reindex are unchanged", async () => {
    const store = await Store.open(opts("a"));
    let before: unknown;
    try {
      await workload(store);
      await store.sealActive();
      before = await snapshot(store);
      const bytesBefore = localBytes("a");
      const dead = [...deadBytesBySegment(store.index).values()].reduce((a, b) => a + b, 0);
      expect(dead).toBeGreaterThan(bytesBefore * 0.8);
      const report = await store.compact();
      expect(report.runs).toBeGreaterThan(0);
      expect(report.dropped.overwritten).toBeGreaterThanOrEqual((KEYS - 10) * (ROUNDS - 1));
      expect(report.dropped.deleted).toBeGreaterThanOrEqual(10 * ROUNDS);
      expect(report.dropped.deleted).toBeGreaterThan(0);
      expect(report.dropped.chunks).toBeGreaterThan(0);
      expect(report.localBytesBefore).toBe(bytesBefore);
      const live = (store.inventory("k/v").bytes + store.inventory("s/a").bytes + store.inventory("s/big").bytes);
      expect(await snapshot(store)).toEqual(before);
      // Reclaim ran (retain 1 ms): the inputs are gone, outputs remain.
      await new Promise((r) => setTimeout(r, 5));
      await store.compactor.reclaim();
      const after = localBytes("a");
      expect(after).toBeLessThan(live * 1.6 + 20_000);
      expect(listSegmentIds(segDir("a")).some(isCompacted)).toBe(true);
      expect(await snapshot(store)).toEqual(before);
    } finally {
      await store.close();
    }
    const reopened = await Store.open(opts("a"));
    let dead: unknown;
    try {
      expect(await snapshot(reopened)).toEqual(before);
      await reopened.kv("k/v").set("key20", val(20, 99));
      await reopened.kv("k/v").delete("key21");
      before = await snapshot(reopened);
      dead = [...deadBytesBySegment(reopened.index).entries()];
    } finally {
      await reopened.close();
    }
    // A rebuild from the compacted log counts the same dead bytes as the live writes did.
    await Store.reindex(opts("a"));
    const rebuilt = await Store.open(opts("a"));
    try {
      expect(await snapshot(rebuilt)).toEqual(before);
      expect([...deadBytesBySegment(rebuilt.index).entries()]).toEqual(dead);
    } finally {
      await rebuilt.close();
    }
  });

  it("a dry run reports what it would drop and writes nothing", async () => {
    const store = await Store.open(opts("dry"));
    try {
      await workload(store);
      await store.sealActive();
      const files = logFiles("dry");
      const dead = [...deadBytesBySegment(store.index).entries()];
      const report = await store.compact({ dryRun: true });
      expect(report.dryRun).toBe(true);
      await expect(store.compact({ dryRun: "yes" } as never)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      await expect(store.compact({ bogus: 1 } as never)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      expect(report.runs).toBeGreaterThan(0);
      expect(report.dropped.overwritten).toBeGreaterThan(0);
      expect(report.localBytesAfter).toBeLessThan(report.localBytesBefore);
      expect(logFiles("dry")).toEqual(files);
      expect([...deadBytesBySegment(store.index).entries()]).toEqual(dead);
      // Not even with sealActive: sealing would write a new segment.
      await store.kv("k/v").set("key1", new Uint8Array(8));
      const withActive = logFiles("dry");
      expect((await store.compact({ dryRun: true, sealActive: true })).dryRun).toBe(true);
      expect(logFiles("dry")).toEqual(withActive);
      expect(store.index.sys.get("compactedNext")).toBeUndefined();
    } finally {
      await store.close();
    }
  });

  it("readers paused across a compaction and its reclaim (compactRetainMs 0) still get everything", async () => {
    const store = await Store.open(opts("paused", { limits: { ...LIMITS, compactRetainMs: 0, scanPageSize: 8, scanReadBytesMax: 1024 } }));
    try {
      const kv = store.kv("k/p");
      const s = store.stream("s/p");
      for (let r = 0; r < 3; r++) for (let k = 0; k < 40; k++) await kv.set(`k${k}`, val(k, r));
      for (let i = 0; i < 40; i++) await s.append({ value: val(i, 1) });
      await s.append({ value: new Uint8Array(20_000).fill(3) });
      await kv.set("big", new Uint8Array(20_000).fill(4));
      await store.sealActive();
      const msgs = s.getAll();
      const entries = kv.getAll();
      const firstMsg = await msgs.next();
      const firstEntry = await entries.next();
      const report = await store.compact();
      expect(report.runs).toBeGreaterThan(0);
      expect(report.reclaimedSegments).toBeGreaterThan(0);
      const seqs = [firstMsg.value!.seq];
      const sizes: number[] = [firstMsg.value!.value.byteLength];
      for await (const m of msgs) {
        seqs.push(m.seq);
        sizes.push(m.value.byteLength);
      }
      expect(seqs).toEqual(Array.from({ length: 41 }, (_, i) => i + 1));
      expect(sizes[40]).toBe(20_000);
      const keys = [firstEntry.value!.key];
      for await (const e of entries) {
        keys.push(e.key);
        if (e.key === "big") expect(Buffer.from(e.value).equals(Buffer.alloc(20_000, 4))).toBe(true);
        else expect(Buffer.from(e.value).equals(Buffer.from(val(Number(e.key.slice(1)), 2)))).toBe(true);
      }
      expect(keys.length).toBe(41);
    } finally {
      await store.close();
    }
  });

  it("a segment holding a chunk of a value still being written is not compacted", async () => {
    const store = await Store.open(opts("open"));
    try {
      const kv = store.kv("k/o");
      for (let r = 0; r < 15; r++) for (let k = 0; k < 30; k++) await kv.set(`k${k}`, val(k, r));
      // A chunk record with no set record yet: what a large write in progress leaves.
      await store.submit({ op: "chunk", data: new Uint8Array(1000) });
      await store.sealActive();
      const open = [...store.index.openChunks.getKeys({})].map((k) => k[0]);
      expect(open.length).toBe(1);
      const report = await store.compact();
      const superseded = [...store.index.segs.getRange({})].filter((e) => e.value.state === "superseded" || e.value.by !== undefined).map((e) => e.key);
      expect(superseded).not.toContain(open[0]);
      expect(fs.existsSync(path.join(segDir("open"), `${open[0]!.toString(16).padStart(16, "0")}.seg`))).toBe(true);
      expect(report.runs).toBeGreaterThan(0);
      expect(await kv.get("k3")).toMatchObject({ value: val(3, 14) });
    } finally {
      await store.close();
    }
  });

  it("a kill at any step of a compaction loses nothing (fault hook)", async () => {
    for (const step of ["picked", "written", "local-marker", "switched", "reclaim-local", "reclaimed"] as const) {
      const name = `crash-${step}`;
      const store = await Store.open(opts(name, { limits: { ...LIMITS, compactRetainMs: 0 } }));
      let before: unknown;
      try {
        await workload(store);
        await store.sealActive();
        before = await snapshot(store);
        compactFaultHook.fn = (s) => {
          if (s === step) throw new Error(`crash at ${s}`);
        };
        await expect(store.compact()).rejects.toThrow(`crash at ${step}`);
      } finally {
        compactFaultHook.fn = undefined;
        await store.close();
      }
      const again = await Store.open(opts(name));
      try {
        expect(await snapshot(again)).toEqual(before);
        await again.compact();
        expect(await snapshot(again)).toEqual(before);
      } finally {
        await again.close();
      }
    }
  });

  it("compacts in the background on the maintenance timer, and not with compaction: false", async () => {
    const timed = { ...LIMITS, compactIntervalMs: 20, sealIntervalMs: 50 };
    for (const compaction of [true, false]) {
      const name = `bg-${compaction}`;
      const store = await Store.open({ ...opts(name, { limits: timed }), sweepTimers: true, compaction });
      try {
        const kv = store.kv("k/b");
        for (let r = 0; r < 12; r++) await Promise.all(Array.from({ length: 40 }, (_, k) => kv.set(`k${k}`, val(k, r))));
        await store.sealActive();
        const outputs = () => [...store.index.segs.getKeys({})].filter(isCompacted).length;
        const deadline = Date.now() + 5_000;
        while (compaction && outputs() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        if (!compaction) await new Promise((r) => setTimeout(r, 300)); // fifteen intervals
        expect(outputs() > 0).toBe(compaction);
        expect(await kv.get("k5")).toMatchObject({ value: val(5, 11) });
      } finally {
        await store.close();
      }
    }
  });

  it("never ends a run between a large value's chunks and its set record (chunk spans)", async () => {
    const store = await Store.open(opts("span", { limits: { ...LIMITS, compactRetainMs: 0 } }));
    try {
      const kv = store.kv("k/s");
      for (let r = 0; r < 6; r++) for (let k = 0; k < 30; k++) await kv.set(`k${k}`, val(k, r));
      // 100 KB in 4 KiB chunks: the log rolls to the next segment while they are written, and the
      // set record listing them lands there (still the active segment).
      const big = new Uint8Array(100_000).map((_, i) => i & 0xff);
      await kv.set("big", big);
      const first = listSegmentIds(segDir("span"))[0]!;
      expect(store.log.activeId).toBeGreaterThan(first);
      await store.compact();
      await store.compactor.reclaim();
      const got = await kv.get("big");
      expect(got && Buffer.from(got.value).equals(Buffer.from(big))).toBe(true);
      await store.close();
      const again = await Store.open(opts("span"));
      try {
        const back = await again.kv("k/s").get("big");
        expect(back && Buffer.from(back.value).equals(Buffer.from(big))).toBe(true);
      } finally {
        await again.close();
      }
    } finally {
      await store.close();
    }
  });

  it("checks the compaction limits and their relations", () => {
    const refused = (l: Record<string, number>) => {
      try {
        resolveLimits(l);
        return undefined;
      } catch (err) {
        return StrataError.is(err, "INVALID_ARGUMENT") ? err.message : String(err);
      }
    };
    expect(refused({ compactDeadFractionMin: 1.5 })).toMatch(/fraction/);
    expect(refused({ compactDeadFractionMin: 0 })).toMatch(/fraction/);
    expect(refused({ compactRetainMs: -1 })).toMatch(/compactRetainMs/);
    expect(refused({ compactSmallBytes: 2 ** 27, compactRunBytesMax: 2 ** 26 })).toMatch(/compactSmallBytes/);
    expect(refused({ compactRunBytesMax: 1024 })).toMatch(/recordBytesMax/);
    expect(refused({ compactDeadFractionMin: 0.25, compactRetainMs: 0 })).toBeUndefined();
    const l = resolveLimits({ segmentBytesMax: 8 * 1024 * 1024 });
    expect([l.compactSmallBytes, l.compactRunBytesMax]).toEqual([1024 * 1024, 8 * 1024 * 1024]);
  });
});
