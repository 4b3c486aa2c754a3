/**
 * Compaction with a cold tier (docs/compaction.md): the output is put in the object store with its
 * marker before the switch, the inputs' objects go only after a checkpoint made after the switch
 * (older checkpoints deleted first); the object store then holds about the live bytes, and a
 * restore on an empty disk gives exactly the live data, from a checkpoint made after the
 * compaction and from one made before it (the output is then an orphan and the inputs are read).
 * Also: inputs that live only in the object store (evicted) are compacted; a takeover pin keeps
 * what it covers; one case on a real S3 server (s3rver).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listSegmentIds } from "../../src/log/segment-files.js";
import { isCompacted } from "../../src/log/segment-set.js";
import type { StoreOptions } from "../../src/config.js";
import { Store } from "../../src/store.js";
import { listCheckpoints } from "../../src/tier/checkpoints.js";
import type { ObjectInfo, ObjectStore } from "../../src/tier/object-store.js";
import { compactFaultHook } from "../../src/compact.js";
import { StrataError } from "../../src/errors.js";
import { S3ObjectStore } from "../../src/tier/s3-store.js";
import { writePin } from "../../src/tier/pins.js";
import { parseSegmentKey, segmentsPrefix } from "../../src/tier/segment-keys.js";
import { MemoryObjectStore } from "../../src/testing/fault-store.js";
import { captureLogger } from "../helpers/capture-logger.js";
import { S3RVER_CREDENTIALS, startS3rver, type RunningS3rver } from "../../src/testing/s3rver.js";

const LIMITS = { segmentBytesMax: 128 * 1024, recordBytesMax: 16 * 1024, chunkBytes: 4096, headersBytesMax: 4096, compactRetainMs: 0 };
const KEYS = 50;
const VALUE_BYTES = 512;

let root: string;
beforeAll(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-compact-tier-"))));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const val = (k: number, r: number) => new Uint8Array(VALUE_BYTES).fill((k * 13 + r) & 0xff);

/** An object store that outlives the stores using it (Store.close closes its object store). */
class Kept extends MemoryObjectStore {
  override async close(): Promise<void> {}
}

const opts = (dir: string, objects: ObjectStore, extra: Partial<StoreOptions> = {}): StoreOptions => ({
  dir: path.join(root, dir),
  id: "srv",
  objectStore: objects,
  limits: LIMITS,
  sweepTimers: false,
  ...extra,
});

async function workload(store: Store, rounds: number): Promise<void> {
  const kv = store.kv("k/v");
  for (let r = 0; r < rounds; r++) await Promise.all(Array.from({ length: KEYS }, (_, k) => kv.set(`key${k}`, val(k, r))));
  await kv.delete("key0");
  await kv.set("big", new Uint8Array(20_000).fill(7));
  const s = store.stream("s/a");
  for (let i = 0; i < 60; i++) await s.append({ value: val(i, 1) });
  await s.deleteAll({ endSeq: 30 });
}

async function snapshot(store: Store): Promise<unknown> {
  const kv: Array<[string, string, number]> = [];
  for await (const e of store.kv("k/v").getAll()) kv.push([e.key, Buffer.from(e.value).toString("hex").slice(0, 64) + e.value.byteLength, e.revision]);
  const msgs: Array<[number, number]> = [];
  for await (const m of store.stream("s/a").getAll()) msgs.push([m.seq, m.value[0]!]);
  const gets = await Promise.all(Array.from({ length: KEYS }, (_, k) => store.kv("k/v").get(`key${k}`).then((e) => e?.revision)));
  const last = (await store.changesSince("k/v", 0, 100_000)).slice(-3).map((c) => c.revision);
  return { kv, msgs, gets, last, inv: [store.inventory("k/v"), store.inventory("s/a")] };
}

async function objectBytes(objects: ObjectStore): Promise<{ bytes: number; outputs: number; normals: number }> {
  let bytes = 0;
  let outputs = 0;
  let normals = 0;
  for await (const o of objects.list(segmentsPrefix("srv"))) {
    bytes += o.size;
    const id = parseSegmentKey("srv", o.key)!;
    if (isCompacted(id)) outputs++;
    else normals++;
  }
  return { bytes, outputs, normals };
}

describe("compaction with a tier", () => {
  it("shrinks the object store to about the live data; a restore from a checkpoint after it gives the live data", async () => {
    const objects = new Kept();
    const store = await Store.open(opts("a", objects));
    let before: unknown;
    try {
      await workload(store, 16);
      await store.sealActive();
      await store.tier!.drained();
      before = await snapshot(store);
      const report = await store.compact({ sealActive: true });
      expect(report.runs).toBeGreaterThan(0);
      expect(report.reclaimedSegments).toBeGreaterThan(0);
      expect(report.objectBytesAfter!).toBeLessThan(report.objectBytesBefore! / 2);
      expect(report.localBytesAfter).toBeLessThan(report.localBytesBefore / 2);
      const live = store.inventory("k/v").bytes + store.inventory("s/a").bytes;
      // Sealed objects are zstd-compressed: well under the live bytes plus the tombstones' overhead.
      expect((await objectBytes(objects)).bytes).toBeLessThan(live * 1.2);
      expect((await objectBytes(objects)).outputs).toBeGreaterThan(0);
      expect((await listCheckpoints(objects, "srv")).length).toBe(1);
      expect(await snapshot(store)).toEqual(before);
    } finally {
      await store.close();
    }
    const restored = await Store.open(opts("a-restored", objects));
    try {
      expect(restored.recovery.restoredCheckpoint).toBeDefined();
      expect(await snapshot(restored)).toEqual(before);
    } finally {
      await restored.close();
    }
  });

  it("an output compacted before the store had a tier is shipped in log order with its marker, so a restore reads it", async () => {
    const objects = new Kept();
    const local = await Store.open({ ...opts("c", objects), objectStore: undefined });
    let before: unknown;
    try {
      await workload(local, 8);
      const report = await local.compact({ sealActive: true });
      expect(report.runs).toBeGreaterThan(0);
      expect(report.reclaimedSegments).toBeGreaterThan(0); // the inputs' files are gone
      before = await snapshot(local);
    } finally {
      await local.close();
    }
    const tiered = await Store.open(opts("c", objects));
    try {
      await tiered.tier!.drained();
      expect((await objectBytes(objects)).outputs).toBeGreaterThan(0);
    } finally {
      await tiered.close();
    }
    // No checkpoint: a full replay of the object store, which must take the output for its inputs.
    for (const c of await listCheckpoints(objects, "srv")) await objects.delete(c.key);
    const restored = await Store.open(opts("c-restored", objects));
    try {
      expect(restored.recovery.restoredCheckpoint).toBeUndefined();
      expect(await snapshot(restored)).toEqual(before);
    } finally {
      await restored.close();
    }
  });

  it("an object store that stops listing after the switch does not fail a compaction that is done", async () => {
    class Unlistable extends Kept {
      broken = false;
      override async *list(prefix: string): AsyncGenerator<ObjectInfo> {
        if (this.broken) throw new StrataError("UNAVAILABLE", "the object store is unreachable (test)");
        yield* super.list(prefix);
      }
    }
    const objects = new Unlistable();
    const log = captureLogger();
    const store = await Store.open(opts("unlistable", objects, { logger: log.logger }));
    try {
      await workload(store, 8);
      await store.sealActive();
      await store.tier!.drained();
      const before = await snapshot(store);
      compactFaultHook.fn = (step) => {
        if (step === "switched") objects.broken = true;
      };
      const report = await store.compact({ sealActive: true });
      expect(report.runs).toBeGreaterThan(0);
      expect(report.objectBytesAfter).toBeUndefined();
      expect(log.find("compaction_measure_failed"), log.warnings.join("\n")).toMatchObject({ error: expect.stringContaining("the object store is unreachable (test)") });
      expect(await snapshot(store)).toEqual(before);
    } finally {
      compactFaultHook.fn = undefined;
      objects.broken = false;
      await store.close();
    }
  });

  it("a restore from a checkpoint made before the compaction reads the inputs (the output is an orphan)", async () => {
    const objects = new Kept();
    const store = await Store.open(opts("b", objects, { limits: { ...LIMITS, compactRetainMs: 3_600_000 } }));
    let before: unknown;
    try {
      await workload(store, 10);
      await store.sealActive();
      await store.tier!.drained();
      await store.tier!.checkpoint();
      before = await snapshot(store);
      const old = await listCheckpoints(objects, "srv");
      const report = await store.compact({ sealActive: true });
      expect(report.runs).toBeGreaterThan(0);
      expect(report.reclaimedSegments).toBe(0); // retained: nothing deleted
      await store.tier!.checkpoint();
      // Keep only the checkpoints from before the compaction.
      for (const c of await listCheckpoints(objects, "srv")) if (!old.some((o) => o.key === c.key)) await objects.delete(c.key);
    } finally {
      await store.close();
    }
    const restored = await Store.open(opts("b-restored", objects));
    try {
      expect(restored.recovery.restoredCheckpoint).toBeDefined();
      expect(await snapshot(restored)).toEqual(before);
    } finally {
      await restored.close();
    }
  });

  it("compacts inputs that are only in the object store, and keeps what a takeover pinned", async () => {
    const objects = new Kept();
    const store = await Store.open(opts("c", objects, { cacheBytes: 1 }));
    let before: unknown;
    try {
      await workload(store, 12);
      await store.sealActive();
      await store.tier!.drained();
      // Everything sealed is evicted (cacheBytes 1): the compaction fetches its inputs whole.
      expect(listSegmentIds(path.join(root, "c", "segments")).length).toBe(1);
      await writePin(objects, "srv", "other", 2);
      before = await snapshot(store);
      const report = await store.compact({ sealActive: true });
      expect(report.runs).toBeGreaterThan(0);
      const segs = [...store.index.segs.getRange({})];
      // Segments 1 and 2 are at or below the pinned cut: never compacted.
      expect(segs.find((e) => e.key === 1)?.value.state).not.toBe("superseded");
      expect(segs.some((e) => e.value.lo !== undefined && e.value.lo <= 2)).toBe(false);
      expect(await snapshot(store)).toEqual(before);
    } finally {
      await store.close();
    }
    const restored = await Store.open(opts("c-restored", objects));
    try {
      expect(await snapshot(restored)).toEqual(before);
    } finally {
      await restored.close();
    }
  });
});

describe("compaction on s3rver", () => {
  let s3: RunningS3rver;
  beforeAll(async () => (s3 = await startS3rver()), 30_000);
  afterAll(async () => s3?.stop());

  it("compacts, reclaims and restores", async () => {
    const make = () => new S3ObjectStore({ bucket: s3.bucket, prefix: "compact", endpoint: s3.endpoint, credentials: S3RVER_CREDENTIALS });
    const store = await Store.open(opts("s3", make()));
    let before: unknown;
    try {
      await workload(store, 8);
      before = await snapshot(store);
      const report = await store.compact({ sealActive: true });
      expect(report.runs).toBeGreaterThan(0);
      expect(report.objectBytesAfter!).toBeLessThan(report.objectBytesBefore!);
      expect(await snapshot(store)).toEqual(before);
    } finally {
      await store.close();
    }
    const restored = await Store.open(opts("s3-restored", make()));
    try {
      expect(await snapshot(restored)).toEqual(before);
    } finally {
      await restored.close();
    }
  });
});
