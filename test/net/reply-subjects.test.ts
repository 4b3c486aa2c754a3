/**
 * Abuse of reply subjects and of the coordinator (issue #8 item 8), against a real nats-server:
 * - a request whose reply subject is someone's change feed (`strata.c.…`) makes neither a server
 *   nor the coordinator publish there, writes nothing, and is counted;
 * - a server with another `inboxPrefix` answers clients under it and nobody else;
 * - `locate` of new locations is rate limited per client (the first token of its inbox) and in
 *   total, while known locations are always answered and other clients keep being served.
 */
import { Encoder, decode } from "cbor-x";
import type { Msg, NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataClient } from "../../src/net/client/client.js";
import { startCoordinator, type Coordinator } from "../../src/net/coord/coordinator.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { errorOfReply } from "../../src/net/wire/wire-errors.js";
import { Store } from "../../src/store.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
let bus: Bus;
let nc: NatsConnection;
const cleanup: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  bus = await startBus();
  ({ nc } = bus);
});

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await bus?.stop();
});

const tempDir = () => bus.tempDir("reply");

/** A server pinned by the test's clients (standalone), or one registered with a coordinator. */
async function serve(id: string, opts: { inboxPrefix?: string; prefix?: string; standalone?: boolean } = {}): Promise<{ store: Store; server: StrataServer }> {
  const store = await Store.open({ dir: await tempDir(), id });
  const server = await startServer({ standalone: true, store, nats: nc, id, ...opts });
  cleanup.push(async () => {
    await server.stop();
    await store.close();
  });
  return { store, server };
}

/** Each test's coordinator gets a prefix of its own, so no other test's servers or coordinator answer. */
async function coordinate(prefix: string, limits: Parameters<typeof startCoordinator>[0]["limits"] = {}): Promise<Coordinator> {
  const c = await startCoordinator({ nc, prefix, dataDir: await tempDir(), limits });
  cleanup.push(() => c.stop());
  return c;
}

/** Waits until `ok()` holds (bounded). */
async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe("reply subjects outside the inbox namespace get nothing", () => {
  it("a server publishes nothing on a change subject named as the reply, and writes nothing", async () => {
    const { store, server } = await serve("rs1");
    const victim = "strata.c.acct.bob.feed";
    const seen: Msg[] = [];
    const spy = nc.subscribe("strata.c.>", { callback: (_e, m) => seen.push(m) });
    await nc.flush();
    const before = server.stats().repliesRefused;
    // A write, a read, garbage and an upload, all asking for their answer on bob's change feed.
    nc.publish("strata.w.rs1.acct.alice.x", cbor.encode({ op: "stream.append", message: { value: new Uint8Array([1]) } }), { reply: victim });
    nc.publish("strata.r.rs1.acct.alice.x", cbor.encode({ op: "inventory" }), { reply: victim });
    nc.publish("strata.w.rs1.acct.alice.x", new Uint8Array([0xff]), { reply: victim });
    nc.publish("strata.w.rs1.acct.alice.x", cbor.encode({ op: "upload", head: 10, bytes: 1 }), { reply: victim });
    nc.publish("strata.r.rs1.acct.alice.x", cbor.encode({ op: "inventory" }), { reply: "_INBOX.>" });
    await until("the requests to be refused", () => server.stats().repliesRefused === before + 5);
    // A normal request after them is answered: everything before it has been handled.
    const client = new StrataClient(nc, { server: "rs1" });
    expect((await client.stream("acct/alice/y").append({ value: new Uint8Array([2]) })).seq).toBe(1);
    client.close();
    await nc.flush();
    expect(seen.map((m) => m.subject)).toEqual(["strata.c.acct.alice.y"]);
    expect(store.inventory("acct/alice/x")).toMatchObject({ count: 0, revision: 0 });
    expect(server.stats().uploadsOpen).toBe(0);
    spy.unsubscribe();
  });

  it("the coordinator publishes nothing on a change subject named as the reply of locate, servers, register or renew", async () => {
    const c = await coordinate("cr");
    const victim = "cr.c.acct.bob.feed";
    const seen: Msg[] = [];
    const spy = nc.subscribe(victim, { callback: (_e, m) => seen.push(m) });
    await nc.flush();
    nc.publish("cr.coord.locate", cbor.encode({ location: "acct/alice/x" }), { reply: victim });
    nc.publish("cr.coord.servers", new Uint8Array(0), { reply: victim });
    nc.publish("cr.coord.register", cbor.encode({ id: "hb", startedAt: 1, load: {} }), { reply: victim });
    nc.publish("cr.coord.renew", cbor.encode({ id: "hb", incarnation: 1, load: {} }), { reply: victim });
    await until("the requests to be refused", () => c.stats().repliesRefused === 4);
    // A well-addressed request is still answered; by then the others were handled too.
    const reply = await nc.request("cr.coord.servers", new Uint8Array(0), { timeout: 5000 });
    expect(errorOfReply(reply, () => "servers")).toBeUndefined();
    await nc.flush();
    expect(seen).toEqual([]);
    expect(c.stats().assignments).toBe(0);
    spy.unsubscribe();
  });

  it("a server with inboxPrefix answers clients below it only", async () => {
    const { server } = await serve("rs2", { inboxPrefix: "_R" });
    const own = new StrataClient(nc, { server: "rs2", inboxPrefix: "_R.alice" });
    expect((await own.kv("acct/alice/k").set("a", new Uint8Array([1]))).revision).toBe(1);
    own.close();
    const before = server.stats().repliesRefused;
    const other = new StrataClient(nc, { server: "rs2", timeoutMs: 300 });
    await expect(other.kv("acct/alice/k").get("a")).rejects.toMatchObject({ code: "TIMEOUT" });
    other.close();
    expect(server.stats().repliesRefused).toBeGreaterThan(before);
  });
});

describe("locate of new locations is bounded", () => {
  const locate = async (prefix: string, location: string, inbox: string): Promise<string> => {
    const sub = nc.subscribe(inbox, { max: 1 });
    nc.publish(`${prefix}.coord.locate`, cbor.encode({ location }), { reply: inbox });
    for await (const msg of sub) {
      const err = errorOfReply(msg, () => "locate");
      return err ? err.code : `@${(decode(msg.data) as { server: string }).server}`;
    }
    throw new Error("no reply");
  };

  it("per client and in total; known locations are always answered", async () => {
    const P = "cl";
    const c = await coordinate(P, { assignBurstPerClientMax: 20, assignPerClientPerSecMax: 1, assignBurstMax: 30, assignPerSecMax: 1, assignmentsMax: 1000 });
    // A server must be live (hold a lease) for locations to be placed at all.
    await serve("placed", { prefix: P, standalone: false });
    let placed = "";
    for (let i = 0; i < 100 && !placed.startsWith("@"); i++) {
      placed = await locate(P, "acct/warmup/x", "_INBOX.warm.1");
      if (!placed.startsWith("@")) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(placed).toBe("@placed");

    const answers: string[] = [];
    for (let i = 0; i < 60; i++) answers.push(await locate(P, `acct/flood/${i}`, `_INBOX.mallory.${i}`));
    const accepted = answers.filter((a) => a.startsWith("@")).length;
    expect(accepted).toBeGreaterThanOrEqual(20);
    expect(accepted).toBeLessThanOrEqual(22);
    expect(answers.at(-1)).toBe("UNAVAILABLE");
    // Known locations are still answered for the flooding client.
    expect(await locate(P, "acct/flood/0", "_INBOX.mallory.x")).toBe("@placed");
    // Another client still places new locations, until the total rate is spent.
    const others: string[] = [];
    for (let i = 0; i < 20; i++) others.push(await locate(P, `acct/alice/${i}`, `_INBOX.alice.${i}`));
    expect(others.slice(0, 5)).toEqual(["@placed", "@placed", "@placed", "@placed", "@placed"]);
    expect(others.at(-1)).toBe("UNAVAILABLE");
    expect(c.stats().assignments).toBeLessThanOrEqual(1 + 30 + 3);
  });

  it("assignmentsMax bounds the total with TOO_LARGE", async () => {
    const P = "ct";
    const c = await coordinate(P, { assignmentsMax: 5 });
    await serve("placed2", { prefix: P, standalone: false });
    const codes: string[] = [];
    for (let i = 0; i < 200 && codes.filter((x) => x.startsWith("@")).length < 5; i++) {
      const a = await locate(P, `acct/t/${i}`, `_INBOX.t.${i}`);
      if (a === "UNAVAILABLE") await new Promise((resolve) => setTimeout(resolve, 50)); // no live server yet
      else codes.push(a);
    }
    expect(await locate(P, "acct/t/next", "_INBOX.t.n")).toBe("TOO_LARGE");
    expect(c.stats().assignments).toBe(5);
  });
});
