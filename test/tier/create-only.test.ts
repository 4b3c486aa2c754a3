/**
 * Segment objects are written create-only (src/tier/segment-ship.ts): a twin of a server (the same
 * id, another disk: a paused process woken after the server was restored elsewhere) that ships a
 * segment id the other already shipped must not overwrite it. Its segment is quarantined and
 * reported instead, on every backend (dir and memory enforce create-only, s3rver only best-effort).
 * The legitimate "already there" cases still count as shipped: a retry of a put whose success was
 * lost (also across a restart, also sealed with another blockBytes), a read-back damaged on the
 * way, and the segment active at open whose older version is in the object store.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withTimeout } from "../../src/with-timeout.js";
import { eventually } from "../helpers/wait.js";
import { captureLogger, type CapturedLog } from "../helpers/capture-logger.js";
import { StrataError } from "../../src/errors.js";
import { listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import { Store } from "../../src/store.js";
import { ForwardingObjectStore, MemoryObjectStore } from "../../src/testing/fault-store.js";
import { DirObjectStore } from "../../src/tier/dir-store.js";
import type { ByteRange, ObjectStore, PutIfAbsentResult } from "../../src/tier/object-store.js";
import { S3ObjectStore } from "../../src/tier/s3-store.js";
import { segmentKey } from "../../src/tier/segment-keys.js";
import { S3RVER_CREDENTIALS, startS3rver, type RunningS3rver } from "../../src/testing/s3rver.js";

const LIMITS = {
  chunkBytes: 16_384,
  headersBytesMax: 4096,
  recordBytesMax: 32_768,
  segmentBytesMax: 131_072,
  blockBytes: 4096,
  blockCacheBytes: 65_536,
  uploadRetryMaxMs: 50,
  sealIntervalMs: 100,
  objectAckTimeoutMs: 20_000,
  closeUploadWaitMs: 200,
};
const ID = "twin";
const LOC = "acct/twin/chat";
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "strata-create-only-"));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));
let n = 0;
const dataDir = (): string => path.join(scratch, `data-${n++}`);

/** An object store shared by several stores: closing one of them does not close it. */
class Shared extends ForwardingObjectStore {
  override async close(): Promise<void> {}
}

interface Opened {
  store: Store;
  /** What the store logged. */
  log: CapturedLog;
}

async function open(dir: string, objects: ObjectStore, limits: object = {}, cacheBytes?: number): Promise<Opened> {
  const log = captureLogger();
  const store = await Store.open({
    dir,
    id: ID,
    objectStore: objects,
    limits: { ...LIMITS, ...limits },
    sweepTimers: false,
    logger: log.logger,
    ...(cacheBytes !== undefined ? { cacheBytes } : {}),
  });
  return { store, log };
}


async function shipAll(store: Store): Promise<void> {
  await store.sealActive();
  await withTimeout(store.tier!.drained(), 20_000, "uploads to drain");
}

async function appendSome(store: Store, count: number): Promise<void> {
  const s = store.stream(LOC);
  for (let i = 0; i < count; i++) await s.append({ value: randomBytes(500) });
}

/** What an object ack of one more append answers: "ok" or the error code. */
async function objectAck(store: Store): Promise<string> {
  return withTimeout(
    store.stream(LOC).append({ value: randomBytes(100) }, { ack: "object" }).then(() => "ok", (e: unknown) => (StrataError.is(e) ? e.code : String(e))),
    20_000,
    "an object ack",
  );
}

let s3: RunningS3rver;
beforeAll(async () => {
  s3 = await startS3rver();
});
afterAll(async () => {
  await s3?.stop();
});

const backends: Array<[string, () => ObjectStore]> = [
  ["memory", () => new MemoryObjectStore()],
  ["dir", () => new DirObjectStore({ path: dataDir() })],
  ["s3rver (best-effort)", () => new S3ObjectStore({ bucket: s3.bucket, prefix: `co/${randomBytes(6).toString("hex")}`, endpoint: s3.endpoint, credentials: S3RVER_CREDENTIALS })],
];

describe.each(backends)("a twin with the same server id on the %s backend", (_name, backend) => {
  it("cannot overwrite a segment the other shipped first: it is quarantined, kept and reported", async () => {
    const objects = new Shared(backend());
    // The original server ships segments 1..k, then pauses (it stays open, shipping nothing).
    const a = await open(dataDir(), objects, {}, 1);
    await appendSome(a.store, 20);
    await shipAll(a.store);
    const seg = a.store.log.activeId; // the next segment id, k + 1, empty so far
    // Restored elsewhere from the object store: same id, another disk. It ships segment k + 1 first.
    const b = await open(dataDir(), objects);
    expect(b.store.log.activeId).toBe(seg);
    await appendSome(b.store, 10);
    await shipAll(b.store);
    const key = segmentKey(ID, seg);
    const theirs = await objects.get(key);
    expect(theirs).toBeDefined();

    // The paused one wakes up and ships its own segment k + 1 (other content).
    await appendSome(a.store, 5);
    expect(await objectAck(a.store)).toBe("CORRUPT");
    expect(a.store.log.activeId).toBeGreaterThan(seg);
    expect(Buffer.from((await objects.get(key))!).equals(Buffer.from(theirs!))).toBe(true);
    expect(a.store.tier!.stats.uploadConflicts).toBe(1);
    expect(a.log.all("segment_quarantined"), a.log.warnings.join("\n")).toEqual([
      expect.objectContaining({ level: 50, code: "CORRUPT", segment: seg, reason: "conflict", key, file: segmentPath(path.join(a.store.config.dir, "segments"), seg) }),
    ]);
    expect(a.store.tier!.isUploaded(seg)).toBe(false);
    expect(a.store.tier!.firstUnshipped(a.store.log.activeId)).toBe(seg);
    // Kept locally although cacheBytes is 1 (everything uploaded was evicted), and still readable.
    expect(listSegmentIds(path.join(a.store.config.dir, "segments"))).toContain(seg);
    expect(a.store.tier!.stats.evictions).toBeGreaterThan(0);
    // No checkpoint may describe a log that parted from the object store's.
    await expect(a.store.tier!.checkpoint()).rejects.toMatchObject({ code: "CORRUPT" });
    // It goes on shipping the segments after it (the brief's rule for quarantined segments).
    await appendSome(a.store, 3);
    await shipAll(a.store);
    expect(a.store.tier!.isUploaded(seg + 1)).toBe(true);

    // A restart of the twin does not take the other's object for its own: checked and quarantined again.
    const dirA = a.store.config.dir;
    await a.store.close();
    const again = await open(dirA, objects, {}, 1);
    try {
      await eventually(() => again.store.tier!.stats.uploadConflicts === 1, 10_000, "the conflict to be found again");
      expect(again.store.tier!.isUploaded(seg)).toBe(false);
      expect(again.log.find("segment_quarantined"), again.log.warnings.join("\n")).toMatchObject({ code: "CORRUPT", segment: seg, reason: "conflict", key });
      expect(listSegmentIds(path.join(dirA, "segments"))).toContain(seg);
      expect(Buffer.from((await objects.get(key))!).equals(Buffer.from(theirs!))).toBe(true);
      // The other one never noticed anything.
      expect(b.store.tier!.stats.uploadConflicts).toBe(0);
      expect(b.store.tier!.stats.quarantined).toBe(0);
    } finally {
      await again.store.close();
      await b.store.close();
      await objects.close().then(() => (objects as unknown as { inner: ObjectStore }).inner.close());
    }
  });
});

/** Applies the first create of a segment object, then loses its reply (as a network or a crash does). */
class LostReply extends Shared {
  lost = 0;
  constructor(inner: ObjectStore, private readonly times = 1) {
    super(inner);
  }
  override async putIfAbsent(key: string, body: Uint8Array): Promise<PutIfAbsentResult> {
    const result = await this.inner.putIfAbsent(key, body);
    if (key.includes("/segments/") && this.lost < this.times) {
      this.lost++;
      throw new StrataError("UNAVAILABLE", "reply lost after the write was applied");
    }
    return result;
  }
}

/** Damages the first whole read of a segment object on the way (the stored object is intact). */
class FlipOnce extends Shared {
  flipped = 0;
  override async get(key: string, range?: ByteRange): Promise<Uint8Array | undefined> {
    const body = await this.inner.get(key, range);
    if (range === undefined && body !== undefined && body.length > 0 && key.includes("/segments/") && this.flipped === 0) {
      this.flipped++;
      const copy = new Uint8Array(body);
      copy[copy.length >> 1]! ^= 0x40;
      return copy;
    }
    return body;
  }
}

describe("an object already there that is this very segment", () => {
  it("after a lost reply is taken as shipped, not as a conflict", async () => {
    const objects = new LostReply(new MemoryObjectStore());
    const { store, log } = await open(dataDir(), objects);
    try {
      await appendSome(store, 5);
      expect(await objectAck(store)).toBe("ok");
      expect(objects.lost).toBe(1);
      expect(store.tier!.stats.uploadConflicts).toBe(0);
      expect(store.tier!.stats.quarantined).toBe(0);
      expect(log.events.filter((e) => e.code === "CORRUPT" || e.msg.includes("CORRUPT"))).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it("after a crash that left it unrecorded is taken as shipped at the next start, even sealed with another blockBytes", async () => {
    const memory = new MemoryObjectStore();
    const dir = dataDir();
    // Every segment put is applied and its reply lost, until the store closes: the index still
    // says "sealed" for a segment that is in the object store.
    const first = await open(dir, new LostReply(memory, Number.MAX_SAFE_INTEGER));
    await appendSome(first.store, 20);
    await first.store.sealActive();
    const seg = first.store.log.activeId - 1;
    await eventually(() => first.store.tier!.stats.uploadFailures > 0, 10_000, "a failed upload");
    await first.store.close();
    expect(await memory.head(segmentKey(ID, seg))).toBeDefined();

    const second = await open(dir, new Shared(memory), { blockBytes: 8192 }, 1);
    try {
      await withTimeout(second.store.tier!.drained(), 10_000, "uploads to drain");
      expect(second.store.tier!.isUploaded(seg)).toBe(true);
      expect(second.store.tier!.stats.uploadConflicts).toBe(0);
      expect(second.store.tier!.stats.quarantined).toBe(0);
      // Uploaded, so it could be evicted (cacheBytes 1), and is read back from the object store.
      expect(listSegmentIds(path.join(dir, "segments"))).not.toContain(seg);
      expect(second.store.inventory(LOC).lastSeq).toBe(20);
      expect(await second.store.stream(LOC).get(1)).toBeDefined();
    } finally {
      await second.store.close();
      await memory.close();
    }
  });

  it("is not taken for a conflict when one read of it was damaged on the way", async () => {
    const memory = new MemoryObjectStore();
    const objects = new FlipOnce(new LostReply(memory));
    const { store } = await open(dataDir(), objects);
    try {
      await appendSome(store, 5);
      expect(await objectAck(store)).toBe("ok");
      expect(objects.flipped).toBe(1);
      expect(store.tier!.stats.uploadConflicts).toBe(0);
      expect(store.tier!.stats.quarantined).toBe(0);
    } finally {
      await store.close();
      await memory.close();
    }
  });
});

describe("the segment active at open whose older version is in the object store", () => {
  it("is shipped again, replacing the shorter object (the one plain put)", async () => {
    const memory = new MemoryObjectStore();
    const dir = dataDir();
    const first = await open(dir, new Shared(memory));
    await appendSome(first.store, 10);
    await shipAll(first.store);
    const seg = first.store.log.activeId - 1;
    const next = first.store.log.activeId;
    await first.store.close();
    // A crash after segment `seg` was shipped and before the segment after it existed.
    fs.rmSync(segmentPath(path.join(dir, "segments"), next));
    const shorter = (await memory.head(segmentKey(ID, seg)))!.size;

    const second = await open(dir, new Shared(memory));
    try {
      expect(second.store.log.activeId).toBe(seg); // it takes appends again
      await appendSome(second.store, 5);
      expect(await objectAck(second.store)).toBe("ok");
      expect((await memory.head(segmentKey(ID, seg)))!.size).toBeGreaterThan(shorter);
      expect(second.store.tier!.stats.uploadConflicts).toBe(0);
      expect(second.store.tier!.stats.quarantined).toBe(0);
    } finally {
      await second.store.close();
    }
    // And a restore from the object store alone finds all 16 records.
    const restored = await open(dataDir(), new Shared(memory));
    try {
      expect(restored.store.inventory(LOC).lastSeq).toBe(16);
    } finally {
      await restored.store.close();
      await memory.close();
    }
  });
});
