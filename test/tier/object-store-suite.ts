/**
 * The one conformance suite of the `ObjectStore` contract (src/tier/object-store.ts). Every
 * backend runs it; a backend that passes can replace any other under the tier.
 *
 * `makeStore` is called before every test and must give an empty store of its own (a fresh temp
 * directory, a fresh S3 prefix, …); `cleanup` closes it and removes what it wrote.
 *
 * Create-only puts are checked against what the backend says of itself (`createOnly`): every
 * backend must refuse a create over an existing object; only an "enforced" one must also let
 * exactly one of several racing creates win. A "best-effort" one (s3rver) is held to its weaker,
 * documented contract, so a backend whose guarantee changes fails one of the two.
 */
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import type { ObjectInfo, ObjectStore } from "../../src/tier/object-store.js";

export type MakeStore = () => Promise<{ store: ObjectStore; cleanup: () => Promise<void> }>;

const MiB = 1024 * 1024;
/** More than one page of every backend (S3 pages hold 1000 keys). */
const MANY_OBJECTS = 1100;
/** Concurrent puts while filling a store, to keep the many-objects test quick on a real server. */
const FILL_CONCURRENCY = 32;

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

function patterned(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

import { all as collect } from "../helpers/collect.js";
export { collect };

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, `expected a StrataError ${code}`).toBeInstanceOf(StrataError);
  expect((err as StrataError).code).toBe(code);
}

/** Plain Uint8Array copies, so comparisons do not depend on a backend handing out Buffers. */
function plain(bytes: Uint8Array | undefined): Uint8Array | undefined {
  return bytes === undefined ? undefined : Uint8Array.from(bytes);
}

export function objectStoreConformance(name: string, makeStore: MakeStore): void {
  describe(`ObjectStore conformance: ${name}`, () => {
    let store: ObjectStore;
    let cleanup: () => Promise<void>;

    beforeEach(async () => {
      ({ store, cleanup } = await makeStore());
    });
    afterEach(async () => {
      await cleanup();
    });

    it("answers undefined for a missing object", async () => {
      expect(await store.get("missing/object")).toBeUndefined();
      expect(await store.get("missing/object", { offset: 0, length: 10 })).toBeUndefined();
      expect(await store.get("missing/object", { offset: 0, length: 0 })).toBeUndefined();
      expect(await store.head("missing/object")).toBeUndefined();
      expect(await collect(store.list("missing/"))).toEqual([]);
    });

    it("round-trips bytes, including an empty object", async () => {
      const body = patterned(1000, 1);
      await store.put("seg/one", body);
      await store.put("seg/empty", new Uint8Array(0));
      expect(plain(await store.get("seg/one"))).toEqual(body);
      expect(plain(await store.get("seg/empty"))).toEqual(new Uint8Array(0));
      expect(await store.head("seg/empty")).toEqual({ size: 0 });
    });

    it("round-trips a 5 MiB object", async () => {
      const body = patterned(5 * MiB, 2);
      await store.put("big", body);
      const back = await store.get("big");
      expect(back?.length).toBe(body.length);
      expect(Buffer.from(back!).equals(Buffer.from(body))).toBe(true);
      expect(await store.head("big")).toEqual({ size: 5 * MiB });
      const tail = await store.get("big", { offset: 5 * MiB - 100, length: 1000 });
      expect(plain(tail)).toEqual(body.subarray(5 * MiB - 100));
    });

    it("is idempotent and overwrites", async () => {
      await store.put("k", enc("first"));
      await store.put("k", enc("first"));
      expect(plain(await store.get("k"))).toEqual(enc("first"));
      await store.put("k", enc("second, longer"));
      expect(plain(await store.get("k"))).toEqual(enc("second, longer"));
      await store.put("k", enc("3"));
      expect(plain(await store.get("k"))).toEqual(enc("3"));
      expect(await store.head("k")).toEqual({ size: 1 });
    });

    it("creates only where absent: putIfAbsent never replaces an object", async () => {
      expect(["enforced", "best-effort"]).toContain(store.createOnly);
      expect(await store.putIfAbsent("c/k", enc("first"))).toBe("created");
      expect(await store.putIfAbsent("c/k", enc("second, different"))).toBe("exists");
      expect(await store.putIfAbsent("c/k", enc("first"))).toBe("exists"); // the same bytes again
      expect(plain(await store.get("c/k"))).toEqual(enc("first"));
      expect(await store.head("c/k")).toEqual({ size: 5 });
      // An object written by a plain put counts as there too.
      await store.put("c/plain", enc("plain"));
      expect(await store.putIfAbsent("c/plain", enc("other"))).toBe("exists");
      expect(plain(await store.get("c/plain"))).toEqual(enc("plain"));
      // A plain put still replaces what putIfAbsent created, and a deleted key can be created again.
      await store.put("c/k", enc("replaced"));
      expect(plain(await store.get("c/k"))).toEqual(enc("replaced"));
      await store.delete("c/k");
      expect(await store.putIfAbsent("c/k", enc("again"))).toBe("created");
      expect(plain(await store.get("c/k"))).toEqual(enc("again"));
      expect(await store.putIfAbsent("c/empty", new Uint8Array(0))).toBe("created");
      expect(await store.putIfAbsent("c/empty", enc("x"))).toBe("exists");
      expect(plain(await store.get("c/empty"))).toEqual(new Uint8Array(0));
      expect((await collect(store.list("c/"))).map((o) => o.key)).toEqual(["c/empty", "c/k", "c/plain"]);
    });

    it("lets racing creates of one key behave as its createOnly says", async () => {
      const bodies = Array.from({ length: 8 }, (_, i) => patterned(64 + i, 100 + i));
      for (let round = 0; round < 3; round++) {
        const key = `race/${round}`;
        const results = await Promise.all(bodies.map((b) => store.putIfAbsent(key, b)));
        const stored = plain(await store.get(key));
        const winners = bodies.filter((_, i) => results[i] === "created");
        if (store.createOnly === "enforced") {
          // Exactly one create wins and its bytes are what is stored.
          expect(winners).toHaveLength(1);
          expect(stored).toEqual(winners[0]);
        } else {
          // Check-then-put: every racer may win, and the last write stays. Only its size is
          // compared: s3rver writes racing puts of one key into one file and can tear the bytes
          // (found by this test; S3 itself keeps puts atomic).
          expect(winners.length).toBeGreaterThanOrEqual(1);
          expect(winners.map((w) => w.length)).toContain(stored?.length);
        }
        expect(results.every((r) => r === "created" || r === "exists")).toBe(true);
      }
    });

    it("keeps its own copy: later changes to the caller's arrays do not reach it", async () => {
      const body = enc("abc");
      await store.put("k", body);
      body[0] = 0x7a;
      const back = (await store.get("k"))!;
      back[1] = 0x7a;
      expect(plain(await store.get("k"))).toEqual(enc("abc"));
    });

    it("reads ranges, at the start, inside, at the end and past the end", async () => {
      const body = patterned(100, 3);
      await store.put("r", body);
      const read = async (offset: number, length: number) => plain(await store.get("r", { offset, length }));
      expect(await read(0, 10)).toEqual(body.subarray(0, 10));
      expect(await read(0, 1)).toEqual(body.subarray(0, 1));
      expect(await read(1, 1)).toEqual(body.subarray(1, 2));
      expect(await read(37, 20)).toEqual(body.subarray(37, 57));
      expect(await read(90, 10)).toEqual(body.subarray(90));
      expect(await read(99, 1)).toEqual(body.subarray(99));
      expect(await read(95, 50)).toEqual(body.subarray(95)); // shorter: the object ends first
      expect(await read(0, 100)).toEqual(body);
      expect(await read(0, 1000)).toEqual(body);
      expect(await read(100, 10)).toEqual(new Uint8Array(0)); // starts exactly at the end
      expect(await read(500, 10)).toEqual(new Uint8Array(0)); // starts past the end
      expect(await read(40, 0)).toEqual(new Uint8Array(0));
      await store.put("empty", new Uint8Array(0));
      expect(plain(await store.get("empty", { offset: 0, length: 10 }))).toEqual(new Uint8Array(0));
    });

    it("reports the size with head", async () => {
      await store.put("h/a", patterned(12345, 4));
      expect(await store.head("h/a")).toEqual({ size: 12345 });
      await store.put("h/a", patterned(7, 4));
      expect(await store.head("h/a")).toEqual({ size: 7 });
    });

    it("lists by prefix in lexicographic order", async () => {
      // Chosen to catch a directory walk that sorts "a/…" by the name "a": '-' and '.' sort
      // before '/', '0' and 'b' after it.
      const keys = ["a/x", "a/b/c", "a/b/d", "a-b/x", "a.b", "a0", "ab/y", "b", "b0/z/z", "seg/0001", "seg/0002", "seg/0010"];
      for (const [i, key] of [...keys].reverse().entries()) await store.put(key, patterned(i + 1, i + 10));
      const sorted = [...keys].sort();
      const listed = await collect(store.list(""));
      expect(listed.map((o) => o.key)).toEqual(sorted);
      const sizes = new Map([...keys].reverse().map((k, i) => [k, i + 1]));
      for (const o of listed) expect(o.size).toBe(sizes.get(o.key));
      for (const prefix of ["a", "a/", "a/b", "a/b/", "a-", "a.", "ab/", "b", "seg/000", "seg/001", "zzz", "a/b/c", "a/b/c/"]) {
        const got = (await collect(store.list(prefix))).map((o) => o.key);
        expect(got, `prefix ${JSON.stringify(prefix)}`).toEqual(sorted.filter((k) => k.startsWith(prefix)));
      }
    });

    it(`lists more than one page (${MANY_OBJECTS} objects) in order`, async () => {
      const keys = Array.from({ length: MANY_OBJECTS }, (_, i) => `many/${String(i).padStart(5, "0")}`);
      let next = 0;
      const worker = async () => {
        while (next < keys.length) {
          const key = keys[next++]!;
          await store.put(key, enc(key.slice(-2)));
        }
      };
      await Promise.all(Array.from({ length: FILL_CONCURRENCY }, worker));
      await store.put("other/1", enc("x"));
      const listed = await collect(store.list("many/"));
      expect(listed.length).toBe(MANY_OBJECTS);
      expect(listed.map((o) => o.key)).toEqual(keys);
      expect(listed.every((o) => o.size === 2)).toBe(true);
      expect((await collect(store.list(""))).length).toBe(MANY_OBJECTS + 1);
      expect((await collect(store.list("many/0105"))).map((o) => o.key)).toEqual(keys.slice(1050, 1060));
    });

    it("deletes, and deleting a missing key is not an error", async () => {
      await store.put("d/1", enc("1"));
      await store.put("d/2", enc("2"));
      await store.delete("d/1");
      expect(await store.get("d/1")).toBeUndefined();
      expect(await store.head("d/1")).toBeUndefined();
      expect((await collect(store.list("d/"))).map((o) => o.key)).toEqual(["d/2"]);
      await store.delete("d/1");
      await store.delete("never/existed");
      await store.delete("d"); // a "directory" of other keys is not an object
      expect(plain(await store.get("d/2"))).toEqual(enc("2"));
    });

    it("rejects invalid keys, prefixes, ranges and bodies with INVALID_ARGUMENT", async () => {
      const badKeys = ["", "/abs", "trailing/", "a//b", "../up", "a/../b", "a/./b", ".", "..", "sp ace", "a\\b", "ü", "a:b",
        "x".repeat(1025), 42 as unknown as string];
      for (const key of badKeys) {
        await expectCode(store.put(key, enc("x")), "INVALID_ARGUMENT");
        await expectCode(store.putIfAbsent(key, enc("x")), "INVALID_ARGUMENT");
        await expectCode(store.get(key), "INVALID_ARGUMENT");
        await expectCode(store.head(key), "INVALID_ARGUMENT");
        await expectCode(store.delete(key), "INVALID_ARGUMENT");
      }
      for (const prefix of ["/", "/a", "a//", "../", "a/../", "sp ace", "x?"]) {
        await expectCode(collect(store.list(prefix)), "INVALID_ARGUMENT");
      }
      for (const range of [{ offset: -1, length: 1 }, { offset: 0, length: -1 }, { offset: 0.5, length: 1 }, { offset: 0, length: Infinity }]) {
        await expectCode(store.get("k", range), "INVALID_ARGUMENT");
      }
      await expectCode(store.put("k", "text" as unknown as Uint8Array), "INVALID_ARGUMENT");
      await expectCode(store.putIfAbsent("k", "text" as unknown as Uint8Array), "INVALID_ARGUMENT");
      expect(await collect(store.list(""))).toEqual([]);
    });

    it("accepts every allowed key character", async () => {
      const key = "A-Z_a-z=0.9/..dots/x.y.z/_/-/=";
      await store.put(key, enc("ok"));
      expect(plain(await store.get(key))).toEqual(enc("ok"));
      expect((await collect(store.list(""))).map((o) => o.key)).toEqual([key]);
    });

    it("rejects every call with CLOSED after close, and close is idempotent", async () => {
      await store.put("c", enc("c"));
      await store.close();
      await store.close();
      await expectCode(store.put("c", enc("c")), "CLOSED");
      await expectCode(store.putIfAbsent("d", enc("d")), "CLOSED");
      await expectCode(store.get("c"), "CLOSED");
      await expectCode(store.head("c"), "CLOSED");
      await expectCode(store.delete("c"), "CLOSED");
      await expectCode(collect(store.list("")), "CLOSED");
    });

    it("behaves like a Map under random puts, creates, deletes, gets and lists (property)", async () => {
      // Keys are two levels deep so that no key is the "directory" of another (see the contract),
      // and their names straddle '/' in sort order.
      const first = fc.constantFrom("a", "a-b", "a.b", "a0", "ab");
      const second = fc.constantFrom("x", "x-1", "x.y", "x0", "y");
      const key = fc.tuple(first, second).map(([a, b]) => `${a}/${b}`);
      const command = fc.oneof(
        fc.record({ op: fc.constant("put" as const), key, body: fc.uint8Array({ maxLength: 12 }) }),
        fc.record({ op: fc.constant("putIfAbsent" as const), key, body: fc.uint8Array({ maxLength: 12 }) }),
        fc.record({ op: fc.constant("delete" as const), key }),
        fc.record({ op: fc.constant("get" as const), key, range: fc.option(fc.record({ offset: fc.nat(14), length: fc.nat(14) }), { nil: undefined }) }),
        fc.record({ op: fc.constant("list" as const), prefix: fc.constantFrom("", "a", "a/", "a-", "a.b/", "ab/x", "a0/x.", "zz") }),
      );
      let run = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(command, { maxLength: 25 }), async (commands) => {
          // Each run gets its own namespace in the same store, so runs cannot see each other.
          const ns = `prop${run++}/`;
          const model = new Map<string, Uint8Array>();
          for (const c of commands) {
            if (c.op === "put") {
              await store.put(ns + c.key, c.body);
              model.set(ns + c.key, Uint8Array.from(c.body));
            } else if (c.op === "putIfAbsent") {
              const there = model.has(ns + c.key);
              expect(await store.putIfAbsent(ns + c.key, c.body)).toBe(there ? "exists" : "created");
              if (!there) model.set(ns + c.key, Uint8Array.from(c.body));
            } else if (c.op === "delete") {
              await store.delete(ns + c.key);
              model.delete(ns + c.key);
            } else if (c.op === "get") {
              const want = model.get(ns + c.key);
              const expected = want === undefined || c.range === undefined ? want
                : want.slice(Math.min(c.range.offset, want.length), c.range.offset + c.range.length);
              expect(plain(await store.get(ns + c.key, c.range))).toEqual(expected);
            } else {
              const expected = [...model.entries()].filter(([k]) => k.startsWith(ns + c.prefix))
                .sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => ({ key: k, size: v.length }));
              expect(await collect(store.list(ns + c.prefix))).toEqual(expected);
            }
          }
        }),
        { numRuns: 40 },
      );
    });
  });
}
