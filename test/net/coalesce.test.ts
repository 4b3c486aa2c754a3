/**
 * Client-side coalescing (src/net/wire/client-coalesce.ts) against a real nats-server and server:
 * calls issued together travel as one `batch` request, yet each keeps its own result, its own
 * error and its place in the order; coalescing can be turned off; a batch that fails as a whole
 * fails each of its calls. The property test checks the invariant that makes coalescing
 * invisible: any mix of writes issued together over the wire gives exactly the results the same
 * calls give in-process, in the same order.
 */
import { join } from "node:path";
import { decode } from "cbor-x";
import fc from "fast-check";
import type { NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import type { StrataServer } from "../../src/net/server/server.js";
import { Store } from "../../src/store.js";
import type { KvApi, StreamApi } from "../../src/types.js";
import { all } from "../helpers/collect.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined) => new TextDecoder().decode(b);

let stack: Stack;
let store: Store;
let model: Store;
let server: StrataServer;
let nc: NatsConnection;
let client: StrataClient;

beforeAll(async () => {
  stack = await startStack({ id: "c1" });
  ({ store, server, nc } = stack);
  model = await Store.open({ dir: join(stack.dir, "model"), id: "model" });
  client = new StrataClient(nc, { server: "c1" });
});

afterAll(async () => {
  client?.close();
  await model?.close();
  await stack?.stop();
});

const requests = () => server.stats().requests;

describe("coalescing", () => {
  it("sends calls issued together as one request; each gets its own result, in call order", async () => {
    const s = client.stream("co/order");
    const before = requests();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => s.append({ value: enc(`m${i}`) })));
    expect(requests() - before).toBe(1);
    expect(results.map((r) => r.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(new Set(results.map((r) => r.revision)).size).toBe(50);
    const stored = await all(s.getAll());
    expect(stored.map((m) => dec(m.value))).toEqual(Array.from({ length: 50 }, (_, i) => `m${i}`));
  });

  it("splits at coalesceItemsMax, and sends every call alone when it is 1", async () => {
    for (const [max, expected] of [
      [7, 3],
      [1, 20],
    ] as const) {
      const c = new StrataClient(nc, { server: "c1", limits: { coalesceItemsMax: max } });
      const kv = c.kv(`co/limit${max}`);
      const before = requests();
      await Promise.all(Array.from({ length: 20 }, (_, i) => kv.set(`k${i}`, enc(`v${i}`))));
      expect(requests() - before).toBe(expected);
      expect((await kv.inventory()).count).toBe(20);
      c.close();
    }
  });

  it("refuses a coalesceItemsMax no server would accept, and one that is not a positive integer", () => {
    for (const bad of [20_000, 0, 1.5]) {
      expect(() => new StrataClient(nc, { server: "c1", limits: { coalesceItemsMax: bad } })).toThrow(
        expect.objectContaining({ code: "INVALID_ARGUMENT", message: expect.stringContaining("coalesceItemsMax") }),
      );
    }
  });

  it("gives each call its own error while the others in its batch succeed", async () => {
    const s = client.stream("co/errors");
    await s.append({ value: enc("first") });
    const before = requests();
    const outcomes = await Promise.allSettled([
      s.append({ value: enc("a") }),
      s.append({ value: enc("b") }, { expectedLastSeq: 99 }),
      client.kv("co/errors").set("k", enc("wrong kind")),
      s.set(0, { value: enc("bad seq") }),
      s.append({ value: enc("c") }, { expectedLastSeq: 2 }),
      s.delete(1),
    ]);
    expect(requests() - before).toBe(1);
    const summary = outcomes.map((o) => (o.status === "fulfilled" ? "ok" : (o.reason as StrataError).code));
    expect(summary).toEqual(["ok", "CONFLICT", "WRONG_KIND", "INVALID_ARGUMENT", "ok", "ok"]);
    for (const o of outcomes) if (o.status === "rejected") expect(o.reason).toBeInstanceOf(StrataError);
    expect((await all(s.getAll())).map((m) => dec(m.value))).toEqual(["a", "c"]);
  });

  it("does not mix calls that may be sent again (msgId) with those that may not, and keeps the order", async () => {
    const s = client.stream("co/kinds");
    const before = requests();
    const results = await Promise.all([
      s.append({ value: enc("a") }),
      s.append({ value: enc("b") }),
      s.append({ value: enc("c") }, { msgId: "c" }),
      s.append({ value: enc("d") }, { msgId: "d" }),
      s.append({ value: enc("e") }),
    ]);
    expect(requests() - before).toBe(3);
    expect(results.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it("coalesces reads too: gets of present and absent entries", async () => {
    const kv = client.kv("co/reads");
    await kv.set("x", enc("X"));
    const before = requests();
    const got = await Promise.all([kv.get("x"), kv.get("missing"), kv.get("x")]);
    expect(requests() - before).toBe(1);
    expect(got.map((e) => (e === undefined ? undefined : dec(e.value)))).toEqual(["X", undefined, "X"]);
  });

  it("asks again alone for a large value, which the server streams from disk", async () => {
    const kv = client.kv("co/large");
    const big = new Uint8Array(3 * 1024 * 1024 + 5).map((_, i) => i % 251);
    await kv.set("big", big);
    await kv.set("small", enc("s"));
    const before = requests();
    const got = await Promise.all([kv.get("big"), kv.get("small"), kv.get("big")]);
    // One batch, then each large get again alone.
    expect(requests() - before).toBe(3);
    expect(Buffer.from(got[0]!.value).equals(Buffer.from(big))).toBe(true);
    expect(dec(got[1]!.value)).toBe("s");
    expect(Buffer.from(got[2]!.value).equals(Buffer.from(big))).toBe(true);
  });

  it("fails every call of a batch that cannot be delivered, each with its own error object", async () => {
    const c = new StrataClient(nc, { server: "nobody", timeoutMs: 300 });
    const s = c.stream("co/none");
    const outcomes = await Promise.allSettled([s.append({ value: enc("1") }), s.append({ value: enc("2") })]);
    c.close();
    expect(outcomes.map((o) => o.status)).toEqual(["rejected", "rejected"]);
    for (const o of outcomes) expect(StrataError.is((o as PromiseRejectedResult).reason, "UNAVAILABLE")).toBe(true);
  });
});

describe("change feed", () => {
  it("publishes the changes committed together as one array, in revision order", async () => {
    const messages: unknown[][] = [];
    let wake = () => {};
    const sub = nc.subscribe("strata.c.co.feed", {
      callback: (_err, msg) => {
        messages.push(decode(msg.data) as unknown[]);
        wake();
      },
    });
    await nc.flush();
    await Promise.all(Array.from({ length: 30 }, (_, i) => client.stream("co/feed").append({ value: enc(`m${i}`) })));
    while (messages.flat().length < 30) await new Promise<void>((resolve) => (wake = resolve));
    sub.unsubscribe();
    const changes = messages.flat() as Array<{ revision: number; seq: number; message: { value: Uint8Array } }>;
    expect(changes.map((c) => c.revision)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    expect(changes.map((c) => dec(c.message.value))).toEqual(Array.from({ length: 30 }, (_, i) => `m${i}`));
    // One batch, one group commit: far fewer messages than changes.
    expect(messages.length).toBeLessThan(5);
  });
});

/** The options that are set (the model and the wire then see the same object). */
function compact<T extends object>(o: T): T | undefined {
  const out = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
  return Object.keys(out).length === 0 ? undefined : out;
}

type WriteOp =
  | { t: "append"; v: number; expectedLastSeq?: number; msgId?: string }
  | { t: "set"; seq: number; v: number }
  | { t: "sdel"; seq: number }
  | { t: "kset"; key: string; v: number; expectedRevision?: number }
  | { t: "kdel"; key: string }
  | { t: "wrongKind"; v: number };

const writeOp: fc.Arbitrary<WriteOp> = fc.oneof(
  fc.record(
    { t: fc.constant("append" as const), v: fc.nat(99), expectedLastSeq: fc.option(fc.nat(6), { nil: undefined }), msgId: fc.option(fc.constantFrom("x", "y"), { nil: undefined }) },
    { requiredKeys: ["t", "v"] },
  ),
  fc.record({ t: fc.constant("set" as const), seq: fc.nat(6), v: fc.nat(99) }),
  fc.record({ t: fc.constant("sdel" as const), seq: fc.nat(6) }),
  fc.record({ t: fc.constant("kset" as const), key: fc.constantFrom("a", "b", "c"), v: fc.nat(99), expectedRevision: fc.option(fc.nat(4), { nil: undefined }) }, { requiredKeys: ["t", "key", "v"] }),
  fc.record({ t: fc.constant("kdel" as const), key: fc.constantFrom("a", "b", "c") }),
  fc.record({ t: fc.constant("wrongKind" as const), v: fc.nat(99) }),
);

/** Issues every op at once (no await in between) and describes each outcome without timestamps. */
async function issue(s: StreamApi, kv: KvApi, wrong: KvApi, ops: WriteOp[]): Promise<string[]> {
  const calls = ops.map((op): Promise<unknown> => {
    switch (op.t) {
      case "append":
        return s.append({ value: enc(`v${op.v}`) }, compact({ expectedLastSeq: op.expectedLastSeq, msgId: op.msgId }));
      case "set":
        return s.set(op.seq, { value: enc(`v${op.v}`) });
      case "sdel":
        return s.delete(op.seq);
      case "kset":
        return kv.set(op.key, enc(`v${op.v}`), op.expectedRevision === undefined ? undefined : { expectedRevision: op.expectedRevision });
      case "kdel":
        return kv.delete(op.key);
      case "wrongKind":
        return wrong.set("k", enc(`v${op.v}`));
    }
  });
  const settled = await Promise.allSettled(calls);
  return settled.map((o) => {
    if (o.status === "rejected") return StrataError.is(o.reason) ? o.reason.code : `not a StrataError: ${String(o.reason)}`;
    const r = o.value as { seq?: number; revision: number; deleted?: boolean; duplicate?: boolean };
    return JSON.stringify({ seq: r.seq, revision: r.revision, deleted: r.deleted, duplicate: r.duplicate });
  });
}

/** What a location holds, or the code of the error reading it (a stream location may be a kv). */
async function contents(s: StreamApi, kv: KvApi): Promise<unknown> {
  const or = (p: Promise<unknown>) => p.catch((e: unknown) => (StrataError.is(e) ? e.code : String(e)));
  return {
    stream: await or(all(s.getAll()).then((list) => list.map((m) => [m.seq, dec(m.value)]))),
    kv: await or(all(kv.getAll()).then((list) => list.map((e) => [e.key, e.revision, dec(e.value)]))),
  };
}

describe("coalescing is invisible", () => {
  it("writes issued together give the in-process store's results, in order, and the same contents", async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(writeOp, { minLength: 1, maxLength: 40 }), async (ops) => {
        run += 1;
        const names = { s: `prop/${run}/s`, kv: `prop/${run}/kv`, wrong: `prop/${run}/s` };
        // The model: the same calls made in-process, also all at once.
        const expected = await issue(model.stream(names.s), model.kv(names.kv), model.kv(names.wrong), ops);
        const got = await issue(client.stream(names.s), client.kv(names.kv), client.kv(names.wrong), ops);
        expect(got).toEqual(expected);
        expect(await contents(client.stream(names.s), client.kv(names.kv))).toEqual(await contents(model.stream(names.s), model.kv(names.kv)));
      }),
      { numRuns: 60 },
    );
  });
});
