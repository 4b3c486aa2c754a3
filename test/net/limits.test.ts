/**
 * Per-location limits over NATS (docs/compaction.md, "Per-location limits"), against a real
 * nats-server and an in-process server: `config` round trips and shows in `inventory()`; the
 * refusals of a limit arrive as StrataErrors with their codes (LIMIT for discard "new" and
 * maxMsgBytes, also inside coalesced batches and uploads; FORBIDDEN for denyDelete); discard
 * "old" is seen by a watcher, whose state then matches getAll; bad limits get INVALID_ARGUMENT
 * exactly where the in-process validator says so and change nothing; a user whom nats-server lets
 * only read cannot config (the op is write-class); and a config passes a coordinator's admission.
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { Encoder } from "cbor-x";
import fc from "fast-check";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import type { Watch } from "../../src/net/client/watch.js";
import { startCoordinator, type Coordinator } from "../../src/net/coord/coordinator.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { errorOfReply } from "../../src/net/wire/wire-errors.js";
import type { Change, Kind, LocationLimits } from "../../src/types.js";
import { checkLocationLimits, LOCATION_LIMIT_FIELDS, locationLimitCaps } from "../../src/validate.js";
import { all } from "../helpers/collect.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

// Connections without credentials are "admin" (no permissions set: may do anything): the stack's
// own connection and server. "reader" may only read (and watch) acct/alice/….
const NATS_CONFIG = `
no_auth_user: "admin"
authorization {
  users = [
    { user: "admin", password: "admin" }
    { user: "reader", password: "reader", permissions: {
        publish: { allow: ["strata.r.*.acct.alice.>"] }
        subscribe: { allow: ["strata.c.acct.alice.>", "_INBOX.reader.>"] } } }
  ]
}
`;
const enc = (s: string) => new TextEncoder().encode(s);
const cbor = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false });

let stack: Stack;
let client: StrataClient;
const conns: NatsConnection[] = [];

beforeAll(async () => {
  stack = await startStack({ id: "s1", nats: { config: NATS_CONFIG } });
  client = new StrataClient(stack.nc, { server: "s1", timeoutMs: 5000 });
});

afterAll(async () => {
  client?.close();
  for (const nc of conns) await nc.close();
  await stack?.stop();
});

/** The StrataError a promise rejects with (fails the test if it resolves). */
async function failure(p: Promise<unknown>): Promise<StrataError> {
  const err = await p.then(
    (v) => new Error(`expected a failure, got ${JSON.stringify(v)}`),
    (e: unknown) => e,
  );
  if (!(err instanceof StrataError)) throw err;
  return err;
}

/** Sends a raw request body (CBOR of a Map, any keys) and returns the reply's error code or "OK". */
async function raw(cls: "w" | "r", location: string, body: Map<unknown, unknown>): Promise<string> {
  const subject = `strata.${cls}.s1.${location.replaceAll("/", ".")}`;
  const reply = await stack.nc.request(subject, cbor.encode(body), { timeout: 5000 });
  return errorOfReply(reply, () => subject)?.code ?? "OK";
}

/** Folds a watch's changes into the seqs it shows as present, until it has seen `revision`. */
async function followTo(watch: Watch, state: Set<number>, seen: Change[], revision: number): Promise<void> {
  while ((seen.at(-1)?.revision ?? 0) < revision) {
    const next = await watch.next();
    if (next.done) throw new Error("the watch ended");
    const c = next.value;
    seen.push(c);
    if (c.kind !== "stream") continue;
    if (c.op === "set") state.add(c.seq);
    else if (c.op === "delete") state.delete(c.seq);
    else for (const seq of [...state]) if (seq <= c.endSeq) state.delete(seq);
  }
}

describe("config over NATS", () => {
  it("round trips, equals the in-process result and shows in inventory()", async () => {
    const s = client.stream("acct/alice/rt");
    const limits: LocationLimits = { maxMsgs: 3, maxBytes: 1000, maxMsgBytes: 100, discard: "old", denyDelete: false, dedupWindowMs: 5000 };
    const stored = await s.config(limits);
    expect(stored).toMatchObject({ maxMsgs: 3, maxBytes: 1000, maxMsgBytes: 100, dedupWindowMs: 5000 });
    // The same normalisation as in-process (the server hands the limits to the same handle).
    expect(stored).toEqual(await stack.store.stream("acct/alice/rt-local").config(limits));
    const inv = await s.inventory();
    expect(inv.kind).toBe("stream");
    expect(inv.limits).toMatchObject({ maxMsgs: 3, maxBytes: 1000, maxMsgBytes: 100, dedupWindowMs: 5000 });
    expect(inv.limits).toEqual(stack.store.inventory("acct/alice/rt").limits);

    const kv = client.kv("acct/alice/rt-kv");
    expect(await kv.config({ maxMsgs: 2, ttlMs: 60_000 })).toMatchObject({ maxMsgs: 2, ttlMs: 60_000 });
    expect((await kv.inventory()).limits).toMatchObject({ maxMsgs: 2, ttlMs: 60_000 });
    expect((await kv.inventory()).kind).toBe("kv");
    // config replaces the whole configuration: {} removes every limit.
    expect(await kv.config({})).toEqual({});
    const cleared = (await kv.inventory()).limits;
    expect(cleared.maxMsgs).toBeUndefined();
    expect(cleared.ttlMs).toBeUndefined();
  });

  it("discard new and maxMsgBytes refuse with LIMIT, alone, coalesced and as an upload", async () => {
    const s = client.stream("acct/alice/full");
    await s.config({ maxMsgs: 2, discard: "new" });
    // Four appends in one turn travel as one batch; each gets its own result or error.
    const results = await Promise.allSettled([1, 2, 3, 4].map((i) => s.append({ value: enc(`m${i}`) })));
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "rejected", "rejected"]);
    for (const r of results.slice(2)) expect(StrataError.is((r as PromiseRejectedResult).reason, "LIMIT")).toBe(true);
    const alone = await failure(s.append({ value: enc("late") }));
    expect(alone.code).toBe("LIMIT");
    expect((await s.inventory()).count).toBe(2);

    // A value over max_payload (1 MiB) travels as an upload; its refusal arrives the same way.
    const big = client.stream("acct/alice/big");
    await big.config({ maxMsgBytes: 1024 * 1024 });
    expect((await failure(big.append({ value: randomBytes(1536 * 1024) }))).code).toBe("LIMIT");
    expect((await failure(big.append({ value: randomBytes(1024 * 1024 + 1) }))).code).toBe("LIMIT");
    await big.append({ value: randomBytes(1024 * 1024) });
    expect((await big.inventory()).count).toBe(1);

    const kv = client.kv("acct/alice/full-kv");
    await kv.config({ maxMsgs: 1 });
    await kv.set("a", enc("1"));
    await kv.set("a", enc("2")); // an existing key takes no more room
    expect((await failure(kv.set("b", enc("1")))).code).toBe("LIMIT");
    expect(await all(kv.keys())).toEqual(["a"]);
  });

  it("discard old: a watcher sees the drops as deleteAll and its state matches getAll", async () => {
    const s = client.stream("acct/alice/old");
    await s.config({ maxMsgs: 3, discard: "old" });
    const watch = s.watch();
    const state = new Set<number>();
    const seen: Change[] = [];
    try {
      for (let i = 1; i <= 10; i++) await s.append({ value: enc(`m${i}`) });
      await followTo(watch, state, seen, (await s.inventory()).revision);
      expect(seen.some((c) => c.op === "deleteAll")).toBe(true);
      const present = (await all(s.getAll())).map((m) => m.seq);
      expect(present).toEqual([8, 9, 10]);
      expect([...state].sort((a, b) => a - b)).toEqual(present);

      // Lowering the limit drops what no longer fits at once, in the config's own commit.
      await s.config({ maxMsgs: 1, discard: "old" });
      const after = (await all(s.getAll())).map((m) => m.seq);
      expect(after).toEqual([10]);
      await followTo(watch, state, seen, (await s.inventory()).revision);
      expect([...state]).toEqual(after);
    } finally {
      watch.stop();
    }
  });

  it("denyDelete refuses delete and deleteAll with FORBIDDEN and keeps everything", async () => {
    const s = client.stream("acct/alice/audit");
    await s.config({ denyDelete: true });
    await s.append({ value: enc("x") });
    await s.append({ value: enc("y") });
    expect((await failure(s.delete(1))).code).toBe("FORBIDDEN");
    expect((await failure(s.deleteAll())).code).toBe("FORBIDDEN");
    expect((await s.inventory()).count).toBe(2);

    const kv = client.kv("acct/alice/audit-kv");
    await kv.config({ denyDelete: true });
    await kv.set("k", enc("v"));
    expect((await failure(kv.delete("k"))).code).toBe("FORBIDDEN");
    expect(Buffer.from((await kv.get("k"))!.value).toString()).toBe("v");
  });

  it("bad limits get INVALID_ARGUMENT and leave the configuration and the data as they were", async () => {
    const s = client.stream("acct/alice/bad");
    const kv = client.kv("acct/alice/bad-kv");
    await s.config({ maxMsgs: 5 });
    await s.append({ value: enc("x") });
    await kv.config({ maxMsgs: 5 });
    const before = [stack.store.inventory("acct/alice/bad"), stack.store.inventory("acct/alice/bad-kv")];
    const bad: Array<[string, () => Promise<unknown>]> = [
      ["negative", () => s.config({ maxMsgs: -1 })],
      ["fraction", () => s.config({ maxBytes: 1.5 })],
      ["unknown field", () => s.config({ maxMsg: 3 } as never)],
      ["string number", () => s.config({ maxMsgs: "3" } as never)],
      ["bad discard", () => s.config({ discard: "oldest" } as never)],
      ["kv field on a stream", () => s.config({ ttlMs: 1000 })],
      ["stream field on a kv", () => kv.config({ maxAgeMs: 1000 })],
      ["discard old on a kv", () => kv.config({ discard: "old" })],
      ["contradictory", () => s.config({ maxMsgBytes: 100, maxBytes: 10 })],
      ["null", () => s.config(null as never)],
      ["an array", () => s.config([1] as never)],
      ["too many fields", () => s.config(Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`f${i}`, 1])) as never)],
    ];
    for (const [what, call] of bad) {
      const err = await failure(call());
      expect(err.code, what).toBe("INVALID_ARGUMENT");
    }
    // The wire refuses a map longer than LocationLimits before the handle walks it (config-wire.ts).
    const many = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`f${i}`, 1]));
    expect((await failure(s.config(many as never))).message).toContain(`more than ${LOCATION_LIMIT_FIELDS.length} fields`);
    // Raw bodies the client would not send.
    const L = "acct/alice/bad";
    expect(await raw("w", L, new Map([["op", "stream.config"]]))).toBe("INVALID_ARGUMENT");
    expect(await raw("w", L, new Map<unknown, unknown>([["op", "stream.config"], ["limits", new Map([["toString", 1]])]]))).toBe("INVALID_ARGUMENT");
    expect(await raw("w", L, new Map<unknown, unknown>([["op", "stream.config"], ["limits", new Map([["__proto__", new Map([["maxMsgs", 1]])]])]]))).toBe("INVALID_ARGUMENT");
    expect(await raw("w", L, new Map<unknown, unknown>([["op", "stream.config"], ["limits", new Map([["maxMsgs", 2n ** 64n]])]]))).toBe("INVALID_ARGUMENT");
    expect(await raw("w", L, new Map<unknown, unknown>([["op", "stream.config"], ["limits", new Uint8Array(4)]]))).toBe("INVALID_ARGUMENT");
    expect(await raw("w", L, new Map<unknown, unknown>([["op", "stream.config"], ["limits", new Map()], ["extra", 1]]))).toBe("INVALID_ARGUMENT");
    expect(await raw("w", L, new Map<unknown, unknown>([["op", "stream.config"], ["limits", new Map()], ["options", new Map([["ack", "soon"]])]]))).toBe("INVALID_ARGUMENT");
    // A config is a write: on the read subject it is refused before it runs.
    expect(await raw("r", L, new Map<unknown, unknown>([["op", "stream.config"], ["limits", new Map()]]))).toBe("FORBIDDEN");
    // The other kind's op on an existing location.
    expect(await raw("w", L, new Map<unknown, unknown>([["op", "kv.config"], ["limits", new Map()]]))).toBe("WRONG_KIND");
    expect([stack.store.inventory("acct/alice/bad"), stack.store.inventory("acct/alice/bad-kv")]).toEqual(before);
    expect(before[0]!.limits.maxMsgs).toBe(5);
  });

  it("answers exactly what the in-process validator says, for any limits map (property)", async () => {
    const caps = locationLimitCaps(stack.store.limits);
    const value = fc.oneof(
      fc.constantFrom(0, 1, -1, 2, 1.5, 2 ** 53 - 1, 2 ** 53, NaN, Infinity, caps.maxAgeMs, caps.maxAgeMs + 1, caps.maxMsgBytes, caps.maxMsgBytes + 1),
      fc.constantFrom("old", "new", "", "1", true, false, null),
      fc.nat(),
    );
    const name = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...LOCATION_LIMIT_FIELDS) }, { weight: 1, arbitrary: fc.constantFrom("toString", "maxmsgs", "x") });
    const limits = fc.dictionary(name, value, { maxKeys: 4 });
    let i = 0;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<Kind>("stream", "kv"), limits, async (kind, l) => {
        const location = `acct/alice/prop-${kind}-${i++ % 4}`;
        const handle = kind === "stream" ? client.stream(location) : client.kv(location);
        const expected = checkLocationLimits(l, kind, caps);
        const got = await handle.config(l as LocationLimits).then(
          (stored) => ({ stored }),
          (e: unknown) => ({ code: (e as StrataError).code }),
        );
        if ("problem" in expected) expect(got).toEqual({ code: "INVALID_ARGUMENT" });
        else expect(got).toEqual({ stored: expected.limits });
      }),
      { seed: 10_110, numRuns: 150 },
    );
  });

  it("a user whom nats-server lets only read cannot config, but sees the limits", async () => {
    await client.stream("acct/alice/ro").config({ maxMsgs: 7 });
    const nc = await connect({ servers: stack.nats.url, user: "reader", pass: "reader", inboxPrefix: "_INBOX.reader" });
    conns.push(nc);
    const reader = new StrataClient(nc, { server: "s1", timeoutMs: 3000 });
    try {
      const started = Date.now();
      const err = await failure(reader.stream("acct/alice/ro").config({}));
      expect(err.code).toBe("FORBIDDEN");
      expect(Date.now() - started).toBeLessThan(2000);
      expect((await failure(reader.kv("acct/alice/ro-kv").config({ maxMsgs: 1 }))).code).toBe("FORBIDDEN");
      expect((await reader.stream("acct/alice/ro").inventory()).limits.maxMsgs).toBe(7);
      expect(stack.store.inventory("acct/alice/ro-kv").kind).toBeUndefined();
    } finally {
      reader.close();
    }
  });
});

describe("config under a coordinator", () => {
  let coordinator: Coordinator;
  let server: StrataServer;

  beforeAll(async () => {
    coordinator = await startCoordinator({ nc: stack.nc, prefix: "lc", dataDir: await stack.tempDir("coord") });
    server = await startServer({ id: "c1", prefix: "lc", dir: join(await stack.tempDir("c1"), "store"), nats: stack.nats.url });
  });

  afterAll(async () => {
    await server?.stop();
    await coordinator?.stop();
  });

  it("is admitted like any write of the location and enforced there", async () => {
    const located = new StrataClient(stack.nc, { prefix: "lc", timeoutMs: 5000 });
    try {
      const s = located.stream("acct/alice/coord");
      expect(await s.config({ maxMsgs: 1, discard: "new" })).toMatchObject({ maxMsgs: 1, discard: "new" });
      await s.append({ value: enc("1") });
      expect((await failure(s.append({ value: enc("2") }))).code).toBe("LIMIT");
      expect((await s.inventory()).limits).toMatchObject({ maxMsgs: 1, discard: "new" });
      // It went through the coordinator's grant, not around it.
      expect(server.stats().ownership?.grants).toBeGreaterThan(0);
    } finally {
      located.close();
    }
  });
});
