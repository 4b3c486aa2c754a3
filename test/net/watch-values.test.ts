/**
 * Values the change feed leaves out (above `changeInlineBytesMax`, server-changes.ts) still reach
 * every watcher: the property test checks that a watcher sees exactly the committed sequence of
 * changes, with their values, whatever the mix of small and large values, overwrites and deletes
 * of the same keys and seqs, deleteAll, several changes per feed message and feed messages lost on
 * the way. Also: the feed really carries no large value; a nats-server restart; an omitted change
 * the server's log does not have is never shown; and a `changes` request reads no more from the
 * log than its reply may carry, however many changes it asks for.
 */
import fc from "fast-check";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import type { Watch } from "../../src/net/client/watch.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { changeSubject, requestSubject } from "../../src/net/wire/subjects.js";
import { decodeMap, decodeUntrusted, encode } from "../../src/net/wire/wire-codec.js";
import { Store } from "../../src/store.js";
import { startNatsServer } from "../../src/testing/nats-server.js";
import type { Change } from "../../src/types.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

/** Small enough that most values of the property test are left out of the feed. */
const INLINE = 64;

let bus: Bus;
let store: Store;
let server: StrataServer;
let serverNc: NatsConnection;
let client: StrataClient;
/** Feed messages the server's connection drops, from now on (fault injection: a lost message). */
let drop = 0;
/** Changes published with `omitted: true`, as a raw subscriber sees them. */
let omittedSeen = 0;
let inlineSeen = 0;
/** Feed changes that carried a value above the limit, or a value with `omitted`: must stay 0. */
let feedViolations = 0;

beforeAll(async () => {
  bus = await startBus();
  store = await Store.open({ dir: await bus.tempDir("store"), id: "wv" });
  serverNc = await connect({ servers: bus.nats.url });
  const publish = serverNc.publish.bind(serverNc);
  serverNc.publish = (subject, data, options) => (subject.startsWith("strata.c.") && drop > 0 ? void (drop -= 1) : publish(subject, data, options));
  server = await startServer({ standalone: true, store, nats: serverNc, id: "wv", limits: { changeInlineBytesMax: INLINE } });
  bus.nc.subscribe("strata.c.>", {
    callback: (_err, msg) => {
      for (const c of decodeUntrusted(msg.data, "a change message") as Array<Record<string, unknown>>) {
        const value = valueOf(c as unknown as Change);
        if (c.omitted === true) {
          omittedSeen += 1;
          if (value?.byteLength !== 0) feedViolations += 1;
        } else if (value !== undefined && value.byteLength > 0) {
          inlineSeen += 1;
          if (value.byteLength > INLINE) feedViolations += 1;
        }
      }
    },
  });
  client = new StrataClient(bus.nc, { server: "wv", timeoutMs: 5000, limits: { watchResyncMs: 200 } });
});

afterAll(async () => {
  client?.close();
  await server?.stop();
  await store?.close();
  await serverNc?.close();
  await bus?.stop();
});

function valueOf(c: Change): Uint8Array | undefined {
  if (c.op !== "set") return undefined;
  return c.kind === "stream" ? c.message.value : c.entry.value;
}

/** A change as plain data, values in hex, so that Buffer and Uint8Array compare equal. */
function canonical(c: Change): string {
  const plain = (v: unknown): unknown => {
    if (v instanceof Uint8Array) return `hex:${Buffer.from(v).toString("hex")}`;
    if (v === null || typeof v !== "object") return v;
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  };
  return JSON.stringify(plain(c));
}

const bytes = (n: number, tag: number) => new Uint8Array(n).fill(tag % 251);

/** Takes changes until one has revision >= `target`. */
async function until(watch: Watch, target: number): Promise<Change[]> {
  const seen: Change[] = [];
  while (seen.length === 0 || seen[seen.length - 1]!.revision < target) {
    const next = await watch.next();
    if (next.done) break;
    seen.push(next.value);
  }
  return seen;
}

type Op =
  | { t: "kset"; key: string; size: number }
  | { t: "kdel"; key: string }
  | { t: "append"; size: number }
  | { t: "set"; seq: number; size: number }
  | { t: "del"; seq: number }
  | { t: "delAll" }
  | { t: "drop" };

const size = fc.constantFrom(0, 5, INLINE, INLINE + 1, 300, 20_000);
const key = fc.constantFrom("a", "b", "c");
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant("kset" as const), key, size }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("kdel" as const), key }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("append" as const), size }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("set" as const), seq: fc.integer({ min: 1, max: 6 }), size }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("del" as const), seq: fc.integer({ min: 1, max: 6 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("delAll" as const) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("drop" as const) }) },
);

describe("values above changeInlineBytesMax", () => {
  it("a watcher sees exactly the committed changes, with their values", async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 8 }), async (groups) => {
        run += 1;
        drop = 0;
        const names = { s: `wv/${run}/s`, kv: `wv/${run}/kv` };
        const s = client.stream(names.s);
        const kv = client.kv(names.kv);
        // A first write, replayed: once a watch shows it, its replay is over and every later
        // write reaches it as a change.
        await s.append({ value: bytes(1, 0) });
        await kv.set("seed", bytes(1, 0));
        const watches = { s: s.watch(), kv: kv.watch(), b: kv.watch({ key: "b" }) };
        await until(watches.s, 1);
        await until(watches.kv, 1);
        let tag = 1;
        for (const group of groups) {
          // Calls issued together are coalesced: several changes share a group commit and a feed message.
          await Promise.all(
            group.map(async (o) => {
              tag += 1;
              if (o.t === "kset") await kv.set(o.key, bytes(o.size, tag));
              else if (o.t === "kdel") await kv.delete(o.key);
              else if (o.t === "append") await s.append({ value: bytes(o.size, tag) });
              else if (o.t === "set") await s.set(o.seq, { value: bytes(o.size, tag) });
              else if (o.t === "del") await s.delete(o.seq);
              else if (o.t === "delAll") await s.deleteAll();
              else drop += 1;
            }),
          );
        }
        for (const [name, loc, watch, filter] of [
          ["s", names.s, watches.s, () => true],
          ["kv", names.kv, watches.kv, () => true],
          ["b", names.kv, watches.b, (c: Change) => c.kind === "kv" && c.key === "b"],
        ] as const) {
          const committed = (await store.changesSince(loc, 1, 100_000)).filter(filter);
          if (committed.length === 0) continue;
          const seen = await until(watch, committed[committed.length - 1]!.revision);
          expect(seen.map(canonical), name).toEqual(committed.map(canonical));
          for (const c of seen) expect((c as { omitted?: unknown }).omitted).toBeUndefined();
        }
        for (const w of Object.values(watches)) w.stop();
      }),
      { numRuns: 25 },
    );
    // The runs really went through both paths of the feed.
    expect(omittedSeen).toBeGreaterThan(0);
    expect(inlineSeen).toBeGreaterThan(0);
    expect(feedViolations).toBe(0);
  });

  it("never shows an omitted change the server's log does not have", async () => {
    const s = client.stream("wv/ghost");
    await s.append({ value: bytes(300, 1) });
    const watch = s.watch();
    expect((await until(watch, 1)).map((c) => c.revision)).toEqual([1]);
    // Fault injection: a feed message for revision 2 that the log never got (as a server that
    // lost an unsynced write would have published it).
    const ghost = { location: "wv/ghost", revision: 2, timestamp: Date.now(), kind: "stream", op: "set", seq: 2, message: { seq: 2, value: new Uint8Array(0), timestamp: Date.now() }, size: 300, chunked: false, omitted: true };
    bus.nc.publish(changeSubject("strata", "wv/ghost"), encode([ghost]));
    await bus.nc.flush();
    await s.append({ value: bytes(300, 7) });
    const [change] = await until(watch, 2);
    expect(change!.revision).toBe(2);
    expect(Buffer.from(valueOf(change!)!)).toEqual(Buffer.from(bytes(300, 7)));
    watch.stop();
  });
});

describe("a changes request", () => {
  it("reads no more from the log than its reply may carry, and pages through all", async () => {
    const own = await startBus();
    const st = await Store.open({ dir: await own.tempDir("store"), id: "wb" });
    const REPLY = 64 * 1024;
    const VALUE = 16 * 1024;
    const srv = await startServer({ standalone: true, store: st, nats: own.nats.url, id: "wb", limits: { changesReplyBytesMax: REPLY } });
    try {
      const s = st.stream("wb/big");
      for (let i = 0; i < 100; i++) await s.append({ value: bytes(VALUE, i) });
      // Observes (does not change) what the server reads from the log for each page.
      let readMax = 0;
      const changesSince = st.changesSince.bind(st);
      st.changesSince = async (...args) => {
        const got = await changesSince(...args);
        readMax = Math.max(readMax, got.reduce((n, c) => n + (valueOf(c)?.byteLength ?? 0), 0));
        return got;
      };
      const revisions: number[] = [];
      for (let after = 0, more = true; more; ) {
        const reply = await own.nc.request(requestSubject("strata", "r", "wb", "wb/big"), encode({ op: "changes", after, limit: 1000 }), { timeout: 5000 });
        const page = decodeMap(reply.data, "a reply").ok as { changes: Change[]; next: number; more: boolean };
        revisions.push(...page.changes.map((c) => c.revision));
        expect(page.changes.length).toBeGreaterThan(0);
        after = page.next;
        more = page.more;
      }
      expect(revisions).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
      // One page's reply bound plus the record that crosses it; before the bound, 64 records at once.
      expect(readMax).toBeLessThanOrEqual(REPLY + VALUE);
    } finally {
      await srv.stop();
      await st.close();
      await own.stop();
    }
  });
});

describe("values above changeInlineBytesMax across a nats-server restart", () => {
  it("are fetched for what was written while the feed was down", async () => {
    const own = await startNatsServer();
    const st = await Store.open({ dir: await bus.tempDir("restart"), id: "wr" });
    const fast = { reconnectTimeWait: 50, maxReconnectAttempts: -1 };
    const srv = await startServer({ standalone: true, store: st, nats: own.url, id: "wr", natsOptions: fast, limits: { changeInlineBytesMax: INLINE } });
    const nc = await connect({ servers: own.url, ...fast });
    const c = new StrataClient(nc, { server: "wr", timeoutMs: 3000, limits: { watchResyncMs: 300 } });
    try {
      const kv = c.kv("wr/kv");
      const watch = kv.watch();
      await kv.set("k", bytes(500, 1));
      expect((await until(watch, 1)).map((x) => valueOf(x)!.byteLength)).toEqual([500]);
      await own.restart();
      // Straight into the store while the feed may be down, overwriting the same key: only a
      // fetch by revision shows the first of them with its own value.
      await st.kv("wr/kv").set("k", bytes(500, 2));
      await st.kv("wr/kv").set("k", bytes(500, 3));
      expect((await until(watch, 3)).map((x) => [x.revision, valueOf(x)![0]])).toEqual([
        [2, 2],
        [3, 3],
      ]);
      // Then through the feed again, once the connections are back (a write lost on the way is
      // sent again: a repeat is one more change, compared below like any other).
      for (;;) {
        try {
          await kv.set("k", bytes(500, 4));
          break;
        } catch (err) {
          if (!StrataError.is(err) || !err.retryable) throw err;
        }
      }
      const committed = await st.changesSince("wr/kv", 3, 100);
      const seen = await until(watch, committed[committed.length - 1]!.revision);
      expect(seen.map(canonical)).toEqual(committed.map(canonical));
      expect(valueOf(seen[0]!)![0]).toBe(4);
      watch.stop();
    } finally {
      c.close();
      await nc.close();
      await srv.stop();
      await st.close();
      await own.stop();
    }
  });
});
