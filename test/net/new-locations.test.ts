/**
 * New locations under a coordinator (docs/failover.md, "Creation"): locate grants a new location
 * to its live server's current incarnation in the same transaction and pushes the grant on
 * `P.s.<id>.grant` before it answers, so the first write costs one coordinator request.
 * - the first write to a new location sends exactly one request to the coordinator (the client's
 *   locate) and none from the server, counted by a real nats-server subscription on `P.coord.>`;
 * - a push that names an old incarnation, carries the wrong key (not from the coordinator), a wrong
 *   epoch for a location already held, or a location this server handed over, is ignored: the
 *   server keeps serving (or refusing) exactly as the coordinator decided;
 * - a push that is lost (the server's NATS user may not subscribe to the grant subject) costs one
 *   claim, and the write still succeeds;
 * - a kill -9 of the coordinator in the middle of a burst of locates (batched commits) loses no
 *   answer it gave: after the restart every location a client was told about is still assigned
 *   to the same server with the same or a higher epoch, and so is every pushed grant.
 * The takeover of a location created this way after its server dies: test/failover/new-locations.test.ts.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection, type Subscription } from "nats";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { StrataClient } from "../../src/net/client/client.js";
import { startCoordinator, type Coordinator } from "../../src/net/coord/coordinator.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { parseRegisterReply } from "../../src/net/wire/coordinator-parsers.js";
import { decodeBody, encodeBody } from "../../src/net/wire/coordinator-protocol.js";
import { startNatsServer } from "../../src/testing/nats-server.js";
import { StrataProcess } from "../../src/testing/process.js";
import { Store } from "../../src/store.js";
import { captureLogger, type LogEvent } from "../helpers/capture-logger.js";
import { ask, ok } from "../helpers/fake-coord-server.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";
import { codeOf } from "../helpers/codes.js";

const enc = (s: string) => new TextEncoder().encode(s);

let bus: Bus;
let tier: string;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  bus = await startBus();
  tier = `dir:${await bus.tempDir("tier")}`;
});
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});
afterAll(async () => {
  await bus?.stop();
});

/** Polls `ok()` (bounded) where no event exists. */
async function until<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function coordinate(prefix: string, nc: NatsConnection = bus.nc): Promise<Coordinator> {
  const c = await startCoordinator({ nc, prefix, dataDir: await bus.tempDir("coord"), leaseMs: 3000 });
  cleanups.push(() => c.stop());
  return c;
}

interface Served {
  server: StrataServer;
  store: Store;
  dir: string;
  warnings: string[];
  events: LogEvent[];
  stop(): Promise<void>;
}

/** A real server under the coordinator; resolves once it is registered and holds a lease. */
async function serve(prefix: string, id: string, options: { nats?: string | NatsConnection; dir?: string } = {}): Promise<Served> {
  const { logger, warnings, events } = captureLogger();
  const dir = options.dir ?? (await bus.tempDir(`srv-${id}`));
  const store = await Store.open({ dir, id, tier, sealIntervalMs: 100 });
  const server = await startServer({ store, nats: options.nats ?? bus.nats.url, id, prefix, logger });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await server.stop();
    await store.close();
  };
  cleanups.push(stop);
  await until(`server ${id} to hold a lease`, () => (server.stats().ownership?.leaseRemainingMs ?? 0) > 0);
  return { server, store, dir, warnings, events, stop };
}

/** Counts every message on the coordinator's subjects, from a subscription of its own. */
async function countCoordinatorRequests(nc: NatsConnection, prefix: string): Promise<{ counts(): Promise<Record<string, number>>; stop(): void }> {
  const seen: Record<string, number> = {};
  const sub = nc.subscribe(`${prefix}.coord.>`, {
    callback: (_err, msg) => {
      const what = msg.subject.slice(prefix.length + ".coord.".length);
      seen[what] = (seen[what] ?? 0) + 1;
    },
  });
  await nc.flush();
  return {
    // A flush round trip: nats-server has delivered to us everything it routed before it.
    counts: async () => {
      await nc.flush();
      return { ...seen };
    },
    stop: () => sub.unsubscribe(),
  };
}

/** Every grant push published on `P.s.*.grant`, as received. */
async function capturePushes(nc: NatsConnection, prefix: string): Promise<{ pushes: Array<{ subject: string; body: Record<string, unknown> }>; sub: Subscription }> {
  const pushes: Array<{ subject: string; body: Record<string, unknown> }> = [];
  const sub = nc.subscribe(`${prefix}.s.*.grant`, { callback: (_err, msg) => pushes.push({ subject: msg.subject, body: decodeBody(msg.data, "push") as Record<string, unknown> }) });
  await nc.flush();
  return { pushes, sub };
}

describe("the first write to a new location", () => {
  it("costs one coordinator request (the client's locate) and none from the server", async () => {
    const prefix = "nl1";
    const coordinator = await coordinate(prefix);
    const a = await serve(prefix, "a");
    const watcher = await connect({ servers: bus.nats.url });
    cleanups.push(() => watcher.close());
    const counter = await countCoordinatorRequests(watcher, prefix);
    const client = new StrataClient(bus.nc, { prefix });
    cleanups.push(async () => client.close());

    expect((await client.stream("acct/nl/first").append({ value: enc("x") })).seq).toBe(1);
    let c = await counter.counts();
    expect(c.locate).toBe(1);
    expect(c.claim).toBeUndefined();
    expect(a.server.stats().ownership).toMatchObject({ pushed: 1, claims: 0, pushesIgnored: 0 });
    // The client was told the epoch it is now served under: the grant's, not 0.
    expect(ok(await ask(bus.nc, `${prefix}.coord.locate`, { location: "acct/nl/first" }))).toEqual({ server: "a", epoch: 1 });

    // Many at once: the coordinator decides them in shared transactions and pushes them together.
    const many = Array.from({ length: 40 }, (_, i) => `acct/nl/many-${i}`);
    await Promise.all(many.map(async (l) => expect((await client.stream(l).append({ value: enc(l) })).seq).toBe(1)));
    c = await counter.counts();
    expect(c.locate).toBe(1 + 1 + many.length);
    expect(c.claim).toBeUndefined();
    expect(a.server.stats().ownership).toMatchObject({ pushed: 1 + many.length, claims: 0 });
    expect(coordinator.stats().grantsPushed).toBe(1 + many.length);
    counter.stop();
  });

  it("falls back to a claim when the push is lost (the server may not subscribe to it)", async () => {
    const prefix = "strata";
    // Everyone may do everything but the server's user, which may not receive pushed grants.
    const nats = await startNatsServer({
      config: `authorization { users = [
        { user: "srv", password: "p", permissions: { subscribe: { deny: ["strata.s.*.grant"] } } }
        { user: "all", password: "p" }
      ] }`,
    });
    cleanups.push(() => nats.stop());
    const all = await connect({ servers: nats.url, user: "all", pass: "p" });
    cleanups.push(() => all.close());
    const srvNc = await connect({ servers: nats.url, user: "srv", pass: "p" });
    cleanups.push(() => srvNc.close());
    await coordinate(prefix, all);
    const a = await serve(prefix, "a", { nats: srvNc });
    const counter = await countCoordinatorRequests(all, prefix);
    const client = new StrataClient(all, { prefix });
    cleanups.push(async () => client.close());

    expect((await client.stream("acct/lost/x").append({ value: enc("x") })).seq).toBe(1);
    const c = await counter.counts();
    expect(c.locate).toBe(1);
    expect(c.claim).toBe(1);
    expect(a.server.stats().ownership).toMatchObject({ pushed: 0, claims: 1 });
    expect(a.warnings.join("\n")).toMatch(/cannot receive pushed grants on strata\.s\.a\.grant/);
    expect(a.events.find((e) => e.event === "grant_subscription_failed")).toMatchObject({ level: 40, subject: "strata.s.a.grant", error: expect.any(String) });
    // The claim found the location granted to it already: same epoch, nothing bumped twice.
    expect(ok(await ask(all, `${prefix}.coord.locate`, { location: "acct/lost/x" }))).toEqual({ server: "a", epoch: 1 });
    counter.stop();
  });
});

describe("pushed grants the server must ignore", () => {
  it("an old incarnation's, a forged one, a wrong epoch, and one for a location it handed over", async () => {
    const prefix = "nl2";
    await coordinate(prefix);
    const a = await serve(prefix, "a");
    const b = await serve(prefix, "b");
    const { pushes } = await capturePushes(bus.nc, prefix);
    const client = new StrataClient(bus.nc, { prefix, timeoutMs: 1500 });
    cleanups.push(async () => client.close());
    const servers: Record<string, Served> = { a, b };

    // A location of a's, written through its pushed grant.
    let held = "";
    for (let i = 0; held === ""; i++) {
      const l = `acct/ig/h${i}`;
      await client.stream(l).append({ value: enc("1") }, { ack: "object" });
      if ((ok(await ask(bus.nc, `${prefix}.coord.locate`, { location: l })) as { server: string }).server === "a") held = l;
    }
    const real = pushes.find((p) => p.subject === `${prefix}.s.a.grant` && (p.body.grants as Array<[string, number]>).some(([l]) => l === held))!;
    expect(real.body).toMatchObject({ incarnation: a.server.stats().ownership!.incarnation, grants: [[held, 1]] });
    const replay = (body: Record<string, unknown>) => bus.nc.publish(`${prefix}.s.a.grant`, encodeBody({ ...real.body, ...body }));
    const ignoredBefore = () => a.server.stats().ownership!.pushesIgnored;
    // A write a refuses waits for a's claim to come back refused from the coordinator; under a
    // loaded CI machine that took over 1.5 s once, so this client waits long enough to hear it.
    const pinned = new StrataClient(bus.nc, { prefix, server: "a", timeoutMs: 8000 });
    cleanups.push(async () => pinned.close());

    // A wrong epoch for a location it holds: ignored, it keeps serving under the coordinator's
    // epoch (an object-acked write is confirmed with the coordinator under the epoch held).
    let ignored = ignoredBefore();
    replay({ grants: [[held, 7]] });
    await until("the wrong-epoch push to be ignored", () => ignoredBefore() === ignored + 1);
    expect((await client.stream(held).append({ value: enc("2") }, { ack: "object" })).seq).toBe(2);

    // Not from the coordinator (wrong key), for a location nobody granted: ignored, and a request
    // for it claims as usual.
    ignored = ignoredBefore();
    const grantsBefore = a.server.stats().ownership!.grants;
    replay({ key: "not-the-key-of-this-incarnation", grants: [["acct/ig/forged", 1]] });
    replay({ key: 42 });
    await until("the forged pushes to be ignored", () => ignoredBefore() === ignored + 2);
    expect(a.server.stats().ownership!.grants).toBe(grantsBefore);
    const claims = a.server.stats().ownership!.claims;
    expect((await pinned.stream("acct/ig/forged").append({ value: enc("f") })).seq).toBe(1);
    expect(a.server.stats().ownership!.claims).toBe(claims + 1);

    // Handed over (strata move to b): a replay of the very push that granted it, same incarnation,
    // same key, same epoch, must not give it back; a write sent to a is refused.
    const moved = ok(await ask(bus.nc, `${prefix}.coord.move`, { location: held, to: "b" }));
    expect(moved).toMatchObject({ server: "b", from: "a" });
    ignored = ignoredBefore();
    replay({});
    await until("the replayed push to be ignored", () => ignoredBefore() === ignored + 1);
    expect(await codeOf(pinned.stream(held).append({ value: enc("zombie") }))).toBe("UNAVAILABLE");
    expect((await client.stream(held).append({ value: enc("3") }, { ack: "object" })).seq).toBe(3);
    expect(servers.b!.server.stats().ownership!.takeovers).toBe(1);

    // An old incarnation's push, with that incarnation's real key: a restarts (a graceful stop
    // releases, the new incarnation registers), then the captured push is replayed.
    await a.stop();
    const a2 = await serve(prefix, "a", { dir: a.dir });
    expect(a2.server.stats().ownership!.incarnation).toBeGreaterThan(real.body.incarnation as number);
    bus.nc.publish(`${prefix}.s.a.grant`, encodeBody({ ...real.body, grants: [["acct/ig/old", 1]] }));
    await until("the old incarnation's push to be ignored", () => a2.server.stats().ownership!.pushesIgnored === 1);
    expect(a2.server.stats().ownership!.grants).toBe(0);
  });
});

describe("a coordinator killed by SIGKILL in the middle of a burst of new locations", () => {
  it("keeps every epoch it answered and every grant it pushed", async () => {
    const prefix = "nl3";
    const dir = await mkdtemp(join(tmpdir(), "strata-nl-coord-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const coordinator = new StrataProcess("coordinator", ["coordinator", "--data", dir, "--nats", bus.nats.url, "--prefix", prefix, "--lease-ms", "10000"], /coordinator ready/);
    cleanups.push(() => coordinator.kill9());
    await coordinator.start();

    // A server played over raw NATS that takes pushed grants (registers with push) and renews.
    const { pushes } = await capturePushes(bus.nc, prefix);
    const reg = parseRegisterReply(ok(await ask(bus.nc, `${prefix}.coord.register`, { id: "f", startedAt: Date.now(), load: {}, push: true })));
    expect(reg.grantKey).toMatch(/^[-_a-zA-Z0-9]{16,}$/);
    const renew = () => ask(bus.nc, `${prefix}.coord.renew`, { id: "f", incarnation: reg.incarnation, load: {} }, 1000);
    expect(ok(await renew())).toEqual({ ok: true });

    const told = new Map<string, { server: string; epoch: number }>();
    const total = 600;
    let next = 0;
    let killed: Promise<void> | undefined;
    const locator = await connect({ servers: bus.nats.url });
    cleanups.push(() => locator.close());
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < total) {
          const location = `acct/burst/l${next++}`;
          try {
            const reply = await locator.request(`${prefix}.coord.locate`, encodeBody({ location }), { timeout: 2000 });
            if (reply.headers?.get("Strata-Error")) continue;
            told.set(location, decodeBody(reply.data, "locate reply") as { server: string; epoch: number });
          } catch {
            continue; // the coordinator is gone: no answer, nothing promised
          }
          if (told.size === 150) killed ??= coordinator.kill9();
        }
      }),
    );
    await killed;
    expect(told.size).toBeGreaterThanOrEqual(150);
    expect(told.size).toBeLessThan(total);
    for (const t of told.values()) expect(t).toEqual({ server: "f", epoch: 1 });

    await coordinator.restart();
    // The server's incarnation is known and counts as renewed at the restart: nothing moves.
    expect(ok(await renew())).toEqual({ ok: true });
    for (const [location, before] of told) {
      const after = ok(await ask(bus.nc, `${prefix}.coord.locate`, { location })) as { server: string; epoch: number };
      expect(after.server, location).toBe(before.server);
      expect(after.epoch, location).toBeGreaterThanOrEqual(before.epoch);
    }
    // Every grant pushed (durable before it was published) is still this incarnation's.
    const pushed = pushes.flatMap((p) => (p.body.incarnation === reg.incarnation ? (p.body.grants as Array<[string, number]>) : []));
    expect(pushed.length).toBeGreaterThanOrEqual(told.size);
    const claim = ok(await ask(bus.nc, `${prefix}.coord.claim`, { id: "f", incarnation: reg.incarnation, locations: pushed.slice(0, 500).map(([l]) => l) }));
    expect((claim.grants as Array<{ location: string; epoch: number }>).map((g) => [g.location, g.epoch])).toEqual(pushed.slice(0, 500));
  });
});
