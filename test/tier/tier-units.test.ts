/**
 * Focused tests of the tier's parts, each pinned to a failure it once had or could have: object
 * stores handing out views of what they store, sealing that stalls the event loop, a checkpoint
 * whose index points past what was uploaded, a damaged checkpoint, a checkpoint of an idle store
 * that waits for a seal that never comes, a failed checkpoint that is never retried, eviction that
 * ignores the segments not yet uploaded, concurrent reads of one block fetching it twice, values
 * handed out as views of a cached block, and a store that cannot open while S3 is down.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { frame } from "../../src/log/framing.js";
import { encodeRecord } from "../../src/log/record.js";
import { listSegmentIds, segmentHeader } from "../../src/log/segment-files.js";
import { Store } from "../../src/store.js";
import { FaultyObjectStore, MemoryObjectStore } from "../../src/testing/fault-store.js";
import { sealSegment, sealSegmentAsync, unsealSegment } from "../../src/tier/sealed-segment.js";
import { checkpointsPrefix, segmentKey } from "../../src/tier/segment-keys.js";

const LIMITS = {
  chunkBytes: 16_384,
  headersBytesMax: 4096,
  recordBytesMax: 32_768,
  segmentBytesMax: 131_072,
  blockBytes: 4096,
  blockCacheBytes: 65_536,
  uploadRetryMaxMs: 50,
  sealIntervalMs: 100,
  objectAckTimeoutMs: 60_000,
};
const LOC = "acct/unit/chat";
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "strata-tier-units-"));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));
let n = 0;

/** Outlives the stores using it (a Store closes the object store it is given). */
class KeptMemoryStore extends MemoryObjectStore {
  override async close(): Promise<void> {}
}

/** Counts HEAD requests. */
class HeadCountingStore extends KeptMemoryStore {
  heads = 0;
  override head(key: string): Promise<{ size: number } | undefined> {
    this.heads += 1;
    return super.head(key);
  }
}

function dataDir(): string {
  return path.join(scratch, `data-${n++}`);
}

function open(dir: string, objectStore: MemoryObjectStore | FaultyObjectStore, extra: { cacheBytes?: number; limits?: object; sweepTimers?: boolean } = {}): Promise<Store> {
  return Store.open({
    dir,
    id: "unit",
    objectStore,
    limits: { ...LIMITS, ...extra.limits },
    sweepTimers: extra.sweepTimers ?? false,
    ...(extra.cacheBytes !== undefined ? { cacheBytes: extra.cacheBytes } : {}),
  });
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/** Polls `condition` (for what has no event) until it holds or `ms` pass. */
async function eventually(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function uploadAll(store: Store): Promise<void> {
  await store.sealActive();
  await withDeadline(store.tier!.drained(), 20_000, "uploads to drain");
}

async function appendMany(store: Store, values: Uint8Array[]): Promise<void> {
  const s = store.stream(LOC);
  for (let i = 0; i < values.length; i += 50) await Promise.all(values.slice(i, i + 50).map((value) => s.append({ value })));
}

function values(count: number, bytes = 1000): Uint8Array[] {
  return Array.from({ length: count }, () => randomBytes(bytes));
}

async function expectAll(store: Store, written: Uint8Array[]): Promise<void> {
  expect(store.inventory(LOC).lastSeq).toBe(written.length);
  for (let seq = 1; seq <= written.length; seq++) {
    const m = await store.stream(LOC).get(seq);
    expect(m && Buffer.from(m.value).equals(Buffer.from(written[seq - 1]!)), `seq ${seq}`).toBe(true);
  }
}

async function checkpointKeys(objects: MemoryObjectStore): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of objects.list(checkpointsPrefix("unit"))) keys.push(o.key);
  return keys;
}

describe("in-memory object stores", () => {
  it("hand out copies that share no memory with the stored object, also for Buffer bodies", async () => {
    const memory = new MemoryObjectStore();
    const body = Buffer.from("stored bytes"); // Buffer#slice() is a view, not a copy
    await memory.put("k", body);
    body[0] = 0x58;
    const got = (await memory.get("k"))!;
    got[1] = 0x58;
    (await memory.get("k", { offset: 0, length: 4 }))![2] = 0x58;
    expect(Buffer.from((await memory.get("k"))!).toString()).toBe("stored bytes");

    // A corrupted read damages the copy handed out, never the stored object.
    const faulty = new FaultyObjectStore(memory, { seed: 3, corruptRate: 1 });
    for (let i = 0; i < 5; i++) expect(Buffer.from((await faulty.get("k"))!).toString()).not.toBe("stored bytes");
    expect(Buffer.from((await memory.get("k"))!).toString()).toBe("stored bytes");
  });
});

describe("sealing", () => {
  it("builds the same object asynchronously, giving the event loop turns on a large segment", async () => {
    const parts = [segmentHeader(7)];
    for (let seq = 1; seq <= 3000; seq++) {
      parts.push(frame(encodeRecord({ t: "sset", loc: LOC, seq, rev: seq, ts: 1, value: randomBytes(1000), size: 1000 })));
    }
    const raw = Buffer.concat(parts);
    let turns = 0;
    const ticker = setInterval(() => turns++, 0);
    const sealed = await sealSegmentAsync(7, raw, 4096, 32_768);
    clearInterval(ticker);
    expect(turns).toBeGreaterThan(0);
    expect(sealed.equals(sealSegment(7, raw, 4096, 32_768))).toBe(true);
    expect(unsealSegment(7, sealed).equals(raw)).toBe(true);
  });
});

describe("index checkpoints", () => {
  it("are put only once the segments their snapshot points into are uploaded", async () => {
    const memory = new KeptMemoryStore();
    const dir = dataDir();
    let faulty = new FaultyObjectStore(memory, { seed: 1 });
    let store = await open(dir, faulty);
    const written = values(40);
    await appendMany(store, written.slice(0, 20));
    // Between the checkpoint's start and its snapshot, the log moves on to a new segment: the
    // snapshot then reflects records the segment named at the start does not hold.
    const root = store.index.root;
    const backup = root.backup.bind(root);
    const s = store;
    root.backup = async (file: string, compact: boolean) => {
      await s.sealActive();
      await appendMany(s, written.slice(20, 30));
      return backup(file, compact);
    };
    await store.tier!.checkpoint();
    // Later writes never reach the object store: the disk is lost before they are uploaded.
    faulty.setOffline(true);
    await appendMany(store, written.slice(30));
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });

    faulty = new FaultyObjectStore(memory, { seed: 2 });
    store = await open(dir, faulty);
    try {
      expect(store.recovery.restoredCheckpoint).toBeDefined();
      // Whatever the restored index holds is readable: nothing points at a missing segment.
      await expectAll(store, written.slice(0, store.inventory(LOC).lastSeq));
      expect(store.inventory(LOC).lastSeq).toBeGreaterThanOrEqual(30);
    } finally {
      await store.close();
    }
  });

  it("fall back to an older checkpoint, then to replaying every segment, when the newer ones are damaged", async () => {
    const memory = new KeptMemoryStore();
    const dir = dataDir();
    let store = await open(dir, memory, { cacheBytes: 1 });
    const written = values(300);
    await appendMany(store, written.slice(0, 100));
    await store.tier!.checkpoint();
    await appendMany(store, written.slice(100, 200));
    await store.tier!.checkpoint();
    await appendMany(store, written.slice(200));
    await uploadAll(store);
    await store.close();
    const [older, newer] = await checkpointKeys(memory);
    expect(older && newer).toBeTruthy();

    const damage = async (key: string) => {
      const body = (await memory.get(key))!;
      body[body.length >> 1]! ^= 0x10;
      await memory.put(key, body);
    };
    const restore = async () => {
      fs.rmSync(dir, { recursive: true, force: true });
      const s = await open(dir, memory, { cacheBytes: 1 });
      try {
        await expectAll(s, written);
        return s.recovery;
      } finally {
        await s.close();
      }
    };
    const newest = await restore();
    await damage(newer!);
    const fallback = await restore();
    expect(fallback.restoredCheckpoint).toBeDefined();
    expect(fallback.restoredCheckpoint!.seg).toBeLessThan(newest.restoredCheckpoint!.seg);
    expect(fallback.replayed).toBeGreaterThan(newest.replayed);
    await damage(older!);
    const replay = await restore();
    expect(replay.restoredCheckpoint).toBeUndefined();
    expect(replay.replayed).toBe(300);
  });

  it("of an idle store right after a reopen complete at once instead of waiting for a seal", async () => {
    const memory = new KeptMemoryStore();
    const dir = dataDir();
    let store = await open(dir, memory);
    await appendMany(store, values(10));
    await store.close();
    store = await open(dir, memory); // the active segment is new and empty
    try {
      await withDeadline(store.tier!.checkpoint(), 5000, "the checkpoint");
      expect(store.tier!.stats.checkpoints).toBe(1);
      expect(await checkpointKeys(memory)).toHaveLength(1);
    } finally {
      await store.close();
    }
  });

  it("are retried by the maintenance timer after a failure, even with no new writes", async () => {
    const memory = new KeptMemoryStore();
    const faulty = new FaultyObjectStore(memory, { seed: 5 });
    const store = await open(dataDir(), faulty, { sweepTimers: true, limits: { checkpointIntervalMs: 50, objectAckTimeoutMs: 100, sealIntervalMs: 20 } });
    try {
      faulty.setOffline(true);
      await appendMany(store, values(5));
      await eventually(() => store.tier!.stats.checkpointFailures > 0, 10_000, "a failed checkpoint");
      faulty.setOffline(false);
      await eventually(() => store.tier!.stats.checkpoints > 0, 10_000, "a checkpoint after the object store came back");
      expect(await checkpointKeys(memory)).toHaveLength(1);
    } finally {
      await store.close();
    }
  });
});

describe("eviction", () => {
  it("counts segments waiting for upload against cacheBytes", async () => {
    const memory = new KeptMemoryStore();
    const faulty = new FaultyObjectStore(memory, { seed: 9 });
    const dir = dataDir();
    const store = await open(dir, faulty, { cacheBytes: 200_000 });
    try {
      await appendMany(store, values(100));
      await uploadAll(store);
      const uploaded = listSegmentIds(path.join(dir, "segments")).filter((seg) => seg !== store.log.activeId);
      expect(uploaded.length).toBeGreaterThan(0); // within budget, kept
      faulty.setOffline(true);
      await appendMany(store, values(250)); // two segments' worth that cannot be uploaded
      await store.sealActive();
      expect(store.tier!.backlog).toBeGreaterThanOrEqual(2);
      // The uploaded segments made way: only segments that cannot be evicted exceed the budget.
      const local = listSegmentIds(path.join(dir, "segments"));
      expect(local.filter((seg) => uploaded.includes(seg))).toEqual([]);
      faulty.setOffline(false);
      await withDeadline(store.tier!.drained(), 20_000, "uploads to drain");
      expect(store.tier!.localSegmentBytes).toBeLessThanOrEqual(200_000);
    } finally {
      await store.close();
    }
  });
});

describe("opening", () => {
  it("works while the object store is down, from what the local index knows was uploaded", async () => {
    const memory = new KeptMemoryStore();
    const dir = dataDir();
    const written = values(200);
    let faulty = new FaultyObjectStore(memory, { seed: 11 });
    let store = await open(dir, faulty, { cacheBytes: 1 });
    await appendMany(store, written.slice(0, 150));
    await uploadAll(store); // evicted: only in the object store now
    const evicted = store.tier!.stats.evictions;
    expect(evicted).toBeGreaterThan(0);
    await appendMany(store, written.slice(150, 190)); // local only
    faulty.setOffline(true);
    await store.close();

    faulty = new FaultyObjectStore(memory, { seed: 12 });
    faulty.setOffline(true);
    store = await open(dir, faulty, { cacheBytes: 1, limits: { objectAckTimeoutMs: 200 } });
    try {
      expect(store.recovery.tierIds.length).toBe(evicted);
      // What is local is served and writes go on; what is only in the object store waits for it.
      for (let seq = 151; seq <= 190; seq++) expect(Buffer.from((await store.stream(LOC).get(seq))!.value).equals(Buffer.from(written[seq - 1]!))).toBe(true);
      const err = await store.stream(LOC).get(1).then(() => undefined, (e: unknown) => e);
      expect(StrataError.is(err, "UNAVAILABLE")).toBe(true);
      await appendMany(store, written.slice(190, 199));
      const ack = await store.stream(LOC).append({ value: written[199]! }, { ack: "object" }).then(() => undefined, (e: unknown) => e);
      expect(StrataError.is(ack, "UNAVAILABLE")).toBe(true);
      // Back up: the segments sealed meanwhile are shipped, and everything is readable.
      faulty.setOffline(false);
      await withDeadline(store.tier!.drained(), 20_000, "uploads to catch up");
      await expectAll(store, written);
    } finally {
      await store.close();
    }
  });

  it("does not finish a restore that was cut short from its partial index while the object store is down", async () => {
    const memory = new KeptMemoryStore();
    const dir = dataDir();
    const written = values(300);
    let store = await open(dir, memory, { cacheBytes: 1 });
    await appendMany(store, written.slice(0, 100));
    await uploadAll(store);
    // Taken with nothing written since: it names the uploaded segment, which it knows as evicted.
    await store.tier!.checkpoint();
    await appendMany(store, written.slice(100)); // in segments after the checkpoint
    await uploadAll(store);
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });

    // The restore gets the checkpoint, then fails fetching the segments after it; then listings fail.
    class Flaky extends KeptMemoryStore {
      constructor(
        private readonly inner: MemoryObjectStore,
        private readonly fail: "segment gets" | "lists",
      ) {
        super();
      }
      override async get(key: string, range?: { offset: number; length: number }): Promise<Uint8Array | undefined> {
        if (this.fail === "segment gets" && range === undefined && key === segmentKey("unit", 2)) throw new StrataError("UNAVAILABLE", "injected: get failed");
        return this.inner.get(key, range);
      }
      override async *list(prefix: string): AsyncGenerator<{ key: string; size: number }> {
        if (this.fail === "lists") throw new StrataError("UNAVAILABLE", "injected: list failed");
        yield* this.inner.list(prefix);
      }
    }
    const cut = await open(dir, new Flaky(memory, "segment gets")).then(() => undefined, (e: unknown) => e);
    expect(StrataError.is(cut, "UNAVAILABLE"), "the restore cut short").toBe(true);
    // The index left behind knows nothing of the later segments: it must not pass for a complete one.
    const refused = await open(dir, new Flaky(memory, "lists")).then(() => undefined, (e: unknown) => e);
    expect(StrataError.is(refused, "UNAVAILABLE"), "the open with listings failing").toBe(true);
    // Back up, the restore completes.
    store = await open(dir, memory, { cacheBytes: 1 });
    try {
      await expectAll(store, written);
    } finally {
      await store.close();
    }
  });

  it("still refuses to restore an empty disk while the object store is down", async () => {
    const faulty = new FaultyObjectStore(new MemoryObjectStore(), { seed: 13 });
    faulty.setOffline(true);
    const err = await open(dataDir(), faulty).then(() => undefined, (e: unknown) => e);
    expect(StrataError.is(err, "UNAVAILABLE")).toBe(true);
  });
});

/** A store holding `written`, all uploaded, reopened with a cache so small that every segment is evicted. */
async function reopenedAfterUpload(memory: KeptMemoryStore, written: Uint8Array[]): Promise<Store> {
  const dir = dataDir();
  const store = await open(dir, memory, { cacheBytes: 1 });
  await appendMany(store, written);
  await uploadAll(store);
  await store.close();
  return open(dir, memory, { cacheBytes: 1 });
}

describe("fault-in", () => {
  it("shares one fetch between concurrent reads of the same block", async () => {
    const memory = new KeptMemoryStore();
    const written = values(200);
    const store = await reopenedAfterUpload(memory, written);
    try {
      const before = store.tier!.reader.fetches;
      // seqs 1..3 are in the first block of the first segment (4096-byte blocks of ~1 KiB records).
      const got = await Promise.all([1, 2, 3, 1, 2].map((seq) => store.stream(LOC).get(seq)));
      got.forEach((m, i) => expect(Buffer.from(m!.value).equals(Buffer.from(written[[1, 2, 3, 1, 2][i]! - 1]!))).toBe(true));
      expect(store.tier!.reader.fetches - before).toBe(2); // the footer (tail read) and the block
      expect(await memory.head(segmentKey("unit", 1))).toBeDefined();
    } finally {
      await store.close();
    }
  });

  it("knows the object sizes from the listing made at open: faulting in after a reopen needs no HEAD", async () => {
    const memory = new HeadCountingStore();
    const written = values(200);
    const store = await reopenedAfterUpload(memory, written);
    try {
      expect(store.tier!.isLocal(1)).toBe(false);
      memory.heads = 0;
      await expectAll(store, written);
      expect(memory.heads).toBe(0);
    } finally {
      await store.close();
    }
  });

  it("hands out values the caller may change without damaging the cached block", async () => {
    const memory = new KeptMemoryStore();
    const store = await open(dataDir(), memory, { cacheBytes: 1 });
    try {
      const written = values(3);
      await appendMany(store, written);
      await uploadAll(store);
      const first = await store.stream(LOC).get(1);
      first!.value.fill(0x58);
      const fetches = store.tier!.reader.fetches;
      await expectAll(store, written);
      expect(store.tier!.reader.fetches).toBe(fetches); // served from the cached block
    } finally {
      await store.close();
    }
  });

  it("reports a segment missing from the object store as UNAVAILABLE, not as data", async () => {
    const memory = new KeptMemoryStore();
    const dir = dataDir();
    const store = await open(dir, memory, { cacheBytes: 1 });
    try {
      await appendMany(store, values(20));
      await uploadAll(store);
      await memory.delete(segmentKey("unit", 1));
      const err = await store.stream(LOC).get(1).then(() => undefined, (e: unknown) => e);
      expect(StrataError.is(err, "UNAVAILABLE")).toBe(true);
    } finally {
      await store.close();
    }
  });
});
