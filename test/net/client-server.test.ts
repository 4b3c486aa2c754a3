/**
 * StrataClient against a real nats-server and an in-process server: every Store method over the
 * wire with the same results, errors coming back as StrataError with the same code and the
 * caller's stack, batches in one request, and no-responders / timeouts as UNAVAILABLE / TIMEOUT.
 */
import type { NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import type { StrataServer } from "../../src/net/server/server.js";
import type { Store } from "../../src/store.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined) => new TextDecoder().decode(b);

let stack: Stack;
let store: Store;
let server: StrataServer;
let nc: NatsConnection;
let client: StrataClient;

beforeAll(async () => {
  stack = await startStack({ id: "s1" });
  ({ store, server, nc } = stack);
  client = new StrataClient(nc, { server: "s1" });
});

afterAll(async () => {
  client?.close();
  await stack?.stop();
});

describe("stream over NATS", () => {
  it("appends, gets, sets, deletes, lists and counts like the store", async () => {
    const s = client.stream("acct/alice/chat");
    const a = await s.append({ value: enc("one"), headers: { h: "1" } });
    expect(a.seq).toBe(1);
    expect(a.revision).toBe(1);
    const b = await s.append({ value: enc("two"), timestamp: 1234 });
    expect(b.seq).toBe(2);
    const got = await s.get(1);
    expect(dec(got?.value)).toBe("one");
    expect(got?.headers).toEqual({ h: "1" });
    expect((await s.get(2))?.timestamp).toBe(1234);
    expect(await s.get(99)).toBeUndefined();
    await s.set(5, { value: enc("five") });
    expect((await s.delete(2)).deleted).toBe(true);
    expect((await s.delete(2)).deleted).toBe(false);
    const all = [];
    for await (const m of s.getAll()) all.push([m.seq, dec(m.value)]);
    expect(all).toEqual([[1, "one"], [5, "five"]]);
    const from5 = [];
    for await (const m of s.getAll({ startSeq: 2 })) from5.push(m.seq);
    expect(from5).toEqual([5]);
    const inv = await s.inventory();
    expect(inv).toMatchObject({ location: "acct/alice/chat", kind: "stream", count: 2, firstSeq: 1, lastSeq: 5 });
    expect(inv).toEqual(store.inventory("acct/alice/chat"));
    expect((await s.deleteAll({ endSeq: 1 })).count).toBe(1);
    expect((await s.inventory()).count).toBe(1);
  });

  it("dedups by msgId and checks expectedLastSeq", async () => {
    const s = client.stream("acct/alice/dedup");
    const first = await s.append({ value: enc("x") }, { msgId: "m1" });
    const again = await s.append({ value: enc("x") }, { msgId: "m1" });
    expect(again.seq).toBe(first.seq);
    expect(again.duplicate).toBe(true);
    const err = await s.append({ value: enc("y") }, { expectedLastSeq: 7 }).catch((e: unknown) => e);
    expect(StrataError.is(err, "CONFLICT")).toBe(true);
  });

  it("sends appendMany / setMany as one request with one reply and per-item results", async () => {
    const s = client.stream("acct/alice/many");
    const before = server.stats().requests;
    const results = await s.appendMany([{ message: { value: enc("a") } }, { message: { value: enc("b") } }, { message: { value: "bad" as never } }]);
    expect(server.stats().requests - before).toBe(1);
    expect(results[0]).toMatchObject({ ok: true, result: { seq: 1 } });
    expect(results[1]).toMatchObject({ ok: true, result: { seq: 2 } });
    expect(results[2]).toMatchObject({ ok: false, error: { code: "INVALID_ARGUMENT" } });
    const sets = await s.setMany([{ seq: 10, message: { value: enc("ten") } }, { seq: 0, message: {} }]);
    expect(sets[0]).toMatchObject({ ok: true, result: { seq: 10 } });
    expect(sets[1]).toMatchObject({ ok: false, error: { code: "INVALID_ARGUMENT" } });
  });
});

describe("kv over NATS", () => {
  it("sets, gets, deletes, lists keys and entries", async () => {
    const kv = client.kv("acct/alice/settings");
    const r = await kv.set("theme", enc("dark"), { headers: { by: "test" } });
    expect(r.revision).toBe(1);
    await kv.set("lang", enc("en"));
    const e = await kv.get("theme");
    expect(dec(e?.value)).toBe("dark");
    expect(e).toMatchObject({ key: "theme", revision: 1, headers: { by: "test" } });
    expect(await kv.get("nope")).toBeUndefined();
    const conflict = await kv.set("theme", enc("x"), { expectedRevision: 0 }).catch((err: unknown) => err);
    expect(StrataError.is(conflict, "CONFLICT")).toBe(true);
    const keys = [];
    for await (const k of kv.keys()) keys.push(k);
    expect(keys).toEqual(["lang", "theme"]);
    const entries = [];
    for await (const en of kv.getAll()) entries.push(en.key);
    expect(entries).toEqual(["lang", "theme"]);
    expect((await kv.delete("lang")).deleted).toBe(true);
    expect((await kv.inventory()).count).toBe(1);
    const many = await kv.setMany([{ key: "a", value: enc("1") }, { key: "bad key", value: enc("2") }]);
    expect(many[0]!.ok).toBe(true);
    expect(many[1]).toMatchObject({ ok: false, error: { code: "INVALID_KEY" } });
  });
});

describe("errors on the wire", () => {
  it("come back as StrataError with the server's code and the caller's stack", async () => {
    await client.kv("acct/alice/kind").set("k", enc("v"));
    // The stack names the callers awaiting the call (V8's async stack traces), not the reply handler.
    const err = await (async function callerFrameForStack() {
      return await client.stream("acct/alice/kind").append({ value: enc("x") });
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrataError);
    expect((err as StrataError).code).toBe("WRONG_KIND");
    expect((err as Error).stack).toContain("callerFrameForStack");
    const bad = await client.stream("acct/alice/chat").get(0).catch((e: unknown) => e);
    expect(StrataError.is(bad, "INVALID_ARGUMENT")).toBe(true);
  });

  it("rejects an invalid location before sending", () => {
    expect(() => client.stream("acct//x")).toThrow(StrataError);
  });

  it("turns no responders into UNAVAILABLE with a hint", async () => {
    const nobody = new StrataClient(nc, { server: "nobody", timeoutMs: 300 });
    const err = await nobody.stream("acct/alice/chat").get(1).catch((e: unknown) => e);
    expect(StrataError.is(err, "UNAVAILABLE")).toBe(true);
    expect((err as Error).message).toContain("no responders");
    nobody.close();
  });

  it("turns silence into TIMEOUT with a hint, and does not repeat a write that may have happened", async () => {
    // A responder that never answers: requests are delivered, no reply comes.
    let seen = 0;
    const sub = nc.subscribe("strata.w.mute.>", { callback: () => (seen += 1) });
    const mute = new StrataClient(nc, { server: "mute", timeoutMs: 300 });
    const err = await mute.stream("acct/alice/chat").append({ value: enc("x") }).catch((e: unknown) => e);
    expect(StrataError.is(err, "TIMEOUT")).toBe(true);
    expect((err as Error).message).toMatch(/may or may not have been applied/);
    expect(seen).toBe(1);
    sub.unsubscribe();
    mute.close();
  });
});
