/**
 * A restore from a tier checkpoint and a compaction's chunked switch (docs/compaction.md, step 4
 * and "Reclaim"; src/index/switch-journal.ts):
 * - a checkpoint taken between two chunks of a switch carries the journal: a server that lost its
 *   disk and restores from it (empty data directory, same `dir:` tier) finishes the switch at open
 *   and loses nothing, whether or not the live server finished the switch before the disk was lost;
 * - a checkpoint from before the switch (or from the middle of it) is never left in the object
 *   store once the reclaim deletes an input's object: no restore can pick an index that points
 *   into a deleted input, and a restore after the reclaim reads everything back.
 * Checked after each restore: every acknowledged value reads back with its newest value, no output
 * is "switching", no journal rows are left, every index entry points at a segment the resolved set
 * serves (the output, or an input the output does not replace), and a later compaction and a
 * reopen work.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compactFaultHook } from "../../src/compact.js";
import type { StoreOptions } from "../../src/config.js";
import { LmdbIndex } from "../../src/index/lmdb-index.js";
import { pendingSwitches, readHeader } from "../../src/index/switch-journal.js";
import { isCompacted } from "../../src/log/segment-set.js";
import { Store } from "../../src/store.js";
import { listCheckpoints, readCheckpoint } from "../../src/tier/checkpoints.js";
import { DirObjectStore } from "../../src/tier/dir-store.js";
import { checkpointsPrefix, parseSegmentKey, segmentsPrefix } from "../../src/tier/segment-keys.js";

const CHUNK = 16;
const LIMITS = { segmentBytesMax: 64 * 1024, recordBytesMax: 16 * 1024, chunkBytes: 4096, headersBytesMax: 4096, compactSwitchChunkRecords: CHUNK, compactRetainMs: 3_600_000 };
const KEYS = 300;
const KV = "rm/kv";
const STREAM = "rm/s";
const SERVER = "srv";

let root: string;
let n = 0;
beforeAll(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-restore-mid-"))));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const key = (k: number) => `key${String(k).padStart(4, "0")}`;
const val = (k: number, r: number) => Buffer.from(`${key(k)}-round-${r}-`.padEnd(120, "x"));

/** What every key and message should read back as (undefined: deleted). */
interface Truth {
  kv: Map<string, string | undefined>;
  msgs: Map<number, string | undefined>;
}

/** Three rounds over every key, some deletes, a stream with a deleteAll and single deletes; sealed and uploaded. */
async function workload(store: Store): Promise<Truth> {
  const kv = store.kv(KV);
  const truth: Truth = { kv: new Map(), msgs: new Map() };
  for (let r = 0; r < 3; r++) {
    await Promise.all(Array.from({ length: KEYS }, (_, k) => kv.set(key(k), val(k, r))));
    for (let k = 0; k < KEYS; k++) truth.kv.set(key(k), val(k, r).toString());
  }
  for (let k = 0; k < KEYS; k += 25) {
    await kv.delete(key(k));
    truth.kv.set(key(k), undefined);
  }
  const s = store.stream(STREAM);
  for (let i = 0; i < 120; i++) {
    const { seq } = await s.append({ value: val(i, 7) });
    truth.msgs.set(seq, val(i, 7).toString());
  }
  await s.deleteAll({ endSeq: 40 });
  for (let seq = 1; seq <= 40; seq++) truth.msgs.set(seq, undefined);
  for (let seq = 50; seq <= 120; seq += 10) {
    await s.delete(seq);
    truth.msgs.set(seq, undefined);
  }
  await store.sealActive();
  await store.tier!.drained();
  return truth;
}

/** Overwrites every 7th key without waiting; the writes are acknowledged once `pending` settles. */
function overwrite(store: Store, truth: Truth, round: number, pending: Array<Promise<unknown>>): void {
  const kv = store.kv(KV);
  for (let k = 3; k < KEYS; k += 7) {
    const v = val(k, round);
    pending.push(kv.set(key(k), v).then(() => truth.kv.set(key(k), v.toString())));
  }
}

async function check(store: Store, truth: Truth, ctx: string): Promise<void> {
  const kv = store.kv(KV);
  const got = await Promise.all([...truth.kv.keys()].map((k) => kv.get(k).then((e) => [k, e && Buffer.from(e.value).toString()] as const)));
  for (const [k, v] of got) expect(v, `${ctx}: ${k}`).toBe(truth.kv.get(k));
  expect(store.inventory(KV).count, `${ctx}: key count`).toBe([...truth.kv.values()].filter((v) => v !== undefined).length);
  const s = store.stream(STREAM);
  const msgs = await Promise.all([...truth.msgs.keys()].map((seq) => s.get(seq).then((m) => [seq, m && Buffer.from(m.value).toString()] as const)));
  for (const [seq, v] of msgs) expect(v, `${ctx}: message ${seq}`).toBe(truth.msgs.get(seq));
}

/** Own segments index entries point at (kvs, seqs, revs), with how many entries point at each. */
function pointedAt(index: LmdbIndex): Map<number, number> {
  const out = new Map<number, number>();
  const note = (seg: number) => out.set(seg, (out.get(seg) ?? 0) + 1);
  for (const { value } of index.kvs.getRange({})) note(value[0]);
  for (const { value } of index.seqs.getRange({})) note(value[0]);
  for (const { value } of index.revs.getRange({})) note(value[0]);
  return out;
}

/** The switch is over and consistent: nothing "switching", no journal, no entry pointing at a superseded or unknown segment. */
function switchSettled(index: LmdbIndex, ctx: string, active: number): void {
  expect(pendingSwitches(index), `${ctx}: switches pending`).toEqual([]);
  expect([...index.sys.getKeys({ start: "switch/", end: "switch0" })], `${ctx}: journal rows left`).toEqual([]);
  const segs = new Map([...index.segs.getRange({})].map((e) => [e.key, e.value]));
  expect([...segs].filter(([, i]) => i.state === "switching"), `${ctx}: outputs left switching`).toEqual([]);
  for (const [seg] of pointedAt(index)) {
    if (seg === active) continue; // the active segment has no segs entry yet
    expect(segs.get(seg)?.state, `${ctx}: entries point at segment ${seg}`).toBeDefined();
    expect(segs.get(seg)?.state, `${ctx}: entries point at superseded segment ${seg}`).not.toBe("superseded");
  }
}

/** Opens the index held by checkpoint `ckKey` (in a scratch directory) and hands it to `fn`. */
async function withCheckpointIndex<T>(objects: DirObjectStore, ckKey: string, fn: (index: LmdbIndex) => T): Promise<T> {
  const dir = fs.mkdtempSync(path.join(root, "ck-"));
  try {
    const raw = await readCheckpoint(objects, ckKey);
    expect(raw, `checkpoint ${ckKey} is readable`).toBeDefined();
    fs.writeFileSync(path.join(dir, "index.mdb"), raw!);
    const index = LmdbIndex.open(dir, { metaCacheMax: 1024 });
    try {
      return fn(index);
    } finally {
      await index.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function segmentObjects(objects: DirObjectStore): Promise<Set<number>> {
  const out = new Set<number>();
  for await (const o of objects.list(segmentsPrefix(SERVER))) {
    const id = parseSegmentKey(SERVER, o.key);
    if (id !== undefined) out.add(id);
  }
  return out;
}

interface Expected {
  /** The checkpoint the restore must use. */
  from: { seg: number; off: number };
  /** Outputs whose switch the open finishes. */
  finished: number[];
  /** Outputs unknown to the checkpoint the open deletes (their inputs are there). */
  orphans: number;
  /** The switched output and its inputs, as the restored index must have them. */
  out?: number;
  inputs?: number[];
  /** Whether the compaction after the restore has dead records to drop. */
  laterRuns: boolean;
}

/** Restores onto an empty data directory from the tier, checks it, compacts again, reopens and checks again. */
async function restoreAndCheck(opts: () => StoreOptions, truth: Truth, ctx: string, x: Expected): Promise<void> {
  const restored = await Store.open(opts());
  try {
    expect(restored.recovery.restoredCheckpoint, `${ctx}: restored from the checkpoint`).toEqual(x.from);
    expect(restored.recovery.switchesFinished, `${ctx}: switches the open finished`).toEqual(x.finished);
    expect(restored.recovery.orphans.map((o) => o.removed), `${ctx}: orphan outputs removed`).toEqual(Array.from({ length: x.orphans }, () => true));
    switchSettled(restored.index, `${ctx}, restored`, restored.log.activeId);
    if (x.out !== undefined) {
      // The output is the copy (only in the object store after the restore), its inputs are superseded.
      expect(restored.index.segs.get(x.out)?.state, `${ctx}: the output`).toBe("evicted");
      expect((pointedAt(restored.index).get(x.out) ?? 0) > 0, `${ctx}: entries point at the output`).toBe(true);
      for (const id of x.inputs ?? []) expect(restored.index.segs.get(id)?.state, `${ctx}: input ${id}`).toBe("superseded");
    }
    await check(restored, truth, `${ctx}, restored`);
    const again = await restored.compact({ sealActive: true });
    if (x.laterRuns) {
      // What died during the switch (overwritten between chunks) is dead in the output: dropped now.
      expect(again.runs, `${ctx}: a later compaction`).toBeGreaterThan(0);
      expect(again.dropped.overwritten, `${ctx}: a later compaction drops`).toBeGreaterThan(0);
    }
    switchSettled(restored.index, `${ctx}, compacted after the restore`, restored.log.activeId);
    await check(restored, truth, `${ctx}, compacted after the restore`);
  } finally {
    await restored.close();
  }
  const reopened = await Store.open(opts());
  try {
    expect(reopened.recovery.restoredCheckpoint, `${ctx}: the reopen uses the local index`).toBeUndefined();
    expect(reopened.recovery.switchesFinished, `${ctx}: nothing left to finish`).toEqual([]);
    switchSettled(reopened.index, `${ctx}, reopened`, reopened.log.activeId);
    await check(reopened, truth, `${ctx}, reopened`);
  } finally {
    await reopened.close();
  }
}

describe("a restore and a compaction's chunked switch", () => {
  for (const liveFinishes of [false, true]) {
    it(`a checkpoint taken between two chunks carries the journal: a restore from it finishes the switch${liveFinishes ? " (the live server finished it before the disk was lost)" : ""}`, async () => {
      const dir = path.join(root, `data-${n}`);
      const tierDir = path.join(root, `tier-${n++}`);
      const opts: StoreOptions = { dir, id: SERVER, tier: `dir:${tierDir}`, limits: LIMITS, sweepTimers: false, compaction: false };
      const objects = new DirObjectStore({ path: tierDir });
      const store = await Store.open(opts);
      let truth: Truth;
      let out: number | undefined;
      let mid: { key: string; pos: { seg: number; off: number } } | undefined;
      let inputs: number[] = [];
      let liveRuns = 0;
      try {
        truth = await workload(store);
        // Compaction takes only segments before the newest uploaded checkpoint.
        await store.tier!.checkpoint();
        const pending: Array<Promise<unknown>> = [];
        compactFaultHook.fn = (step, info) => {
          if (step !== "switch-chunk") return;
          out = info.out;
          if (info.seg === 1) overwrite(store, truth, 20, pending);
          // Stops the switch after its 5th chunk; the server goes on (an error at run time).
          if (info.seg === 4) throw new Error("stop between chunks");
        };
        await expect(store.compact()).rejects.toThrow("stop between chunks");
        compactFaultHook.fn = undefined;
        await Promise.all(pending);
        expect(out).toBeDefined();
        expect(pendingSwitches(store.index)).toEqual([out]);
        expect(store.index.segs.get(out!)?.state).toBe("switching");
        // More writes, then the checkpoint between the two chunks (sealed first: it names the new segment).
        overwrite(store, truth, 21, pending);
        await Promise.all(pending);
        await store.sealActive();
        await store.tier!.drained();
        await store.tier!.checkpoint();
        const cks = await listCheckpoints(objects, SERVER);
        mid = cks[cks.length - 1]!;
        const header = await withCheckpointIndex(objects, mid.key, (ix) => ({ pending: pendingSwitches(ix), h: readHeader(ix, out!), state: ix.segs.get(out!)?.state }));
        expect(header.pending, "the checkpoint holds the switch's journal").toEqual([out]);
        expect(header.state).toBe("switching");
        expect(header.h?.done, "the checkpoint was taken after the 5th chunk").toBe(5);
        expect(header.h!.keptPieces + header.h!.droppedPieces).toBeGreaterThan(6);
        inputs = header.h!.inputs.map((i) => i.id);
        // Writes after the checkpoint: in segments the restore replays on top of it.
        overwrite(store, truth, 22, pending);
        await Promise.all(pending);
        await store.kv(KV).delete(key(11));
        truth.kv.set(key(11), undefined);
        if (liveFinishes) {
          // The live server finishes the switch (the next compaction does it first); its inputs
          // are retained (compactRetainMs), so the mid-switch checkpoint stays the newest.
          // Its further runs make outputs that checkpoint does not know: orphans at the restore.
          liveRuns = (await store.compact()).runs;
          expect(liveRuns, "the live server compacted more after the switch").toBeGreaterThan(0);
          switchSettled(store.index, "live, after the switch finished", store.log.activeId);
          expect((await listCheckpoints(objects, SERVER)).at(-1)?.key).toBe(mid.key);
        }
        await store.sealActive();
        await store.tier!.drained();
        await check(store, truth, "live, before the disk was lost");
      } finally {
        compactFaultHook.fn = undefined;
        await store.close();
      }
      // The disk is lost: an empty data directory, the same tier.
      fs.rmSync(dir, { recursive: true, force: true });
      const ctx = liveFinishes ? "restore after the live server finished" : "restore mid-switch";
      await restoreAndCheck(() => opts, truth, ctx, { from: mid!.pos, finished: [out!], orphans: liveRuns, out: out!, inputs, laterRuns: true });
    }, 60_000);
  }

  it("the reclaim deletes every checkpoint from before (or from the middle of) a switch before any input object; a restore after it loses nothing", async () => {
    /** Records the order of checkpoint puts and deletes and of segment deletes. */
    class Watched extends DirObjectStore {
      readonly events: Array<{ t: "put" | "delete"; key: string }> = [];
      override async put(k: string, body: Uint8Array): Promise<void> {
        await super.put(k, body);
        if (k.startsWith(checkpointsPrefix(SERVER))) this.events.push({ t: "put", key: k });
      }
      override async delete(k: string): Promise<void> {
        await super.delete(k);
        this.events.push({ t: "delete", key: k });
      }
    }
    const dir = path.join(root, `data-${n}`);
    const tierDir = path.join(root, `tier-${n++}`);
    const objects = new Watched({ path: tierDir });
    const opts: StoreOptions = { dir, id: SERVER, objectStore: objects, limits: { ...LIMITS, compactRetainMs: 0 }, sweepTimers: false, compaction: false };
    const store = await Store.open(opts);
    let truth: Truth;
    let out: number | undefined;
    let inputs: number[] = [];
    let switchEnd = -1;
    let newest: { seg: number; off: number } | undefined;
    try {
      truth = await workload(store);
      await store.tier!.checkpoint(); // before the switch
      const pending: Array<Promise<unknown>> = [];
      compactFaultHook.fn = (step, info) => {
        if (step === "switch-chunk" && info.seg === 3) throw new Error("stop between chunks");
      };
      await expect(store.compact()).rejects.toThrow("stop between chunks");
      out = pendingSwitches(store.index)[0];
      expect(out).toBeDefined();
      inputs = readHeader(store.index, out!)!.inputs.map((i) => i.id);
      overwrite(store, truth, 30, pending);
      await Promise.all(pending);
      await store.sealActive();
      await store.tier!.drained();
      await store.tier!.checkpoint(); // in the middle of the switch
      expect((await listCheckpoints(objects, SERVER)).length).toBe(2);
      compactFaultHook.fn = (step, info) => {
        // The pieces are done; the end follows at once (no checkpoint can be put in between).
        if (step === "switch-pieces" && info.out === out) switchEnd = objects.events.length;
      };
      // Finishes the switch, then reclaims its inputs (compactRetainMs 0).
      const report = await store.compact();
      compactFaultHook.fn = undefined;
      expect(switchEnd, "the switch ended in this compaction").toBeGreaterThanOrEqual(0);
      expect(report.reclaimedSegments).toBeGreaterThan(0);
      switchSettled(store.index, "live, after the reclaim", store.log.activeId);
      const deletedInputs = objects.events.filter((e) => e.t === "delete" && inputs.includes(parseSegmentKey(SERVER, e.key) ?? -1));
      expect(deletedInputs.length, "input objects deleted").toBeGreaterThan(0);
      // At the first input delete, every checkpoint still there was put after the switch ended.
      const first = objects.events.indexOf(deletedInputs[0]!);
      const live = new Map<string, number>();
      for (const [i, e] of objects.events.slice(0, first).entries()) {
        if (!e.key.startsWith(checkpointsPrefix(SERVER))) continue;
        if (e.t === "put") live.set(e.key, i);
        else live.delete(e.key);
      }
      expect(live.size, "a checkpoint is there when inputs go").toBeGreaterThan(0);
      for (const [k, i] of live) expect(i, `checkpoint ${k} was put after the switch ended`).toBeGreaterThanOrEqual(switchEnd);
      // And every checkpoint left points only into segments the object store still has.
      const present = await segmentObjects(objects);
      for (const ck of await listCheckpoints(objects, SERVER)) {
        const segs = await withCheckpointIndex(objects, ck.key, (ix) => [...pointedAt(ix).keys()]);
        for (const seg of segs) expect(present.has(seg) || !isCompacted(seg) && seg >= ck.pos.seg, `checkpoint ${ck.key} points at segment ${seg}`).toBe(true);
      }
      await store.sealActive();
      await store.tier!.drained();
      await check(store, truth, "live, after the reclaim");
      newest = (await listCheckpoints(objects, SERVER)).at(-1)!.pos;
    } finally {
      compactFaultHook.fn = undefined;
      await store.close();
    }
    fs.rmSync(dir, { recursive: true, force: true });
    await restoreAndCheck(() => ({ ...opts, objectStore: new DirObjectStore({ path: tierDir }) }), truth, "restore after the reclaim", { from: newest!, finished: [], orphans: 0, laterRuns: false });
  }, 60_000);
});
