/**
 * Edges of the kv read cache (kv-cache.ts) against a real nats-server (64 KiB max_payload) and a
 * real strata server storing values past 64 KiB in chunks, so that a 100 KiB value is `chunked` in
 * the feed and the cache holds only a marker for it:
 * - getAll() never serves a chunked key's marker (an empty value) when the server no longer has
 *   the key; keys() lists the held keys without reading their values from the server;
 * - waitFor() refuses a revision that is not one (INVALID_ARGUMENT) instead of waiting timeoutMs;
 * - pinned: close() while a get() waits for `ready` or a waitFor() is pending rejects them with
 *   CLOSED at once; a cache of a stream location fails with WRONG_KIND; two caches of one location
 *   on one client are independent (closing one leaves the other following).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { StrataClient } from "../../src/net/client/client.js";
import { countRequests, type RequestCounter } from "../helpers/request-counter.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

const KiB = 1024;
const enc = (s: string) => new TextEncoder().encode(s);
const chunkedValue = (tag: string) => enc(tag.padEnd(100 * KiB, "#"));

let stack: Stack;
let client: StrataClient;
/** Requests sent to the server, by op. */
let requests: RequestCounter;
const count = (op: string) => requests.count(op);

beforeAll(async () => {
  // No TTL sweep within the tests: an expired key stays in the index (hidden by get) without an
  // `expire` change, as it does between two sweeps of a real server.
  stack = await startStack({ id: "ce", nats: { maxPayload: 64 * KiB }, store: { limits: { ttlSweepIntervalMs: 600_000, recordBytesMax: 68 * KiB, chunkBytes: 64 * KiB } } });
  requests = await countRequests(stack.nc, "strata.*.ce.>");
  client = new StrataClient(stack.nc, { server: "ce", timeoutMs: 3000 });
});

afterAll(async () => {
  client?.close();
  await stack?.stop();
});

describe("kv cache edges", () => {
  it("getAll() leaves out a chunked key the server no longer has, rather than serve its marker's empty value", async () => {
    const kv = client.kv("ce/gone");
    const cache = kv.cache();
    await cache.ready;
    await cache.set("kept", chunkedValue("kept"));
    const r = await cache.set("b", chunkedValue("b"), { ttlMs: 1 });
    const held = r.timestamp + 1;
    // The server hides b once its TTL passed; with no sweep, the cache is not told.
    while (Date.now() <= held) await new Promise((resolve) => setTimeout(resolve, 1));
    expect(await kv.get("b")).toBeUndefined();
    // This client's clock lags the server's: by it, b has not expired yet.
    const now = vi.spyOn(Date, "now").mockReturnValue(held - 1);
    let all: ReturnType<typeof cache.getAll>;
    try {
      all = cache.getAll();
    } finally {
      now.mockRestore();
    }
    const entries = await all;
    expect(entries.map((e) => e.key)).toEqual(["kept"]);
    expect(entries[0]!.value.byteLength).toBe(100 * KiB);
    cache.close();
  });

  it("keys() lists chunked keys from the cache, without reading their values", async () => {
    const cache = client.kv("ce/keys").cache();
    await cache.ready;
    for (const k of ["a", "b", "c"]) await cache.set(k, chunkedValue(k));
    await cache.set("small", enc("s"));
    const gets = count("kv.get");
    expect(await cache.keys()).toEqual(["a", "b", "c", "small"]);
    expect(count("kv.get") - gets).toBe(0);
    cache.close();
  });

  it("waitFor() refuses what is not a revision with INVALID_ARGUMENT at once", async () => {
    const cache = client.kv("ce/wait").cache();
    await cache.ready;
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, "3", undefined, 2 ** 60]) {
      const started = Date.now();
      await expect(cache.waitFor(bad as number), String(bad)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      expect(Date.now() - started).toBeLessThan(1000);
    }
    await cache.waitFor(0);
    cache.close();
  });

  it("close() rejects a get() waiting for ready and a pending waitFor() with CLOSED at once", async () => {
    const cache = client.kv("ce/close").cache();
    const get = cache.get("a"); // before ready: waits for it
    const wait = cache.waitFor(1_000_000);
    cache.close();
    await expect(get).rejects.toMatchObject({ code: "CLOSED" });
    await expect(wait).rejects.toMatchObject({ code: "CLOSED" });
    await expect(cache.ready).rejects.toMatchObject({ code: "CLOSED" });
    expect(cache.bytes).toBe(0);
  });

  it("a cache of a stream location fails with WRONG_KIND; two caches of one location are independent", async () => {
    await client.stream("ce/stream").append({ value: enc("m") });
    const wrong = client.kv("ce/stream").cache();
    await expect(wrong.ready).rejects.toMatchObject({ code: "WRONG_KIND" });
    await expect(wrong.get("a")).rejects.toMatchObject({ code: "WRONG_KIND" });
    const one = client.kv("ce/two").cache();
    const two = client.kv("ce/two").cache();
    await Promise.all([one.ready, two.ready]);
    await one.set("k", enc("1"));
    one.close();
    const { revision } = await client.kv("ce/two").set("k", enc("2"));
    await two.waitFor(revision);
    expect(Buffer.from((await two.get("k"))!.value).toString()).toBe("2");
    await expect(one.get("k")).rejects.toMatchObject({ code: "CLOSED" });
    two.close();
  });
});
