/**
 * watch(): replay, then live changes in commit order with no gap and no duplicate, including
 * while writers are busy during the replay, and across a server killed with SIGKILL and
 * restarted in the middle of concurrent writes.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import type { Watch } from "../../src/net/client/watch.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { Store } from "../../src/store.js";
import type { Change } from "../../src/types.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { startChildServer } from "./server-child.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

let nats: RunningNatsServer;
const dirs: string[] = [];
const conns: NatsConnection[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
});

afterAll(async () => {
  for (const nc of conns) await nc.close();
  await nats?.stop();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "strata-watch-"));
  dirs.push(dir);
  return dir;
}

async function newClient(server: string, options: { timeoutMs?: number; watchResyncMs?: number } = {}): Promise<StrataClient> {
  const nc = await connect({ servers: nats.url });
  conns.push(nc);
  return new StrataClient(nc, { server, timeoutMs: options.timeoutMs ?? 5000, limits: { watchResyncMs: options.watchResyncMs ?? 5000 } });
}

/** Takes changes from a watch until `done` says so (with next(), so the watch keeps running). */
async function take(watch: Watch, done: (seen: Change[]) => boolean): Promise<Change[]> {
  const seen: Change[] = [];
  while (!done(seen)) {
    const next = await watch.next();
    if (next.done) break;
    seen.push(next.value);
  }
  return seen;
}

const describeChange = (c: Change) =>
  c.kind === "stream"
    ? c.op === "set"
      ? `${c.revision}:set ${c.seq}=${dec(c.message.value)}`
      : c.op === "delete"
        ? `${c.revision}:delete ${c.seq}`
        : `${c.revision}:deleteAll ${c.endSeq}`
    : c.op === "set"
      ? `${c.revision}:set ${c.key}=${dec(c.entry.value)}`
      : `${c.revision}:${c.op} ${c.key}`;

describe("watch against an in-process server", () => {
  let store: Store;
  let server: StrataServer;
  let client: StrataClient;

  beforeAll(async () => {
    store = await Store.open({ dir: await tempDir(), id: "w0" });
    server = await startServer({ standalone: true, store, nats: nats.url, id: "w0" });
    client = await newClient("w0");
  });

  afterAll(async () => {
    client?.close();
    await server?.stop();
    await store?.close();
  });

  it("replays a stream from startSeq, then follows sets, deletes and deleteAll in order", async () => {
    const s = client.stream("w/stream");
    for (const v of ["a", "b", "c", "d"]) await s.append({ value: enc(v) });
    const watch = s.watch({ startSeq: 3 });
    const replay = await take(watch, (seen) => seen.length === 2);
    expect(replay.map(describeChange)).toEqual(["3:set 3=c", "4:set 4=d"]);
    await s.append({ value: enc("e") });
    await s.delete(1); // below startSeq: filtered out
    await s.delete(3);
    await s.set(9, { value: enc("nine") });
    await s.deleteAll({ endSeq: 4 });
    const live = await take(watch, (seen) => seen.some((c) => c.op === "deleteAll"));
    expect(live.map(describeChange)).toEqual(["5:set 5=e", "7:delete 3", "8:set 9=nine", "9:deleteAll 4"]);
    watch.stop();
    expect((await watch.next()).done).toBe(true);
  });

  it("replays one kv key and follows only its changes; break ends the watch", async () => {
    const kv = client.kv("w/kv");
    await kv.set("a", enc("1"));
    await kv.set("b", enc("2"));
    const watch = kv.watch({ key: "b" });
    const seen: string[] = [];
    let i = 0;
    for await (const change of watch) {
      seen.push(describeChange(change));
      if (i === 0) {
        await kv.set("a", enc("3"));
        await kv.set("b", enc("4"));
        await kv.delete("b");
      }
      if (++i === 3) break;
    }
    expect(seen).toEqual(["2:set b=2", "4:set b=4", "5:delete b"]);
    expect((await watch.next()).done).toBe(true);
  });

  it("merges a replay taken while writers run into exactly the store's final state", async () => {
    const s = client.stream("w/busy");
    for (let i = 0; i < 200; i++) await s.append({ value: enc(`v${i}`) });
    const writers = (async () => {
      for (let i = 0; i < 100; i++) {
        await s.set(1 + ((i * 7) % 250), { value: enc(`w${i}`) });
        if (i % 10 === 0) await s.delete(1 + ((i * 13) % 200));
      }
    })();
    const watch = s.watch();
    await writers;
    // Catching up is visible through markers: the first (highest seq) ends the replay if the
    // replay still sees it; the second can then only arrive in commit order, after all the rest.
    await s.set(999, { value: enc("m1") });
    const seen = await take(watch, (all) => all.some((c) => c.kind === "stream" && c.op === "set" && c.seq === 999));
    await s.set(998, { value: enc("m2") });
    seen.push(...(await take(watch, (all) => all.some((c) => c.kind === "stream" && c.op === "set" && c.seq === 998))));
    watch.stop();
    const state = new Map<number, string>();
    for (const c of seen) {
      if (c.kind !== "stream") continue;
      if (c.op === "set") state.set(c.seq, dec(c.message.value));
      else if (c.op === "delete") state.delete(c.seq);
    }
    const expected = new Map<number, string>();
    for await (const m of store.stream("w/busy").getAll()) expected.set(m.seq, dec(m.value));
    expect(state).toEqual(expected);
  });
});

describe("watch with changes lost on the way", () => {
  it("refetches on a gap, and finds a lost last change on its idle resync", async () => {
    const store = await Store.open({ dir: await tempDir(), id: "wg" });
    const serverNc = await connect({ servers: nats.url });
    conns.push(serverNc);
    // Fault injection: the server's connection silently drops chosen change-feed messages.
    const publish = serverNc.publish.bind(serverNc);
    let drop = 0;
    serverNc.publish = (subject, data, options) => (subject.startsWith("strata.c.") && drop > 0 ? void (drop -= 1) : publish(subject, data, options));
    const server = await startServer({ standalone: true, store, nats: serverNc, id: "wg" });
    const slow = await newClient("wg", { watchResyncMs: 60_000 });
    const s = slow.stream("w/gap");
    const watch = s.watch();
    drop = 1;
    await s.append({ value: enc("lost") });
    await s.append({ value: enc("next") });
    expect((await take(watch, (seen) => seen.length === 2)).map(describeChange)).toEqual(["1:set 1=lost", "2:set 2=next"]);
    watch.stop();

    const quick = await newClient("wg", { watchResyncMs: 200 });
    const watch2 = quick.stream("w/gap").watch();
    expect(await take(watch2, (seen) => seen.length === 2)).toHaveLength(2);
    drop = 1;
    await s.append({ value: enc("last") });
    expect((await take(watch2, (seen) => seen.length === 1)).map(describeChange)).toEqual(["3:set 3=last"]);
    watch2.stop();
    slow.close();
    quick.close();
    await server.stop();
    await store.close();
  });
});

describe("watch across a nats-server restart", () => {
  it("resubscribes, refetches what it missed, and carries on", async () => {
    const own = await startNatsServer();
    const store = await Store.open({ dir: await tempDir(), id: "wn" });
    const fast = { reconnectTimeWait: 50, maxReconnectAttempts: -1 };
    const server = await startServer({ standalone: true, store, nats: own.url, id: "wn", natsOptions: fast });
    const nc = await connect({ servers: own.url, ...fast });
    const client = new StrataClient(nc, { server: "wn", timeoutMs: 3000, limits: { watchResyncMs: 300 } });
    const s = client.stream("w/reconnect");
    const watch = s.watch();
    await s.append({ value: enc("before") });
    expect((await take(watch, (seen) => seen.length === 1)).map(describeChange)).toEqual(["1:set 1=before"]);
    await own.restart();
    // Written straight into the store while the feed may be down: only a refetch can show it.
    await store.stream("w/reconnect").append({ value: enc("during") });
    // A request in flight while the connection comes back can be lost (core NATS is at most
    // once); with a msgId the client may, and does, send it again.
    await s.append({ value: enc("after") }, { msgId: "after" });
    expect((await take(watch, (seen) => seen.length === 2)).map(describeChange)).toEqual(["2:set 2=during", "3:set 3=after"]);
    watch.stop();
    client.close();
    await nc.close();
    await server.stop();
    await store.close();
    await own.stop();
  });
});

describe("watch across a server killed and restarted during concurrent writes", () => {
  it("sees exactly the committed sequence, once, in order", async () => {
    const dir = await tempDir();
    let server = await startChildServer({ dir, url: nats.url, id: "wk" });
    const client = await newClient("wk", { timeoutMs: 2000, watchResyncMs: 300 });
    const location = "w/killed";
    const s = client.stream(location);
    const watch = s.watch();

    const WRITERS = 3;
    const PER_WRITER = 150;
    let acked = 0;
    let killed: Promise<void> | undefined;
    const restart = async () => {
      await server.kill();
      server = await startChildServer({ dir, url: nats.url, id: "wk" });
    };
    const acks = new Map<string, number>();
    const writer = async (w: number) => {
      for (let i = 0; i < PER_WRITER; i++) {
        const msgId = `${w}-${i}`;
        for (;;) {
          try {
            const { seq } = await s.append({ value: enc(msgId) }, { msgId });
            acks.set(msgId, seq);
            break;
          } catch (err) {
            // The server is down or restarting: retry the same msgId (exactly once).
            if (!StrataError.is(err) || !err.retryable) throw err;
          }
        }
        if (++acked === (WRITERS * PER_WRITER) / 3) killed = restart();
      }
    };
    await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
    await killed;

    const target = (await s.inventory()).revision;
    expect(target).toBe(WRITERS * PER_WRITER);
    const seen = await take(watch, (all) => all.length > 0 && all[all.length - 1]!.revision >= target);
    watch.stop();
    // The restarted server really took over the writes left when the first one was killed: at
    // least two thirds of them, which the client may coalesce up to WRITERS per request.
    expect((await server.stats()).stats.requests).toBeGreaterThanOrEqual(Math.floor((WRITERS * PER_WRITER * 2) / 3 / WRITERS) - WRITERS);
    expect(await server.stop()).toBe(0);
    client.close();

    // The committed sequence, read from the data directory itself.
    const store = await Store.open({ dir, id: "wk" });
    const committed = await store.changesSince(location, 0, 100_000);
    await store.close();
    expect(seen.map(describeChange)).toEqual(committed.map(describeChange));
    expect(seen.map((c) => c.revision)).toEqual(Array.from({ length: target }, (_, i) => i + 1));
    // Every acknowledged write is in it, at the seq its writer was told.
    const bySeq = new Map(seen.map((c) => [c.kind === "stream" && c.op === "set" ? c.seq : -1, c] as const));
    for (const [msgId, seq] of acks) expect(dec((bySeq.get(seq) as Extract<Change, { op: "set"; kind: "stream" }>).message.value)).toBe(msgId);
  });
});
