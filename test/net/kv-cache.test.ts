/**
 * The kv read cache (kv-cache.ts) against a real nats-server and a real strata server: ready, gets
 * served with no request (counted on the request subjects), real values for values the feed leaves
 * out and for chunked ones, read-after-write, deletes and TTL expiry, the byte limit, closing, and
 * a property test: after any interleaving of writes from several clients, each with its own cache,
 * every cache converges to the server's state.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import type { KvCache } from "../../src/net/client/kv-cache.js";
import { countRequests } from "../helpers/request-counter.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";
import { connect, type NatsConnection } from "nats";

/** Small, so that most values of these tests are left out of the change feed. */
const INLINE = 64;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => Buffer.from(b).toString();

let stack: Stack;
let client: StrataClient;
let other: StrataClient;
let otherNc: NatsConnection;
/** Requests sent to the server, by op, as a raw subscriber on the request subjects sees them. */
let requests: Map<string, number>;

beforeAll(async () => {
  stack = await startStack({ id: "kc", store: { limits: { ttlSweepIntervalMs: 100 } }, server: { limits: { changeInlineBytesMax: INLINE } } });
  requests = (await countRequests(stack.nc, "strata.*.kc.>")).byOp;
  client = new StrataClient(stack.nc, { server: "kc", timeoutMs: 5000 });
  otherNc = await connect({ servers: stack.nats.url });
  other = new StrataClient(otherNc, { server: "kc", timeoutMs: 5000 });
});

afterAll(async () => {
  client?.close();
  other?.close();
  await otherNc?.close();
  await stack?.stop();
});

function count(op: string): number {
  return requests.get(op) ?? 0;
}

/** Requests that read or write data (the watch's `changes` requests are counted apart). */
function dataRequests(): number {
  let n = 0;
  for (const [op, c] of requests) if (op !== "changes") n += c;
  return n;
}

async function serverState(location: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const e of client.kv(location).getAll()) out[e.key] = `${e.revision}:${dec(e.value)}`;
  return out;
}

async function cacheState(cache: KvCache): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await cache.getAll()) out[e.key] = `${e.revision}:${dec(e.value)}`;
  return out;
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const big = (tag: string, n = 300) => enc(tag.padEnd(n, "#"));

describe("kv cache", () => {
  it("is ready with what existed, follows later writes (values the feed left out included), and serves gets with no request", async () => {
    const kv = client.kv("kc/basic");
    for (let i = 0; i < 20; i++) await kv.set(`k${i}`, i % 2 ? big(`v${i}`) : enc(`v${i}`));
    const cache = kv.cache();
    await cache.ready;
    expect(cache.revision).toBeGreaterThanOrEqual(20);
    // Later writes from another client, half of them too large for the feed.
    const okv = other.kv("kc/basic");
    let last = 0;
    for (let i = 20; i < 40; i++) last = (await okv.set(`k${i}`, i % 2 ? big(`w${i}`) : enc(`w${i}`))).revision;
    await okv.delete("k0");
    last = (await okv.set("k1", big("again"))).revision;
    await cache.waitFor(last);
    const before = dataRequests();
    for (let round = 0; round < 50; round++) {
      for (let i = 1; i < 40; i++) {
        const e = await cache.get(`k${i}`);
        const want = i === 1 ? big("again") : i < 20 ? (i % 2 ? big(`v${i}`) : enc(`v${i}`)) : i % 2 ? big(`w${i}`) : enc(`w${i}`);
        expect(dec(e!.value), `k${i}`).toBe(dec(want));
      }
      expect(await cache.get("k0")).toBeUndefined();
      expect(await cache.get("absent")).toBeUndefined();
    }
    expect(dataRequests() - before).toBe(0);
    expect(await cacheState(cache)).toEqual(await serverState("kc/basic"));
    await expect(cache.get("bad key!")).rejects.toMatchObject({ code: "INVALID_KEY" });
    cache.close();
    await expect(cache.get("k1")).rejects.toMatchObject({ code: "CLOSED" });
  });

  it("fetches an omitted value once per feed message, not once per get", async () => {
    const cache = client.kv("kc/omit").cache();
    await cache.ready;
    const changesBefore = count("changes");
    const writes = await other.kv("kc/omit").setMany(Array.from({ length: 50 }, (_, i) => ({ key: `b${i}`, value: big(`x${i}`) })));
    const last = Math.max(...writes.map((w) => (w.ok ? w.result.revision : 0)));
    await cache.waitFor(last);
    // One group commit, one feed message: its omitted values come back in a few `changes` requests.
    const fetches = count("changes") - changesBefore;
    expect(fetches).toBeGreaterThanOrEqual(1);
    expect(fetches).toBeLessThan(10);
    for (let i = 0; i < 50; i++) expect(dec((await cache.get(`b${i}`))!.value)).toBe(dec(big(`x${i}`)));
    cache.close();
  });

  it("is read-after-write for its own sets and deletes, and waitFor() gives it for writes made elsewhere", async () => {
    const kv = client.kv("kc/raw");
    const cache = kv.cache();
    await cache.ready;
    for (let i = 0; i < 40; i++) {
      const value = i % 3 ? enc(`n${i}`) : big(`n${i}`);
      const r = await cache.set("x", value);
      const e = await cache.get("x");
      expect(e?.revision).toBe(r.revision);
      expect(dec(e!.value)).toBe(dec(value));
      if (i % 5 === 0) {
        await cache.delete("x");
        expect(await cache.get("x")).toBeUndefined();
      }
      const elsewhere = await other.kv("kc/raw").set(`y${i}`, enc(`o${i}`));
      await cache.waitFor(elsewhere.revision);
      expect(dec((await cache.get(`y${i}`))!.value)).toBe(`o${i}`);
    }
    // A write the server refuses rejects as it would without the cache.
    await expect(cache.set("x", enc("z"), { expectedRevision: 1 })).rejects.toMatchObject({ code: "CONFLICT" });
    cache.close();
  });

  it("hides an entry past its TTL at once and drops it when the server's expiry arrives", async () => {
    const cache = client.kv("kc/ttl").cache();
    await cache.ready;
    await cache.set("keep", enc("k"));
    const r = await cache.set("short", enc("s"), { ttlMs: 300 });
    const held = await cache.get("short");
    expect(held?.revision).toBe(r.revision);
    expect(held?.expiresAt).toBeGreaterThan(Date.now() - 1000);
    const bytesWithBoth = cache.bytes;
    await until("the entry expires", async () => (await cache.get("short")) === undefined);
    expect(await cache.keys()).toEqual(["keep"]);
    // The server's sweep turns it into an `expire` change: the cache lets go of its bytes.
    await until("the expire change", () => cache.bytes < bytesWithBoth);
    expect(await client.kv("kc/ttl").get("short")).toBeUndefined();
    cache.close();
  });

  it("reads a value too large for one feed message from the server", async () => {
    const cache = client.kv("kc/chunked").cache();
    await cache.ready;
    const value = new Uint8Array(2 * 1024 * 1024).map((_, i) => i % 251);
    const r = await cache.set("huge", value);
    const gets = count("kv.get");
    const e = await cache.get("huge");
    expect(e?.revision).toBe(r.revision);
    expect(Buffer.compare(Buffer.from(e!.value), Buffer.from(value))).toBe(0);
    expect(count("kv.get") - gets).toBe(1);
    // Not counted as held: a marker only.
    expect(cache.bytes).toBeLessThan(4096);
    cache.close();
  });

  it("refuses with TOO_LARGE past cacheBytesMax, in replay and live, and lets go of its memory", async () => {
    const kv = client.kv("kc/limit");
    for (let i = 0; i < 30; i++) await kv.set(`k${i}`, big(`v${i}`, 1000));
    // Too small for what exists: the replay overflows it, `ready` rejects.
    const small = kv.cache({ cacheBytesMax: 10_000 });
    await expect(small.ready).rejects.toMatchObject({ code: "TOO_LARGE" });
    await expect(small.get("k1")).rejects.toMatchObject({ code: "TOO_LARGE", message: expect.stringMatching(/raise cacheBytesMax/) });
    expect(small.bytes).toBe(0);
    // Large enough at first, then live writes push it past the limit.
    const live = kv.cache({ cacheBytesMax: 60_000 });
    await live.ready;
    expect(live.bytes).toBeGreaterThan(30_000);
    expect((await live.get("k3"))?.key).toBe("k3");
    const writes = (async () => {
      for (let i = 30; i < 80; i++) await other.kv("kc/limit").set(`k${i}`, big(`v${i}`, 1000));
    })();
    await until("the cache refuses", async () => (await live.get("k3").then(() => false, (e: unknown) => StrataError.is(e, "TOO_LARGE"))));
    await writes;
    expect(live.bytes).toBe(0);
    await expect(live.set("k1", enc("x"))).rejects.toMatchObject({ code: "TOO_LARGE" });
    await expect(live.keys()).rejects.toMatchObject({ code: "TOO_LARGE" });
  });

  it("stays fresh (no UNAVAILABLE) while the server is busy with writes and while it is idle", async () => {
    const nc = await connect({ servers: stack.nats.url });
    const c = new StrataClient(nc, { server: "kc", timeoutMs: 1500, limits: { attemptTimeoutMs: 300, cacheStaleMsMax: 800 } });
    const cache = c.kv("kc/fresh").cache();
    await cache.ready;
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) await other.kv("kc/fresh").set(`w${i % 10}`, enc(`${i}`));
    })();
    const refusals: string[] = [];
    const read = async (ms: number) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        await cache.get("w1").catch((e: StrataError) => refusals.push(e.code));
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    await read(1500); // busy: live changes keep it fresh even though the watch never idles
    writing = false;
    await writer;
    await read(1500); // idle: its own catch-up requests keep it fresh
    expect(refusals).toEqual([]);
    c.close();
    await nc.close();
  });

  it("validates its options and refuses after the client is closed", async () => {
    expect(() => client.kv("kc/opts").cache({ cacheBytesMax: 0 })).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => client.kv("kc/opts").cache({ cacheStaleMsMax: 10 })).toThrow(/cacheStaleMsMax \(10\) must be >=/);
    expect(() => client.kv("kc/opts").cache({ nope: 1 } as never)).toThrow(/unknown cache option/);
    const nc = await connect({ servers: stack.nats.url });
    // The cache's relation binds only caches: a client with long attempts is fine until it makes one.
    const slow = new StrataClient(nc, { server: "kc", timeoutMs: 60_000, limits: { attemptTimeoutMs: 6000 } });
    await slow.kv("kc/opts").set("k", new Uint8Array([1]));
    expect(() => slow.kv("kc/opts").cache()).toThrow(/cacheStaleMsMax \(10000\) must be >=/);
    slow.close();
    const c = new StrataClient(nc, { server: "kc" });
    const cache = c.kv("kc/opts").cache();
    await cache.ready;
    c.close();
    await expect(cache.get("a")).rejects.toMatchObject({ code: "CLOSED" });
    await nc.close();
  });

  it("property: after any interleaving of writes from several clients, every cache converges to the server", async () => {
    const clients = [client, other, new StrataClient(stack.nc, { server: "kc", timeoutMs: 5000 })];
    const op = fc.record({
      who: fc.integer({ min: 0, max: clients.length - 1 }),
      key: fc.constantFrom("a", "b", "c", "d"),
      del: fc.boolean(),
      large: fc.boolean(),
      tag: fc.integer({ min: 0, max: 999 }),
    });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 4 }), { minLength: 2, maxLength: 8 }), async (rounds) => {
        const location = `kc/prop${run++}`;
        let last = 0;
        const valueOf = (o: { who: number; large: boolean; tag: number }) => (o.large ? big(`${o.who}:${o.tag}`) : enc(`${o.who}:${o.tag}`));
        // The first round goes straight to the server while the caches start: it races their replays.
        const first = Promise.all(
          rounds[0]!.map(async (o) => {
            const kv = clients[o.who]!.kv(location);
            const r = o.del ? await kv.delete(o.key) : await kv.set(o.key, valueOf(o));
            last = Math.max(last, r.revision);
          }),
        );
        const caches = clients.map((c) => c.kv(location).cache());
        try {
          await first;
          await Promise.all(caches.map((c) => c.ready));
          for (const round of rounds.slice(1)) {
            // The writes of a round race each other (different clients, one turn of the event loop).
            await Promise.all(
              round.map(async (o) => {
                const cache = caches[o.who]!;
                if (o.del) {
                  const r = await cache.delete(o.key);
                  last = Math.max(last, r.revision);
                  // Read-after-write: the cache shows this delete or something newer.
                  const e = await cache.get(o.key);
                  expect(e === undefined || e.revision > r.revision).toBe(true);
                } else {
                  const r = await cache.set(o.key, valueOf(o));
                  last = Math.max(last, r.revision);
                  const e = await cache.get(o.key);
                  expect(e === undefined || e.revision >= r.revision).toBe(true);
                }
              }),
            );
          }
          await Promise.all(caches.map((c) => c.waitFor(last)));
          const truth = await serverState(location);
          for (const cache of caches) expect(await cacheState(cache)).toEqual(truth);
        } finally {
          for (const c of caches) c.close();
        }
      }),
      { numRuns: 25 },
    );
  });
});

