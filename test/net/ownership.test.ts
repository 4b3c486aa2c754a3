/**
 * A persistence server's side of leases (src/net/server/coord-link.ts, ownership.ts), in-process
 * against a real coordinator and nats-server with a short lease:
 * - it serves only under a lease: with the coordinator gone, its lease runs out and every request
 *   answers UNAVAILABLE; once the coordinator is back on its state, the same server serves again
 *   under the same epoch (nothing moved);
 * - a handover request that is malformed, names another epoch or a location it does not hold
 *   changes nothing; one naming the right epoch lets the location go with the cut of what it
 *   shipped, and the server then refuses to serve it under that epoch until the coordinator must
 *   have given up on recording the move (`handoverHoldMs`); one that cannot ship in time
 *   (`handoverShipMs`, the object store down) fails and keeps the location served;
 * - a graceful stop ships and releases, so another server takes the location over at once with
 *   its whole history, including writes acknowledged only locally.
 */
import type { NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import { startCoordinator, type Coordinator } from "../../src/net/coord/coordinator.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { parseHandoverReply } from "../../src/net/wire/coordinator-parsers.js";
import { decodeBody, encodeBody, handoverSubject } from "../../src/net/wire/coordinator-protocol.js";
import { errorOfReply } from "../../src/net/wire/wire-errors.js";
import { Store } from "../../src/store.js";
import type { NetLimits } from "../../src/limits.js";
import type { ObjectStore } from "../../src/tier/object-store.js";
import { FaultyObjectStore, MemoryObjectStore } from "../../src/testing/fault-store.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

const LEASE_MS = 600;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

let bus: Bus;
let nc: NatsConnection;
let tier: string;
const cleanup: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  bus = await startBus();
  ({ nc } = bus);
  tier = `dir:${await bus.tempDir("tier")}`;
});

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
  await bus?.stop();
});

async function coordinate(prefix: string, dataDir: string): Promise<Coordinator> {
  const c = await startCoordinator({ nc, prefix, dataDir, leaseMs: LEASE_MS });
  cleanup.push(() => c.stop());
  return c;
}

async function serve(prefix: string, id: string, opts: { limits?: Partial<NetLimits>; objectStore?: ObjectStore } = {}): Promise<{ store: Store; server: StrataServer }> {
  const store = await Store.open({ dir: await bus.tempDir(`srv-${id}`), id, sealIntervalMs: 100, ...(opts.objectStore ? { objectStore: opts.objectStore } : { tier }) });
  const server = await startServer({ store, nats: bus.nats.url, id, prefix, ...(opts.limits ? { limits: opts.limits } : {}) });
  cleanup.push(async () => {
    await server.stop();
    await store.close();
  });
  return { store, server };
}

/** Waits until `ok()` holds (bounded); the condition is polled because no event signals it. */
async function until<T>(what: string, ok: () => T | undefined | false | Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await ok();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function codeOf(work: Promise<unknown>): Promise<string> {
  try {
    await work;
  } catch (err) {
    return (err as StrataError).code;
  }
  return "ok";
}

describe("a server's lease", () => {
  it("stops serving when its lease runs out, and serves again under the same epoch when the coordinator is back", async () => {
    const P = "ol1";
    const coordDir = await bus.tempDir("coord-ol1");
    let coord = await coordinate(P, coordDir);
    const { server } = await serve(P, "a1");
    const client = new StrataClient(nc, { prefix: P, timeoutMs: 5000 });
    const s = client.stream("acct/o/one");
    await s.append({ value: enc("one") });
    const epoch = server.stats().ownership!;
    expect(epoch.grants).toBe(1);

    await coord.stop();
    await until("the lease to run out", () => server.stats().ownership!.leaseRemainingMs === 0);
    // One attempt each (no retry fits the budget), so a refusal is what the call answers: with
    // retries, an attempt still in flight when a short budget ran out read TIMEOUT on a loaded machine.
    const pinned = new StrataClient(nc, { prefix: P, server: "a1", timeoutMs: 5000, limits: { retryBackoffMinMs: 20_000, retryBackoffMaxMs: 20_000 } });
    expect(await codeOf(pinned.stream("acct/o/one").get(1))).toBe("UNAVAILABLE");
    expect(await codeOf(pinned.stream("acct/o/one").append({ value: enc("no") }))).toBe("UNAVAILABLE");

    coord = await coordinate(P, coordDir);
    await until("the lease to be renewed", () => server.stats().ownership!.leaseRemainingMs > 0);
    expect(dec((await pinned.stream("acct/o/one").get(1))!.value)).toBe("one");
    expect((await s.append({ value: enc("two") })).seq).toBe(2);
    // Nothing moved: the same incarnation kept its grant (no new claim was needed).
    expect(server.stats().ownership!.claims).toBe(epoch.claims);
    pinned.close();
    client.close();
  });
});

describe("handover requests", () => {
  it("change nothing when malformed, for another epoch or a location not held; let go at the right epoch", async () => {
    const P = "ol2";
    await coordinate(P, await bus.tempDir("coord-ol2"));
    const { server } = await serve(P, "h1", { limits: { handoverHoldMs: 1500, handoverShipMs: 1000 } });
    const client = new StrataClient(nc, { prefix: P, timeoutMs: 5000 });
    const s = client.stream("acct/h/one");
    await s.append({ value: enc("x") });
    const located = decodeBody((await nc.request(`${P}.coord.locate`, encodeBody({ location: "acct/h/one" }), { timeout: 2000 })).data, "locate") as { epoch: number };
    const subject = handoverSubject(P, "h1");

    const garbage = await nc.request(subject, new Uint8Array([0xff, 0x00]), { timeout: 2000 });
    expect(errorOfReply(garbage, () => "handover")?.code).toBe("INVALID_ARGUMENT");
    const wrongShape = await nc.request(subject, encodeBody({ epochs: "all" }), { timeout: 2000 });
    expect(errorOfReply(wrongShape, () => "handover")?.code).toBe("INVALID_ARGUMENT");
    const otherEpoch = parseHandoverReply(decodeBody((await nc.request(subject, encodeBody({ epochs: [["acct/h/one", located.epoch + 5], ["acct/h/none", 1]] }), { timeout: 2000 })).data, "reply"));
    expect(otherEpoch.cuts).toEqual([]);
    expect((await s.append({ value: enc("y") })).seq).toBe(2);
    expect(server.stats().ownership!.handedOver).toBe(0);

    const right = parseHandoverReply(decodeBody((await nc.request(subject, encodeBody({ epochs: [["acct/h/one", located.epoch]] }), { timeout: 2000 })).data, "reply"));
    expect(right.cuts).toHaveLength(1);
    expect(right.cuts[0]![0]).toBe("acct/h/one");
    expect(right.cuts[0]![1]).toBeGreaterThanOrEqual(1);
    expect(server.stats().ownership!.handedOver).toBe(1);
    // The coordinator has not recorded a move: a claim answers the same epoch, which is refused.
    const pinned = new StrataClient(nc, { prefix: P, server: "h1", timeoutMs: 300 });
    // Refused (UNAVAILABLE), or, on a loaded machine, still being retried when the 300 ms run out
    // (TIMEOUT); either way not applied: the next append below gets seq 3.
    expect(["UNAVAILABLE", "TIMEOUT"]).toContain(await codeOf(pinned.stream("acct/h/one").append({ value: enc("late") })));
    // Nobody recorded a move (the handover came from the test, not the coordinator): once the
    // hold is over, the same epoch means the location stayed, and it is served again.
    const again = await until("the location to be served again", async () => ((await codeOf(pinned.stream("acct/h/one").get(1))) === "ok" ? true : undefined), 5000);
    expect(again).toBe(true);
    expect((await s.append({ value: enc("z") })).seq).toBe(3);
    pinned.close();
    client.close();
  });

  it("fails when the object store cannot take the segment in time, and keeps serving the location", async () => {
    const P = "ol4";
    await coordinate(P, await bus.tempDir("coord-ol4"));
    const objects = new FaultyObjectStore(new MemoryObjectStore(), { seed: 4 });
    const { server } = await serve(P, "h4", { objectStore: objects, limits: { handoverShipMs: 300 } });
    const client = new StrataClient(nc, { prefix: P, timeoutMs: 5000 });
    const s = client.stream("acct/h/four");
    await s.append({ value: enc("a") });
    const located = decodeBody((await nc.request(`${P}.coord.locate`, encodeBody({ location: "acct/h/four" }), { timeout: 2000 })).data, "locate") as { epoch: number };
    objects.setOffline(true);
    const reply = await nc.request(handoverSubject(P, "h4"), encodeBody({ epochs: [["acct/h/four", located.epoch]] }), { timeout: 3000 });
    expect(errorOfReply(reply, () => "handover")?.code).toBe("UNAVAILABLE");
    expect(server.stats().ownership!.handedOver).toBe(0);
    // Still held: served at once, under the same epoch.
    expect((await s.append({ value: enc("b") })).seq).toBe(2);
    objects.setOffline(false);
    client.close();
  });
});

describe("a graceful stop", () => {
  it("ships and releases, so another server takes over at once with local-acked writes", async () => {
    const P = "ol3";
    await coordinate(P, await bus.tempDir("coord-ol3"));
    const first = await serve(P, "g1");
    const client = new StrataClient(nc, { prefix: P, timeoutMs: 8000 });
    const kv = client.kv("acct/g/settings");
    const s = client.stream("acct/g/log");
    await kv.set("theme", enc("dark"));
    for (let i = 0; i < 5; i++) await s.append({ value: enc(`m${i}`) }, { msgId: `id-${i}` });
    await first.server.stop();
    await first.store.close();

    const second = await serve(P, "g2");
    const started = Date.now();
    expect(dec((await kv.get("theme"))!.value)).toBe("dark");
    // Well within a lease + margin: the stop released the lease instead of letting it run out.
    expect(Date.now() - started).toBeLessThan(LEASE_MS + 2000);
    const all: string[] = [];
    for await (const m of s.getAll()) all.push(dec(m.value));
    expect(all).toEqual(["m0", "m1", "m2", "m3", "m4"]);
    // The msgId dedup state came along: a repeat returns the original seq and writes nothing.
    expect((await s.append({ value: enc("again") }, { msgId: "id-2" })).seq).toBe(3);
    expect((await s.inventory()).count).toBe(5);
    expect(second.server.stats().ownership!.takeovers).toBeGreaterThanOrEqual(2);
    client.close();
  });
});
