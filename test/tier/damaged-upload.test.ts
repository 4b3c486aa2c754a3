/**
 * One bad pending segment must not stop tiering (issue #8 item 6). A segment waiting for upload
 * with a damaged record in its middle is shipped with the damage carried as raw bytes (loudly),
 * the segments after it are shipped too, `ack: "object"` writes and checkpoints go on, the damaged
 * segment is never evicted, and a restore from the object store on an empty disk serves everything
 * but the damaged record. A segment that cannot be sealed at all (its header is damaged) is
 * quarantined: skipped with a loud warning, kept locally, and the tier moves on.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Store } from "../../src/mod.js";
import { StrataError } from "../../src/errors.js";
import { silentLogger, type Logger } from "../../src/logger.js";
import { listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import { MemoryObjectStore } from "../../src/testing/fault-store.js";
import { sealSegment, unsealSegment } from "../../src/tier/sealed-segment.js";
import { captureLogger } from "../helpers/capture-logger.js";
import { all } from "../helpers/collect.js";

const LIMITS = { segmentBytesMax: 16 * 1024, recordBytesMax: 8192, chunkBytes: 1024, headersBytesMax: 1024, objectAckTimeoutMs: 10_000, blockBytes: 2048 };
const MESSAGES = 1000;
const enc = (s: string) => new TextEncoder().encode(s);
const valueOf = (seq: number) => enc(`message number ${seq} `.repeat(4));

/** Outlives the stores using it (a Store closes the object store it is given). */
class KeptMemoryStore extends MemoryObjectStore {
  override async close(): Promise<void> {}
}

let scratch: string;
let n = 0;
beforeAll(() => (scratch = fs.mkdtempSync(path.join(os.tmpdir(), "strata-damaged-upload-"))));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/**
 * Writes MESSAGES messages over several segments with no tier (so every segment is pending once a
 * tier is added), and returns the pointer of a message in the middle of an older segment.
 */
async function writeLocally(dir: string): Promise<{ seq: number; seg: number; off: number; len: number }> {
  const store = await Store.open({ dir, limits: LIMITS, sweepTimers: false });
  for (let seq = 1; seq <= MESSAGES; seq += 50) {
    await store.stream("t/s").appendMany(Array.from({ length: 50 }, (_, k) => ({ message: { value: valueOf(seq + k) } })));
  }
  const meta = store.index.locs.get("t/s")!;
  const segs = listSegmentIds(path.join(dir, "segments"));
  expect(segs.length).toBeGreaterThan(4);
  // A message in the middle of the second segment.
  let pick: { seq: number; seg: number; off: number; len: number } | undefined;
  const inSecond: Array<{ seq: number; seg: number; off: number; len: number }> = [];
  for (const { key, value } of store.index.seqs.getRange({ start: [meta.id, 0], end: [meta.id, MESSAGES + 1] })) {
    if (value[0] === segs[1]) inSecond.push({ seq: key[1] as number, seg: value[0], off: value[1], len: value[2] });
  }
  pick = inSecond[inSecond.length >> 1];
  await store.close();
  return pick!;
}

function flip(file: string, at: number): void {
  const b = fs.readFileSync(file);
  b[at]! ^= 0x20;
  fs.writeFileSync(file, b);
}

async function openTiered(dir: string, objects: MemoryObjectStore, logger?: Logger, cacheBytes?: number): Promise<Store> {
  return Store.open({ dir, id: "dmg", objectStore: objects, limits: LIMITS, sweepTimers: false, ...(logger ? { logger } : {}), ...(cacheBytes ? { cacheBytes } : {}) });
}

describe("a damaged pending segment", () => {
  it("is shipped with its damage carried, later segments and object acks go on, and a restore serves everything else", async () => {
    const dir = path.join(scratch, `data-${n++}`);
    const bad = await writeLocally(dir);
    flip(segmentPath(path.join(dir, "segments"), bad.seg), bad.off + bad.len - 5);

    const objects = new KeptMemoryStore();
    const log = captureLogger();
    const store = await openTiered(dir, objects, log.logger, 40 * 1024);
    await withDeadline(store.tier!.drained(), 10_000, "the uploads to drain");
    const sealed = listSegmentIds(path.join(dir, "segments")).filter((s) => s !== store.log.activeId);
    for (const seg of [...store.recovery.localIds].filter((s) => s !== store.log.activeId)) expect(store.tier!.isUploaded(seg), `segment ${seg}`).toBe(true);
    expect(log.find("segment_shipped_damaged"), log.warnings.join("\n")).toMatchObject({ level: 50, code: "CORRUPT", segment: bad.seg, ranges: [expect.objectContaining({ offset: bad.off })] });
    expect(store.tier!.stats.damagedUploads).toBe(1);

    // Object acks, checkpoints and eviction all go on.
    const acked = await withDeadline(store.stream("t/s").append({ value: valueOf(MESSAGES + 1) }, { ack: "object" }), 10_000, "an object ack");
    expect(acked.seq).toBe(MESSAGES + 1);
    await withDeadline(store.tier!.checkpoint(), 10_000, "a checkpoint");
    expect(store.tier!.stats.checkpoints).toBe(1);
    expect(store.tier!.stats.evictions).toBeGreaterThan(0);
    // The damaged segment was not shipped whole: it is never evicted.
    expect(sealed).toContain(bad.seg);
    expect(fs.existsSync(segmentPath(path.join(dir, "segments"), bad.seg))).toBe(true);
    expect(store.index.segs.get(bad.seg)?.state).toBe("damaged");
    // The damaged record reads as CORRUPT; the rest is served.
    expect(await store.stream("t/s").get(bad.seq).then(() => "served", (e: unknown) => (StrataError.is(e, "CORRUPT") ? "CORRUPT" : String(e)))).toBe("CORRUPT");
    expect((await store.stream("t/s").get(bad.seq + 1))!.value).toEqual(valueOf(bad.seq + 1));
    await store.close();

    // A restore on an empty disk, from the object store alone.
    const restored = await openTiered(path.join(scratch, `data-${n++}`), objects);
    const got = await all(restored.stream("t/s").getAll({ startSeq: 1 })).catch((e: unknown) => e);
    if (Array.isArray(got)) {
      // Replayed from the segments: the damaged record was skipped.
      expect(got.map((m) => m.seq)).toEqual(Array.from({ length: MESSAGES + 1 }, (_, i) => i + 1).filter((s) => s !== bad.seq));
    } else {
      // Restored from the checkpoint, whose index still points at the damaged record: CORRUPT there.
      expect(StrataError.is(got, "CORRUPT")).toBe(true);
    }
    for (let seq = 1; seq <= MESSAGES + 1; seq++) {
      const outcome = await restored.stream("t/s").get(seq).then(
        (m) => (m && Buffer.from(m.value).equals(Buffer.from(valueOf(seq))) ? "ok" : `wrong: ${m ? Buffer.from(m.value).toString() : "absent"}`),
        (e: unknown) => (StrataError.is(e, "CORRUPT") ? "CORRUPT" : String(e)),
      );
      if (seq === bad.seq) expect(["CORRUPT", "wrong: absent"]).toContain(outcome);
      else expect(outcome, `seq ${seq}`).toBe("ok");
    }
    await restored.close();
  }, 30_000);

  it("is quarantined when it cannot be sealed at all, and the tier keeps moving", async () => {
    const dir = path.join(scratch, `data-${n++}`);
    const bad = await writeLocally(dir);
    flip(segmentPath(path.join(dir, "segments"), bad.seg), 2); // its header

    const objects = new KeptMemoryStore();
    const log = captureLogger();
    const store = await openTiered(dir, objects, log.logger, 40 * 1024);
    await withDeadline(store.tier!.drained(), 10_000, "the uploads to drain");
    expect(store.tier!.isUploaded(bad.seg)).toBe(false);
    expect(store.tier!.isUploaded(bad.seg + 1)).toBe(true);
    expect(store.tier!.stats.quarantined).toBe(1);
    expect(log.all("segment_quarantined"), log.warnings.join("\n")).toEqual([expect.objectContaining({ level: 50, code: "CORRUPT", segment: bad.seg, reason: "unsealable" })]);
    // Permanent, so not retried: one failure, not a retry loop.
    expect(store.tier!.stats.uploadFailures).toBe(1);
    const acked = await withDeadline(store.stream("t/s").append({ value: valueOf(MESSAGES + 1) }, { ack: "object" }), 10_000, "an object ack");
    expect(acked.seq).toBe(MESSAGES + 1);
    await withDeadline(store.tier!.checkpoint(), 10_000, "a checkpoint");
    // A repeated object ack of a record in the quarantined segment is answered CORRUPT at once.
    const err = await store.ackedSeq("t/s", bad.seq).catch((e: unknown) => e);
    expect(StrataError.is(err, "CORRUPT")).toBe(true);
    expect(fs.existsSync(segmentPath(path.join(dir, "segments"), bad.seg))).toBe(true);
    await store.close();
  }, 30_000);
});

describe("sealing a damaged segment", () => {
  it("carries every damaged range as raw bytes: unsealing gives back the very file", async () => {
    const dir = path.join(scratch, `data-${n++}`);
    const bad = await writeLocally(dir);
    const file = segmentPath(path.join(dir, "segments"), bad.seg);
    const raw = fs.readFileSync(file);
    for (const at of [bad.off, bad.off + 4, bad.off + 8, bad.off + bad.len - 1, raw.byteLength - 1]) {
      const b = Buffer.from(raw);
      b[at]! ^= 0xff;
      const ranges: Array<{ off: number; bytes: number }> = [];
      const sealed = sealSegment(bad.seg, b, LIMITS.blockBytes, LIMITS.recordBytesMax, (d) => ranges.push(d));
      expect(unsealSegment(bad.seg, sealed).equals(b), `byte ${at}`).toBe(true);
      expect(ranges, `byte ${at}`).toHaveLength(1);
      expect(ranges[0]!.off <= at && at < ranges[0]!.off + ranges[0]!.bytes, `byte ${at}`).toBe(true);
    }
    // A run of garbage longer than a block is split into blocks like any other bytes.
    const garbage = Buffer.concat([raw, Buffer.alloc(5 * LIMITS.blockBytes, 0xab)]);
    const sealed = sealSegment(bad.seg, garbage, LIMITS.blockBytes, LIMITS.recordBytesMax);
    expect(unsealSegment(bad.seg, sealed).equals(garbage)).toBe(true);
  });
});

/** A logger whose warn and error throw: something outside an upload that fails. */
const throwingLogger: Logger = {
  ...silentLogger,
  warn: () => {
    throw new Error("a logger that throws");
  },
  error: () => {
    throw new Error("a logger that throws");
  },
  child: () => throwingLogger,
};

describe("the upload loop", () => {
  it("does not spin when something outside an upload fails (here the logger): the next attempt waits uploadRetryMaxMs", async () => {
    const dir = path.join(scratch, `data-${n++}`);
    const retryMs = 300;
    const puts: number[] = [];
    let reachedTwo: () => void = () => undefined;
    const two = new Promise<void>((resolve) => (reachedTwo = resolve));
    class FailingStore extends KeptMemoryStore {
      override async put(key: string, body: Uint8Array): Promise<void> {
        if (key.includes("seg")) {
          puts.push(performance.now());
          if (puts.length === 2) reachedTwo();
          throw new StrataError("UNAVAILABLE", "simulated outage");
        }
        return super.put(key, body);
      }
    }
    const store = await Store.open({
      dir, id: "spin", objectStore: new FailingStore(), limits: { ...LIMITS, uploadRetryMaxMs: retryMs, closeUploadWaitMs: 100 }, sweepTimers: false,
      logger: throwingLogger,
    });
    try {
      await store.stream("t/s").append({ value: enc("x") });
      await store.sealActive();
      await withDeadline(two, 10_000, "a second upload attempt");
      // Before the fix the loop restarted at once, thousands of times, and starved the process.
      expect(puts[1]! - puts[0]!).toBeGreaterThanOrEqual(retryMs * 0.9);
      expect(store.tier!.stats.uploadFailures).toBeLessThan(10);
    } finally {
      await store.close();
    }
  });
});

describe("an object ack of a record damaged before it was shipped", () => {
  it("answers CORRUPT instead of acknowledging bytes the object store does not hold", async () => {
    const dir = path.join(scratch, `data-${n++}`);
    const store = await openTiered(dir, new KeptMemoryStore());
    try {
      const s = store.stream("t/ack");
      const { seq } = await s.append({ value: valueOf(1) }, { msgId: "m" });
      await s.append({ value: valueOf(2) });
      const meta = store.index.locs.get("t/ack")!;
      const [seg, off, len] = store.index.seqs.get([meta.id, seq])!;
      // The bytes rot on the local disk after the fsync, before the segment is sealed.
      flip(segmentPath(path.join(dir, "segments"), seg!), off! + len! - 5);
      // A repeat of the msgId with ack "object" waits for the original record to be shipped.
      const outcome = await withDeadline(
        s.append({ value: valueOf(1) }, { msgId: "m", ack: "object" }).then(() => "acknowledged", (e: unknown) => (StrataError.is(e, "CORRUPT") ? "CORRUPT" : String(e))),
        10_000,
        "the object ack",
      );
      expect(outcome).toBe("CORRUPT");
      // A record shipped whole is still acknowledged.
      await expect(withDeadline(s.append({ value: valueOf(3) }, { ack: "object" }), 10_000, "an object ack")).resolves.toMatchObject({ seq: 3 });
    } finally {
      await store.close();
    }
  });
});
