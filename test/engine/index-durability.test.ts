/**
 * The index's side of durability and its read caches: the unsynced marker that tells an OS crash
 * (index rebuilt from the log) from a process crash (index kept), the location-metadata cache
 * staying exact across writes, reopen and rebuild, and scans reading records that lie back to back
 * with one read while still verifying each record.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { StoreOptions } from "../../src/config.js";
import { StrataError } from "../../src/errors.js";
import { bootId, unsyncedMarkerPath } from "../../src/index/unsynced-marker.js";
import { listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import { adjacentRun } from "../../src/log/segment-log.js";
import { Store } from "../../src/store.js";
import { all } from "../helpers/collect.js";

const KiB = 1024;
const LIMITS = { chunkBytes: 16 * KiB, recordBytesMax: 24 * KiB, headersBytesMax: 4 * KiB, segmentBytesMax: 64 * KiB, scanPageSize: 7 };
const enc = (s: string) => new TextEncoder().encode(s);

let dir: string;
let store: Store;
const open = (extra: Partial<StoreOptions> = {}) => Store.open({ dir, limits: LIMITS, sweepTimers: false, ...extra });
const marker = () => unsyncedMarkerPath(path.join(dir, "index"));

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-index-"));
  store = await open();
});
afterEach(async () => {
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});


async function populate(s: Store): Promise<void> {
  for (let i = 0; i < 40; i++) {
    await Promise.all([s.stream(`s/${i % 3}`).append({ value: enc(`m${i}`.repeat(i * 40)) }), s.kv("k").set(`key${i % 9}`, enc(`v${i}`))]);
  }
  await s.stream("s/1").delete(3);
}

async function dump(s: Store): Promise<unknown> {
  const out: Record<string, unknown> = {};
  for (const loc of ["s/0", "s/1", "s/2"]) {
    out[loc] = { inv: s.inventory(loc), msgs: (await all(s.stream(loc).getAll())).map((m) => [m.seq, Buffer.from(m.value).toString("hex")]) };
  }
  out.k = (await all(s.kv("k").getAll())).map((e) => [e.key, e.revision, Buffer.from(e.value).toString("hex")]);
  return out;
}

describe("unsynced marker", () => {
  it("is present with this boot's id while the store is open and gone after a clean close", async () => {
    expect(JSON.parse(fs.readFileSync(marker(), "utf8"))).toEqual({ bootId: bootId() });
    await populate(store);
    await store.close();
    expect(fs.existsSync(marker())).toBe(false);
    store = await open();
    expect(store.recovery).toMatchObject({ rebuilt: false, replayed: 0 });
  });

  it("keeps the index after a process crash (a marker of this boot)", async () => {
    await populate(store);
    const before = await dump(store);
    await store.close();
    fs.writeFileSync(marker(), JSON.stringify({ bootId: bootId() }));
    store = await open();
    expect(store.recovery.rebuilt).toBe(false);
    expect(await dump(store)).toEqual(before);
  });

  it("rebuilds the index from the log after an OS crash (a marker of another boot), whatever state the index file is in", async () => {
    await populate(store);
    const before = await dump(store);
    await store.close();
    for (const damage of ["none", "truncate", "garbage"] as const) {
      const file = path.join(dir, "index", "index.mdb");
      if (damage === "truncate") fs.truncateSync(file, Math.floor(fs.statSync(file).size / 3));
      if (damage === "garbage") fs.writeFileSync(file, Buffer.alloc(3 * 4096, 0xa5));
      fs.writeFileSync(marker(), JSON.stringify({ bootId: "another-boot" }));
      store = await open();
      expect(store.recovery.rebuilt, damage).toBe(true);
      expect(store.recovery.rebuildReason).toMatch(/machine restarted/);
      expect(await dump(store)).toEqual(before);
      expect(JSON.parse(fs.readFileSync(marker(), "utf8"))).toEqual({ bootId: bootId() });
      await store.close();
    }
    store = await open();
    expect(store.recovery.rebuilt).toBe(false);
  });

  it("rebuilds when the marker cannot be read as one", async () => {
    await populate(store);
    const before = await dump(store);
    await store.close();
    fs.writeFileSync(marker(), "not json");
    store = await open();
    expect(store.recovery.rebuilt).toBe(true);
    expect(await dump(store)).toEqual(before);
  });
});

describe("location metadata cache", () => {
  it("stays exact when a location is created after it was seen absent, with a cache smaller than the locations", async () => {
    await store.close();
    store = await open({ limits: { ...LIMITS, metaCacheMax: 2 } });
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 6; i++) {
        const loc = `x/${i}`;
        if (round === 0) {
          expect(await store.kv(loc).get("k")).toBeUndefined(); // seen absent
          await store.stream(loc).append({ value: enc(`v${i}`) });
        }
        expect(store.inventory(loc)).toMatchObject({ kind: "stream", count: 1, lastSeq: 1, revision: 1 });
        await expect(store.kv(loc).get("k")).rejects.toSatisfy((e: unknown) => StrataError.is(e, "WRONG_KIND"));
        expect(Buffer.from((await store.stream(loc).get(1))!.value).toString()).toBe(`v${i}`);
      }
    }
  });

  it("follows every commit, including several writes to one location in one batch", async () => {
    const s = store.stream("y");
    await Promise.all(Array.from({ length: 50 }, (_, i) => s.append({ value: enc(String(i)) })));
    expect(store.inventory("y")).toMatchObject({ count: 50, lastSeq: 50, revision: 50 });
    await Promise.all([s.delete(1), s.delete(2), s.set(70, { value: enc("far") }), s.deleteAll({ endSeq: 10 })]);
    expect(store.inventory("y")).toMatchObject({ count: 41, lastSeq: 70, revision: 54, firstSeq: 11 });
    expect((await s.append({})).seq).toBe(71);
  });
});

describe("scans that read runs of records", () => {
  it("groups only records that lie back to back in one segment, within the byte limit", () => {
    const p = (seg: number, off: number, len: number) => ({ ptr: { seg, off, len } });
    const items = [p(1, 16, 10), p(1, 26, 10), p(1, 36, 10), p(1, 50, 10), p(2, 60, 10), p(2, 70, 10)];
    expect(adjacentRun(items, 0, 1000)).toBe(3);
    expect(adjacentRun(items, 0, 20)).toBe(2);
    expect(adjacentRun(items, 0, 5)).toBe(1); // a single record is read whatever its size
    expect(adjacentRun(items, 3, 1000)).toBe(1);
    expect(adjacentRun(items, 4, 1000)).toBe(2);
  });

  it("returns every message across pages, runs and segment rolls, whatever the read size", async () => {
    await populate(store);
    const before = await dump(store);
    expect(listSegmentIds(path.join(dir, "segments")).length).toBeGreaterThan(1);
    for (const scanReadBytesMax of [1, 300, 4 * KiB, 1024 * KiB]) {
      await store.close();
      store = await open({ limits: { ...LIMITS, scanReadBytesMax } });
      expect(await dump(store)).toEqual(before);
    }
  });

  it("still verifies each record of a run: a damaged one is CORRUPT, not garbage", async () => {
    const s = store.stream("z");
    await Promise.all(Array.from({ length: 20 }, (_, i) => s.append({ value: enc(`value-${i}`) })));
    const ids = listSegmentIds(path.join(dir, "segments"));
    const file = segmentPath(path.join(dir, "segments"), ids.at(-1)!);
    const bytes = fs.readFileSync(file);
    const at = bytes.indexOf(Buffer.from("value-11"));
    expect(at).toBeGreaterThan(0);
    const fd = fs.openSync(file, "r+");
    fs.writeSync(fd, Buffer.from("X"), 0, 1, at);
    fs.closeSync(fd);
    const seen: number[] = [];
    const err = await (async () => {
      try {
        for await (const m of s.getAll()) seen.push(m.seq);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(StrataError.is(err, "CORRUPT")).toBe(true);
    expect(seen.every((seq) => seq < 12)).toBe(true);
    fs.writeFileSync(file, bytes); // repaired, so the store closes over a valid log
  });
});
