/**
 * The cold tier against real backends: a real S3-compatible server (s3rver, in its own process,
 * killed and restarted for outages) and the directory backend.
 *
 * What is checked: an `ack: "object"` write resolves only once its segment object is in the store;
 * while S3 is down local-ack writes go on, object-ack writes fail with UNAVAILABLE after
 * objectAckTimeoutMs, and uploads catch up when it is back; a byte flipped in a stored object is
 * caught by a checksum and reported as CORRUPT, never served; eviction keeps local segment files
 * within cacheBytes and a read of an evicted segment fetches only the block it needs; a server
 * with an empty disk and the same id restores from the newest checkpoint plus the segments after
 * it (or from every segment when there is no checkpoint) and serves evicted data by fault-in.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { parseFrame } from "../../src/log/framing.js";
import { decodeRecord } from "../../src/log/record.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import type { StoreOptions } from "../../src/config.js";
import { Store } from "../../src/store.js";
import { ForwardingObjectStore } from "../../src/testing/fault-store.js";
import { DirObjectStore } from "../../src/tier/dir-store.js";
import type { ByteRange, ObjectInfo, ObjectStore, PutIfAbsentResult } from "../../src/tier/object-store.js";
import { S3ObjectStore } from "../../src/tier/s3-store.js";
import { SEALED_TRAILER_BYTES, findBlock, parseFooter, parseTrailer, unsealSegment, type SealedFooter } from "../../src/tier/sealed-segment.js";
import { checkpointsPrefix, parseSegmentKey, segmentKey, segmentsPrefix } from "../../src/tier/segment-keys.js";
import { S3RVER_CREDENTIALS, startS3rver, type RunningS3rver } from "../../src/testing/s3rver.js";
import { all as collect } from "../helpers/collect.js";

const VALUE_BYTES = 1000;
/** Small segments and blocks, so a few hundred KiB of data make many of each. */
const LIMITS = {
  chunkBytes: 16_384,
  headersBytesMax: 4096,
  recordBytesMax: 32_768,
  segmentBytesMax: 131_072,
  blockBytes: 4096,
  blockCacheBytes: 65_536,
  uploadRetryMaxMs: 100,
  sealIntervalMs: 100,
  objectAckTimeoutMs: 15_000,
  closeUploadWaitMs: 5000,
};
const DRAIN_TIMEOUT_MS = 30_000;
const LOC = "acct/alice/chat";

let s3: RunningS3rver;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "strata-tier-it-"));
let n = 0;

beforeAll(async () => {
  s3 = await startS3rver();
});
afterAll(async () => {
  await s3?.stop();
  fs.rmSync(scratch, { recursive: true, force: true });
});

interface Backend {
  name: "s3" | "dir";
  /** The `tier` option naming the backend. */
  url: string;
  /** A separate client of the same backend, to look at what the store put there. */
  inspect(): ObjectStore;
}

function s3Backend(): Backend {
  const prefix = `it-${n++}-${randomBytes(4).toString("hex")}`;
  const q = `endpoint=${encodeURIComponent(s3.endpoint)}&accessKeyId=${S3RVER_CREDENTIALS.accessKeyId}&secretAccessKey=${S3RVER_CREDENTIALS.secretAccessKey}`;
  return {
    name: "s3",
    url: `s3://${s3.bucket}/${prefix}?${q}`,
    inspect: () => new S3ObjectStore({ bucket: s3.bucket, prefix, endpoint: s3.endpoint, credentials: S3RVER_CREDENTIALS }),
  };
}

function dirBackend(): Backend {
  const root = path.join(scratch, `objects-${n++}`);
  return { name: "dir", url: `dir:${root}`, inspect: () => new DirObjectStore({ path: root }) };
}

function dataDir(): string {
  return path.join(scratch, `data-${n++}`);
}

function open(dir: string, id: string, tier: string | ObjectStore, extra: Partial<StoreOptions> = {}): Promise<Store> {
  return Store.open({
    dir,
    id,
    ...(typeof tier === "string" ? { tier } : { objectStore: tier }),
    limits: { ...LIMITS, ...extra.limits },
    sweepTimers: false,
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

/** Seals the active segment and waits until every sealed segment is in the object store. */
async function uploadAll(store: Store): Promise<void> {
  await store.sealActive();
  await withDeadline(store.tier!.drained(), DRAIN_TIMEOUT_MS, "uploads to drain");
}

async function appendMany(store: Store, values: Uint8Array[]): Promise<void> {
  const s = store.stream(LOC);
  for (let i = 0; i < values.length; i += 50) await Promise.all(values.slice(i, i + 50).map((value) => s.append({ value })));
}

function values(count: number): Uint8Array[] {
  return Array.from({ length: count }, () => randomBytes(VALUE_BYTES)); // incompressible
}


async function segmentIdsIn(objects: ObjectStore, id: string): Promise<number[]> {
  return (await collect(objects.list(segmentsPrefix(id)))).map((o) => parseSegmentKey(id, o.key)!);
}

async function rejection(p: Promise<unknown>): Promise<StrataError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(StrataError);
  return err as StrataError;
}

function localSegmentBytes(dir: string): number {
  const segDir = path.join(dir, "segments");
  return listSegmentIds(segDir).reduce((sum, id) => sum + fs.statSync(segmentPath(segDir, id)).size, 0);
}

/** Where each stream message of a sealed object is: its seq → raw offset, and the footer. */
async function sealedLayout(objects: ObjectStore, id: string, seg: number): Promise<{ footer: SealedFooter; seqs: Map<number, number> }> {
  const obj = (await objects.get(segmentKey(id, seg)))!;
  const t = parseTrailer(seg, obj.byteLength, obj.subarray(obj.byteLength - SEALED_TRAILER_BYTES));
  const footer = parseFooter(seg, obj.subarray(t.off, t.off + t.len), t.crc);
  const raw = unsealSegment(seg, obj);
  const seqs = new Map<number, number>();
  for (let off = SEGMENT_HEADER_BYTES; off < raw.byteLength; ) {
    const parsed = parseFrame(raw, off, LIMITS.recordBytesMax);
    if (parsed.kind !== "ok") throw new Error(`segment ${seg} does not parse at ${off}`);
    const rec = decodeRecord(parsed.body);
    if (rec.t === "sset") seqs.set(rec.seq, off);
    off = parsed.next;
  }
  return { footer, seqs };
}

/** Forwards to a backend but holds segment puts until `release()`, telling when one arrives. */
class GatedStore extends ForwardingObjectStore {
  private arrived!: (key: string) => void;
  /** Resolves with the key of the first segment put, once it is called. */
  readonly putCalled = new Promise<string>((resolve) => (this.arrived = resolve));
  private release!: () => void;
  private readonly gate = new Promise<void>((resolve) => (this.release = resolve));

  open(): void {
    this.release();
  }
  override async put(key: string, body: Uint8Array): Promise<void> {
    if (key.includes("/segments/")) {
      this.arrived(key);
      await this.gate;
    }
    return this.inner.put(key, body);
  }
  override async putIfAbsent(key: string, body: Uint8Array): Promise<PutIfAbsentResult> {
    if (key.includes("/segments/")) {
      this.arrived(key);
      await this.gate;
    }
    return this.inner.putIfAbsent(key, body);
  }
}

/** Forwards to a backend, counting whole-object reads per key. */
class CountingStore extends ForwardingObjectStore {
  readonly wholeGets = new Map<string, number>();
  override get(key: string, range?: ByteRange): Promise<Uint8Array | undefined> {
    if (range === undefined) this.wholeGets.set(key, (this.wholeGets.get(key) ?? 0) + 1);
    return this.inner.get(key, range);
  }
}

function openBackend(backend: Backend): ObjectStore {
  return backend.name === "s3"
    ? new S3ObjectStore({ bucket: s3.bucket, prefix: backend.url.slice(`s3://${s3.bucket}/`.length, backend.url.indexOf("?")), endpoint: s3.endpoint, credentials: S3RVER_CREDENTIALS })
    : new DirObjectStore({ path: backend.url.slice("dir:".length) });
}

describe.each([
  ["s3", s3Backend],
  ["dir", dirBackend],
] as const)("ack: \"object\" on the %s backend", (_name, makeBackend) => {
  it("resolves only once the segment holding the write is in the object store", async () => {
    const backend = makeBackend();
    const inspect = backend.inspect();
    const gated = new GatedStore(openBackend(backend));
    const store = await open(dataDir(), "srv-ack", gated);
    try {
      const s = store.stream(LOC);
      await s.append({ value: new Uint8Array([1]) });
      let acked = false;
      const write = s.append({ value: new Uint8Array([2]) }, { ack: "object" }).then((r) => {
        acked = true;
        return r;
      });
      // The write was sealed and its upload started; the upload is held.
      const key = await Promise.race([
        gated.putCalled,
        write.then(() => Promise.reject(new Error("the object-ack write resolved before its segment was uploaded"))),
      ]);
      const seg = parseSegmentKey("srv-ack", key)!;
      expect(acked).toBe(false);
      expect(await inspect.head(key)).toBeUndefined();
      gated.open();
      const { seq } = await write;
      // At the moment of the ack the object exists, and it holds the acknowledged record.
      expect(await inspect.head(key)).toBeDefined();
      const layout = await sealedLayout(inspect, "srv-ack", seg);
      expect([...layout.seqs.keys()]).toEqual([1, seq]);
      // A later object-ack write needs its own (new) segment shipped.
      const second = await s.append({ value: new Uint8Array([3]) }, { ack: "object" });
      expect(await segmentIdsIn(inspect, "srv-ack")).toEqual([seg, seg + 1]);
      expect((await sealedLayout(inspect, "srv-ack", seg + 1)).seqs.has(second.seq)).toBe(true);
    } finally {
      await store.close();
      await inspect.close();
    }
  });
});

describe("S3 outage", () => {
  it("keeps local-ack writes going, fails object-ack writes after objectAckTimeoutMs, and catches up when S3 is back", async () => {
    const backend = s3Backend();
    const inspect = backend.inspect();
    const dir = dataDir();
    const ackTimeoutMs = 500;
    const store = await open(dir, "srv-outage", backend.url, { limits: { objectAckTimeoutMs: ackTimeoutMs } });
    const written = values(60);
    try {
      await appendMany(store, written.slice(0, 20));
      await uploadAll(store);
      const before = await segmentIdsIn(inspect, "srv-outage");
      expect(before.length).toBeGreaterThan(0);

      await s3.kill();
      try {
        // Local acks only need the local disk.
        await appendMany(store, written.slice(20, 40));
        const s = store.stream(LOC);
        const started = performance.now();
        const err = await rejection(s.append({ value: written[40]! }, { ack: "object" }));
        const waitedMs = performance.now() - started;
        expect(err.code).toBe("UNAVAILABLE");
        expect(err.retryable).toBe(true);
        expect(waitedMs).toBeGreaterThanOrEqual(ackTimeoutMs - 20); // timer granularity
        expect(waitedMs).toBeLessThan(ackTimeoutMs + 5000);
        // A repeated msgId with ack "object" is acknowledged only as its original would be: not
        // before the original's record is in the object store.
        const retried = store.stream("dup/x");
        expect((await retried.append({ value: written[0]! }, { msgId: "retry-me" })).seq).toBe(1);
        expect((await rejection(retried.append({ value: written[0]! }, { msgId: "retry-me", ack: "object" }))).code).toBe("UNAVAILABLE");
        // The write is durable locally all the same, and more local writes go on.
        expect(store.inventory(LOC).lastSeq).toBe(41);
        expect(Buffer.from((await s.get(41))!.value)).toEqual(Buffer.from(written[40]!));
        await appendMany(store, written.slice(41, 50));
        await store.sealActive();
        expect(store.tier!.backlog).toBeGreaterThan(0);
        await eventually(() => store.tier!.stats.uploadFailures > 0, 10_000, "a failed upload attempt");
      } finally {
        await s3.restart();
      }

      // Uploads catch up by themselves: every sealed segment reaches S3.
      await withDeadline(store.tier!.drained(), DRAIN_TIMEOUT_MS, "uploads to catch up after the outage");
      const sealed = store.log.activeId - 1;
      expect(await segmentIdsIn(inspect, "srv-outage")).toEqual(Array.from({ length: sealed }, (_, i) => i + 1));
      const after = await store.stream(LOC).append({ value: written[50]! }, { ack: "object" });
      expect(after.seq).toBe(51);
      expect(await store.stream("dup/x").append({ value: written[0]! }, { msgId: "retry-me", ack: "object" })).toMatchObject({ seq: 1, duplicate: true });
      for (let seq = 1; seq <= 51; seq++) expect(Buffer.from((await store.stream(LOC).get(seq))!.value)).toEqual(Buffer.from(written[seq - 1]!));
    } finally {
      await store.close();
      await inspect.close();
    }
  });
});

describe("corrupted objects (directory backend)", () => {
  it("detects a flipped byte by checksum and reports CORRUPT on read, never serving the bytes", async () => {
    const backend = dirBackend();
    const inspect = backend.inspect();
    const dir = dataDir();
    const written = values(300);
    const store = await open(dir, "srv-corrupt", backend.url, { cacheBytes: 1 });
    try {
      await appendMany(store, written);
      await uploadAll(store);
      const segs = await segmentIdsIn(inspect, "srv-corrupt");
      expect(segs.length).toBeGreaterThanOrEqual(2);
      expect(listSegmentIds(path.join(dir, "segments"))).toEqual([store.log.activeId]); // all evicted

      // Flip one byte in the middle of one block of the first segment.
      const first = await sealedLayout(inspect, "srv-corrupt", segs[0]!);
      const victim = first.footer.blocks[2]!;
      const file = path.join(backend.url.slice("dir:".length), ...segmentKey("srv-corrupt", segs[0]!).split("/"));
      const bytes = fs.readFileSync(file);
      bytes[victim.off + (victim.len >> 1)]! ^= 0x40;
      fs.writeFileSync(file, bytes);

      const s = store.stream(LOC);
      for (const [seq, off] of first.seqs) {
        const inVictim = findBlock(first.footer, off) === victim;
        if (inVictim) {
          // Asked twice: a failed read is not cached, nor served the second time.
          for (let i = 0; i < 2; i++) {
            const err = await rejection(s.get(seq));
            expect(err.code).toBe("CORRUPT");
            expect(err.message).toMatch(/checksum/);
          }
        } else {
          expect(Buffer.from((await s.get(seq))!.value)).toEqual(Buffer.from(written[seq - 1]!));
        }
      }
      const err = await rejection((async () => {
        for await (const _ of s.getAll()) {
          // reading through the damaged block must fail
        }
      })());
      expect(err.code).toBe("CORRUPT");

      // Damage the footer of the second segment: nothing of it is served.
      const second = await sealedLayout(inspect, "srv-corrupt", segs[1]!);
      const file2 = path.join(backend.url.slice("dir:".length), ...segmentKey("srv-corrupt", segs[1]!).split("/"));
      const bytes2 = fs.readFileSync(file2);
      const t = parseTrailer(segs[1]!, bytes2.byteLength, bytes2.subarray(bytes2.byteLength - SEALED_TRAILER_BYTES));
      bytes2[t.off + 3]! ^= 0x01;
      fs.writeFileSync(file2, bytes2);
      for (const seq of [...second.seqs.keys()].slice(0, 3)) expect((await rejection(s.get(seq))).code).toBe("CORRUPT");
    } finally {
      await store.close();
      await inspect.close();
    }
  });
});

describe("eviction and fault-in (S3)", () => {
  it("keeps local segment files within cacheBytes and faults in one block per new block read", async () => {
    const backend = s3Backend();
    const inspect = backend.inspect();
    const dir = dataDir();
    const cacheBytes = 300_000;
    const written = values(1200);
    const store = await open(dir, "srv-evict", backend.url, { cacheBytes });
    try {
      for (let i = 0; i < written.length; i += 200) {
        await appendMany(store, written.slice(i, i + 200));
        await uploadAll(store);
        expect(localSegmentBytes(dir)).toBeLessThanOrEqual(cacheBytes);
      }
      expect(store.tier!.stats.evictions).toBeGreaterThan(0);
      const local = listSegmentIds(path.join(dir, "segments"));
      const inTier = await segmentIdsIn(inspect, "srv-evict");
      const evicted = inTier.filter((seg) => !local.includes(seg));
      expect(evicted.length).toBeGreaterThanOrEqual(3);
      // Every segment but the active one is in S3; the local ones left are the most recent.
      expect(inTier).toEqual(Array.from({ length: store.log.activeId - 1 }, (_, i) => i + 1));
      expect(Math.min(...local.filter((seg) => seg !== store.log.activeId))).toBeGreaterThan(Math.max(...evicted));

      const s = store.stream(LOC);
      const reader = store.tier!.reader;
      const seg = evicted[1]!;
      const layout = await sealedLayout(inspect, "srv-evict", seg);
      const byBlock = new Map<number, number[]>();
      for (const [seq, off] of layout.seqs) {
        const b = layout.footer.blocks.indexOf(findBlock(layout.footer, off)!);
        byBlock.set(b, [...(byBlock.get(b) ?? []), seq]);
      }
      expect(byBlock.size).toBeGreaterThanOrEqual(4);
      const read = async (seq: number) => expect(Buffer.from((await s.get(seq))!.value)).toEqual(Buffer.from(written[seq - 1]!));

      // First read of the segment: its footer (one ranged read of the tail) and one block.
      const [firstBlock, ...otherBlocks] = [...byBlock.values()];
      let fetches = reader.fetches;
      await read(firstBlock![0]!);
      expect(reader.fetches - fetches).toBe(2);
      // Another message of the same block: served from the block cache.
      fetches = reader.fetches;
      for (const seq of firstBlock!.slice(1)) await read(seq);
      expect(reader.fetches - fetches).toBe(0);
      // Each further block costs exactly one ranged read, whatever the segment size.
      for (const seqs of otherBlocks) {
        fetches = reader.fetches;
        for (const seq of seqs) await read(seq);
        expect(reader.fetches - fetches).toBe(1);
      }
      // Nothing came back to the local disk.
      expect(listSegmentIds(path.join(dir, "segments"))).toEqual(local);
    } finally {
      await store.close();
      await inspect.close();
    }
  });
});

describe("restore from an empty disk (S3)", () => {
  it("restores the newest checkpoint, replays only the segments after it, serves at once and faults reads in", async () => {
    const backend = s3Backend();
    const dir = dataDir();
    const written = values(900);
    let checkpointSeg: number;
    let afterCheckpoint: number;
    {
      const store = await open(dir, "srv-restore", backend.url, { cacheBytes: 1 });
      try {
        await appendMany(store, written.slice(0, 600));
        await store.tier!.checkpoint();
        expect(store.tier!.stats.checkpoints).toBe(1);
        checkpointSeg = store.log.activeId - 1; // the checkpoint sealed the segment it names
        await appendMany(store, written.slice(600));
        await store.kv("acct/alice/settings").set("theme", new TextEncoder().encode("dark"));
        afterCheckpoint = written.length - 600 + 1;
        await uploadAll(store);
      } finally {
        await store.close();
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });

    const objects = new CountingStore(openBackend(backend));
    const store = await open(dir, "srv-restore", objects, { cacheBytes: 1 });
    try {
      const r = store.recovery;
      expect(r.localIds).toEqual([]);
      expect(r.restoredCheckpoint?.seg).toBe(checkpointSeg);
      expect(r.replayed).toBe(afterCheckpoint);
      // Only the checkpoint and the segments after it were downloaded whole, once each.
      const whole = [...objects.wholeGets.keys()].sort();
      expect(whole.filter((k) => k.startsWith(checkpointsPrefix("srv-restore")))).toHaveLength(1);
      const segs = whole.filter((k) => k.startsWith(segmentsPrefix("srv-restore"))).map((k) => parseSegmentKey("srv-restore", k)!);
      expect(segs.length).toBeGreaterThan(0);
      expect(Math.min(...segs)).toBeGreaterThanOrEqual(checkpointSeg);
      expect([...objects.wholeGets.values()].every((count) => count === 1)).toBe(true);

      // It serves at once: everything is there, read by fault-in; no segment came back to disk.
      expect(store.inventory(LOC).lastSeq).toBe(900);
      const fetches = store.tier!.reader.fetches;
      for (const seq of [1, 2, 300, 599, 600, 601, 899, 900]) {
        expect(Buffer.from((await store.stream(LOC).get(seq))!.value)).toEqual(Buffer.from(written[seq - 1]!));
      }
      expect(store.tier!.reader.fetches).toBeGreaterThan(fetches);
      expect(new TextDecoder().decode((await store.kv("acct/alice/settings").get("theme"))!.value)).toBe("dark");
      let count = 0;
      for await (const m of store.stream(LOC).getAll()) {
        expect(Buffer.from(m.value).equals(Buffer.from(written[m.seq - 1]!))).toBe(true);
        count++;
      }
      expect(count).toBe(900);
      expect(listSegmentIds(path.join(dir, "segments"))).toEqual([store.log.activeId]);
      // And it takes writes again, in a new segment after the restored ones.
      expect((await store.stream(LOC).append({ value: new Uint8Array([7]) }, { ack: "object" })).seq).toBe(901);
    } finally {
      await store.close();
    }
  });

  it("replays every segment when no checkpoint exists", async () => {
    const backend = s3Backend();
    const dir = dataDir();
    const written = values(500);
    let sealed: number;
    {
      const store = await open(dir, "srv-nockpt", backend.url, { cacheBytes: 1 });
      try {
        await appendMany(store, written);
        await uploadAll(store);
        sealed = store.log.activeId - 1;
      } finally {
        await store.close();
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });

    const objects = new CountingStore(openBackend(backend));
    const store = await open(dir, "srv-nockpt", objects);
    try {
      expect(store.recovery.restoredCheckpoint).toBeUndefined();
      expect(store.recovery.tierIds).toEqual(Array.from({ length: sealed }, (_, i) => i + 1));
      expect(store.recovery.replayed).toBe(500);
      expect([...objects.wholeGets.keys()].map((k) => parseSegmentKey("srv-nockpt", k)).sort((a, b) => a! - b!)).toEqual(store.recovery.tierIds);
      for (const seq of [1, 250, 500]) expect(Buffer.from((await store.stream(LOC).get(seq))!.value)).toEqual(Buffer.from(written[seq - 1]!));
      expect(store.tier!.reader.fetches).toBeGreaterThan(0);
    } finally {
      await store.close();
    }
  });
});
