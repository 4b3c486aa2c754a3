/**
 * The coordinator's lease/epoch protocol (docs/failover.md) against a real nats-server, with raw
 * NATS connections playing the servers (helpers/fake-coord-server.ts): register, renew, claim, cut,
 * confirm, release, move and drain; a lease running out moves a location, and never earlier than
 * (last renewal received) + lease + margin; a previous incarnation's locations wait out its lease;
 * FENCED after expiry; epochs only go up; bad input gets coded errors and changes nothing.
 *
 * Leases are short (600 ms: renew 120, margin 120) so a lease runs out in under a second. Waiting
 * is by polling the coordinator's answers with a deadline, never by a fixed sleep.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { NatsConnection } from "nats";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { startCoordinator, type Coordinator } from "../../src/net/coord/coordinator.js";
import type { ServerView } from "../../src/net/wire/coordinator-protocol.js";
import { ask, fakeServer, ok, type FakeServer } from "../helpers/fake-coord-server.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

const P = "lz";
const LEASE = 600;
const LEASE_END = LEASE + LEASE / 5; // lease + margin, as the coordinator counts it
const WAIT_MS = 10_000;

let bus: Bus;
let nc: NatsConnection;
const cleanups: Array<() => unknown> = [];

beforeAll(async () => {
  bus = await startBus();
  nc = bus.nc;
});
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
afterAll(async () => {
  await bus?.stop();
});

async function coordinator(handoverTimeoutMs = 2000): Promise<Coordinator> {
  const c = await startCoordinator({ nc, dataDir: await bus.tempDir("lease"), prefix: P, leaseMs: LEASE, limits: { handoverTimeoutMs } });
  cleanups.push(() => c.stop());
  return c;
}

async function server(id: string, renewing = true): Promise<FakeServer> {
  const s = await fakeServer(nc, P, id);
  cleanups.push(() => s.stop());
  await s.register();
  if (renewing) s.startRenewing();
  return s;
}

const locate = (location: unknown) => ask(nc, `${P}.coord.locate`, { location });
const locateOk = async (location: string) => ok(await locate(location)) as { server: string; epoch: number };
const servers = async () => (ok(await ask(nc, `${P}.coord.servers`, new Uint8Array(0))).servers as ServerView[]);
const view = async (id: string) => (await servers()).find((s) => s.id === id)!;

/** Polls `check` until it returns a value, with a deadline. */
async function until<T>(check: () => Promise<T | undefined>, what: string): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A location that the coordinator places on `id` (claiming an unassigned location assigns it to the claimer). */
async function grantedTo(s: FakeServer, location: string): Promise<number> {
  const g = (ok(await s.claim([location])).grants as Array<{ epoch: number; code?: string }>)[0]!;
  expect(g.code).toBeUndefined();
  return g.epoch;
}

describe("coordinator leases and epochs", () => {
  it("registers, renews, grants, confirms and reports the lease in the servers view", async () => {
    await coordinator();
    const a = await server("a", false);
    expect(a.incarnation).toBeGreaterThanOrEqual(1);
    expect(a.lease).toMatchObject({ leaseMs: LEASE, leaseRenewMs: LEASE / 5, leaseMarginMs: LEASE / 5 });
    expect(ok(await a.renew())).toEqual({ ok: true });
    expect(await locateOk("acct/one/x")).toEqual({ server: "a", epoch: 0 });
    const claim = ok(await a.claim(["acct/one/x", "acct/two/x", "acct/one/x"]));
    expect(claim.grants).toEqual([
      { location: "acct/one/x", epoch: 1 },
      { location: "acct/two/x", epoch: 1 },
    ]);
    // A repeated claim by the same incarnation gets the same epoch (its reply may have been lost).
    expect(ok(await a.claim(["acct/one/x"])).grants).toEqual([{ location: "acct/one/x", epoch: 1 }]);
    expect(ok(await a.confirm([["acct/one/x", 1], ["acct/two/x", 0], ["acct/never/x", 1]]))).toEqual({ stale: ["acct/two/x", "acct/never/x"] });
    expect(await locateOk("acct/one/x")).toEqual({ server: "a", epoch: 1 });
    expect(await view("a")).toMatchObject({ id: "a", live: true, lease: "valid", incarnation: a.incarnation, assigned: 2, epochsHeld: 2, draining: false });
    // A second registration is a new incarnation; the first one is fenced at once.
    const first = a.incarnation;
    await a.register();
    expect(a.incarnation).toBeGreaterThan(first);
    const old = await ask(nc, `${P}.coord.renew`, { id: "a", incarnation: first });
    expect(old.error?.code).toBe("FENCED");
    expect(old.error?.retryable).toBe(false);
    expect((await view("a")).epochsHeld).toBe(0);
  });

  it("moves a dead server's location once its lease is over, never before, with a handoff and a cut fixed once", async () => {
    await coordinator();
    const a = await server("a");
    const b = await server("b");
    const loc = "acct/dies/x";
    expect(await grantedTo(a, loc)).toBe(1);
    expect(ok(await a.confirm([[loc, 1]]))).toEqual({ stale: [] });
    a.stopRenewing();
    const sentAt = performance.now();
    expect(ok(await a.renew())).toEqual({ ok: true });
    // The coordinator received that renewal after `sentAt`: it must keep the location on "a" until
    // at least sentAt + lease + margin.
    const moved = await until(async () => {
      const r = await locateOk(loc);
      const at = performance.now();
      if (r.server === "a") return undefined;
      return { r, at };
    }, "the location to move");
    expect(moved.at - sentAt).toBeGreaterThanOrEqual(LEASE_END);
    expect(moved.r).toEqual({ server: "b", epoch: 1 });
    expect((await view("a")).lease).toBe("over");

    // The old holder is fenced everywhere.
    for (const r of [await a.renew(), await a.claim([loc]), await a.confirm([[loc, 1]]), await a.cut(loc, 1, "b", 3)]) expect(r.error?.code).toBe("FENCED");

    const g = (ok(await b.claim([loc])).grants as unknown[])[0];
    expect(g).toEqual({ location: loc, epoch: 2, handoff: { from: "a", incarnation: a.incarnation } });
    expect(ok(await b.cut(loc, 2, "a", 5))).toEqual({ cut: 5 });
    expect(ok(await b.cut(loc, 2, "a", 9))).toEqual({ cut: 5 });
    // A second claim (say after the reply was lost) carries the fixed cut.
    expect((ok(await b.claim([loc])).grants as unknown[])[0]).toEqual({ location: loc, epoch: 2, handoff: { from: "a", incarnation: a.incarnation, cut: 5 } });
    expect(ok(await b.confirm([[loc, 2]]))).toEqual({ stale: [] });
    // Confirmed: b is the source now; a cut is no longer possible (no handoff left).
    expect((await b.cut(loc, 2, "a", 6)).error?.code).toBe("CONFLICT");
    expect((ok(await b.claim([loc])).grants as unknown[])[0]).toEqual({ location: loc, epoch: 2 });

    // "a" comes back as a new incarnation: the location stays with b.
    await a.register();
    a.startRenewing();
    const refused = (ok(await a.claim([loc])).grants as Array<Record<string, unknown>>)[0]!;
    expect(refused).toMatchObject({ location: loc, code: "UNAVAILABLE", server: "b" });
  });

  it("makes a restarted server's claim wait out its previous incarnation's lease; a graceful release does not", async () => {
    await coordinator();
    const a = await server("a", false);
    await grantedTo(a, "acct/r/one");
    await grantedTo(a, "acct/r/two");
    const sentAt = performance.now();
    ok(await a.renew());
    await a.register(); // a kill -9 and restart: new incarnation, the old one may still be alive
    const first = (ok(await a.claim(["acct/r/one"])).grants as Array<Record<string, unknown>>)[0]!;
    expect(first).toMatchObject({ code: "UNAVAILABLE", server: "a" });
    expect(String(first.message)).toMatch(/lease may hold for \d+ ms more/);
    a.startRenewing();
    const granted = await until(async () => {
      const g = (ok(await a.claim(["acct/r/one"])).grants as Array<Record<string, unknown>>)[0]!;
      return g.code === undefined ? { g, at: performance.now() } : undefined;
    }, "the grant");
    expect(granted.at - sentAt).toBeGreaterThanOrEqual(LEASE_END);
    expect(granted.g).toEqual({ location: "acct/r/one", epoch: 2 });

    // Graceful: release ends the lease at once, the next incarnation claims at once.
    expect(ok(await a.release())).toEqual({ ok: true });
    expect((await a.renew()).error?.code).toBe("FENCED");
    a.stopRenewing();
    await a.register();
    expect(ok(await a.claim(["acct/r/one"])).grants).toEqual([{ location: "acct/r/one", epoch: 3 }]);

    // Releasing single locations unbinds them; the next claim bumps the epoch.
    a.startRenewing();
    expect(ok(await a.release(["acct/r/one"]))).toEqual({ ok: true });
    expect((await view("a")).epochsHeld).toBe(0);
    expect(ok(await a.claim(["acct/r/one"])).grants).toEqual([{ location: "acct/r/one", epoch: 4 }]);
  });

  it("moves a location on request: the live holder hands over and its cut is recorded", async () => {
    await coordinator(400);
    const a = await server("a");
    const b = await server("b");
    const loc = "acct/move/x";
    await grantedTo(a, loc);
    const moved = ok(await ask(nc, `${P}.coord.move`, { location: loc, to: "b" }));
    expect(moved).toEqual({ server: "b", epoch: 1, from: "a" });
    expect(a.handovers).toEqual([{ epochs: [[loc, 1]] }]);
    expect((ok(await b.claim([loc])).grants as unknown[])[0]).toEqual({ location: loc, epoch: 2, handoff: { from: "a", incarnation: a.incarnation, cut: 7 } });
    expect((ok(await a.claim([loc])).grants as Array<Record<string, unknown>>)[0]).toMatchObject({ code: "UNAVAILABLE", server: "b" });
    expect(ok(await ask(nc, `${P}.coord.move`, { location: loc, to: "b" }))).toEqual({ server: "b", epoch: 2, from: "b" });

    // A live holder that does not answer keeps the location (it may still be serving it).
    const loc2 = "acct/move/y";
    await grantedTo(a, loc2);
    a.onHandover = () => "silent";
    const silent = await ask(nc, `${P}.coord.move`, { location: loc2, to: "b" });
    expect(silent.error?.code).toBe("UNAVAILABLE");
    expect(silent.server).toBe("a");
    expect(await locateOk(loc2)).toEqual({ server: "a", epoch: 1 });

    // A dead holder is waited out like a death, then the location moves without a cut.
    a.stopRenewing();
    const dead = ok(await ask(nc, `${P}.coord.move`, { location: loc2, to: "b" }));
    expect(dead).toEqual({ server: "b", epoch: 1, from: "a" });
    expect((ok(await b.claim([loc2])).grants as unknown[])[0]).toEqual({ location: loc2, epoch: 2, handoff: { from: "a", incarnation: a.incarnation } });
  });

  it("drains a server: every location moves, new ones are placed elsewhere", async () => {
    await coordinator();
    const a = await server("a");
    await server("b");
    await server("c");
    const granted = ["acct/d/1", "acct/d/2", "acct/d/3"];
    for (const l of granted) await grantedTo(a, l);
    // Placed on "a" but never claimed: moved without asking.
    const placed: string[] = [];
    for (let i = 0; placed.length < 3; i++) if ((await locateOk(`acct/p/${i}`)).server === "a") placed.push(`acct/p/${i}`);
    const reply = ok(await ask(nc, `${P}.coord.drain`, { server: "a" })) as { moved: number; locations: Array<[string, string]>; left: number };
    expect(reply.moved).toBe(6);
    expect(reply.left).toBe(0);
    expect(reply.locations.map(([l]) => l).sort()).toEqual([...granted, ...placed].sort());
    expect(a.handovers.flatMap((h) => h.epochs.map(([l]) => l)).sort()).toEqual(granted);
    for (const [l, to] of reply.locations) {
      expect(["b", "c"]).toContain(to);
      expect((await locateOk(l)).server).toBe(to);
    }
    expect(await view("a")).toMatchObject({ assigned: 0, epochsHeld: 0, draining: true, live: true });
    for (let i = 0; i < 20; i++) expect((await locateOk(`acct/new/${i}`)).server).not.toBe("a");
    // Registering again ends the drain.
    await a.register();
    expect((await view("a")).draining).toBe(false);
  });

  it("never lets an epoch go down across grants, moves and re-registrations", async () => {
    await coordinator();
    const s = [await server("a"), await server("b")];
    const loc = "acct/epochs/x";
    const seen: number[] = [];
    let holder = 0;
    seen.push(await grantedTo(s[0]!, loc));
    for (let round = 0; round < 4; round++) {
      const to = 1 - holder;
      const m = ok(await ask(nc, `${P}.coord.move`, { location: loc, to: s[to]!.id })) as { epoch: number };
      seen.push(m.epoch);
      seen.push(await grantedTo(s[to]!, loc));
      holder = to;
    }
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThanOrEqual(seen[i - 1]!);
    expect(seen.at(-1)).toBe(5);
  });

  it("answers bad input with coded errors and changes nothing", async () => {
    await coordinator(300);
    const a = await server("a");
    const b = await server("b");
    await grantedTo(a, "acct/bad/x");
    await grantedTo(b, "acct/bad/y");
    const snapshot = async () => ({
      views: (await servers()).map((v) => [v.id, v.incarnation, v.assigned, v.epochsHeld, v.draining]),
      x: await locateOk("acct/bad/x"),
      y: await locateOk("acct/bad/y"),
    });
    const before = await snapshot();
    const c = (name: string) => `${P}.coord.${name}`;
    const cases: Array<[string, unknown, string]> = [
      ["register", Uint8Array.from([0xff]), "INVALID_ARGUMENT"],
      ["register", { id: "a.b", startedAt: 1 }, "INVALID_ARGUMENT"],
      ["register", { id: "z", startedAt: -1 }, "INVALID_ARGUMENT"],
      ["renew", { id: "a", incarnation: "1" }, "INVALID_ARGUMENT"],
      ["renew", { id: "a", incarnation: 0 }, "INVALID_ARGUMENT"],
      ["renew", { id: "nobody", incarnation: 1 }, "FENCED"],
      ["renew", { id: "a", incarnation: a.incarnation + 100 }, "FENCED"],
      ["claim", { id: "a", incarnation: a.incarnation, locations: [] }, "INVALID_ARGUMENT"],
      ["claim", { id: "a", incarnation: a.incarnation, locations: "acct/bad/x" }, "INVALID_ARGUMENT"],
      ["claim", { id: "a", incarnation: a.incarnation, locations: ["a/../b"] }, "INVALID_LOCATION"],
      ["claim", { id: "a", incarnation: a.incarnation, locations: Array.from({ length: 1001 }, (_, i) => `x/${i}`) }, "INVALID_ARGUMENT"],
      ["claim", { id: "nobody", incarnation: 1, locations: ["acct/bad/z"] }, "FENCED"],
      ["claim", { id: "a", incarnation: b.incarnation, locations: ["acct/bad/y"] }, "FENCED"],
      ["cut", { id: "a", incarnation: a.incarnation, location: "acct/bad/x", epoch: 1, from: "b", cut: 3 }, "CONFLICT"],
      ["cut", { id: "a", incarnation: a.incarnation, location: "acct/bad/x", epoch: 0, from: "b", cut: 3 }, "CONFLICT"],
      ["cut", { id: "a", incarnation: a.incarnation, location: "acct/bad/y", epoch: 1, from: "b", cut: 3 }, "CONFLICT"],
      ["cut", { id: "a", incarnation: a.incarnation, location: "acct/bad/x", epoch: 1, from: "b", cut: -3 }, "INVALID_ARGUMENT"],
      ["confirm", { id: "a", incarnation: a.incarnation, epochs: [["acct/bad/x"]] }, "INVALID_ARGUMENT"],
      ["confirm", { id: "a", incarnation: a.incarnation, epochs: [["acct/bad/x", 1.5]] }, "INVALID_ARGUMENT"],
      ["confirm", { id: "b", incarnation: a.incarnation, epochs: [["acct/bad/x", 1]] }, "FENCED"],
      ["release", { id: "a", incarnation: b.incarnation }, "FENCED"],
      ["release", { id: "a", incarnation: a.incarnation, locations: [7] }, "INVALID_LOCATION"],
      ["move", { location: "acct/bad/x", to: "nobody" }, "INVALID_ARGUMENT"],
      ["move", { location: "acct/never/placed", to: "b" }, "INVALID_ARGUMENT"],
      ["move", { location: "acct/bad/x" }, "INVALID_ARGUMENT"],
      ["drain", { server: "nobody" }, "INVALID_ARGUMENT"],
      ["drain", ["a"], "INVALID_ARGUMENT"],
      ["locate", { location: 5 }, "INVALID_LOCATION"],
      ["locate", encodeRaw([0xa1]), "INVALID_ARGUMENT"],
    ];
    for (const [name, body, code] of cases) {
      const r = await ask(nc, c(name), body);
      expect(r.error?.code, `${name} ${JSON.stringify(body, (_k, v) => (v instanceof Uint8Array ? `bytes(${v.length})` : v))?.slice(0, 80)}`).toBe(code);
    }
    // Another server's location, a wrong epoch: stale, not confirmed.
    expect(ok(await a.confirm([["acct/bad/y", 1], ["acct/bad/x", 2]]))).toEqual({ stale: ["acct/bad/y", "acct/bad/x"] });
    expect(await snapshot()).toEqual(before);

    // A move to a server that is known but dead.
    b.stopRenewing();
    await until(async () => ((await view("b")).live ? undefined : true), "b to be dead");
    const toDead = await ask(nc, c("move"), { location: "acct/bad/x", to: "b" });
    expect(toDead.error?.code).toBe("UNAVAILABLE");
    expect(await locateOk("acct/bad/x")).toEqual(before.x);
    expect(a.handovers).toEqual([]);
  });

  it("refuses a second coordinator on the same data directory and answers UNAVAILABLE with no live server", async () => {
    const dir = await bus.tempDir("lease");
    const c = await startCoordinator({ nc, dataDir: dir, prefix: P, leaseMs: LEASE });
    cleanups.push(() => c.stop());
    await expect(startCoordinator({ nc, dataDir: dir, prefix: P })).rejects.toMatchObject({ code: "UNAVAILABLE" });
    const r = await locate("acct/none/x");
    expect(r.error?.code).toBe("UNAVAILABLE");
    expect(r.error?.message).toMatch(/no persistence server is live/);
  });

  it("moves and drains from the command line (strata move / strata drain), with --json", async () => {
    await coordinator();
    const a = await server("a");
    await server("b");
    await grantedTo(a, "acct/cli/1");
    await grantedTo(a, "acct/cli/2");
    const run = promisify(execFile);
    const cwd = fileURLToPath(new URL("../..", import.meta.url));
    const cli = (...args: string[]) => run(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args, "--nats", bus.nats.url, "--prefix", P], { cwd });
    const moved = await cli("move", "acct/cli/1", "--to", "b", "--json");
    const drained = await cli("drain", "a");
    expect(JSON.parse(moved.stdout)).toMatchObject({ location: "acct/cli/1", server: "b" });
    expect(drained.stdout).toMatch(/acct\/cli\/2 -> b/);
    expect(drained.stdout).toMatch(/drained a: 1 moved, 0 left/);
    expect((await locateOk("acct/cli/1")).server).toBe("b");
    expect((await locateOk("acct/cli/2")).server).toBe("b");
    const bad = await cli("move", "acct/cli/1", "--to", "nobody").catch((e: { code: number; stderr: string }) => e);
    expect((bad as { code: number }).code).toBe(1);
    expect((bad as { stderr: string }).stderr).toMatch(/INVALID_ARGUMENT: server "nobody" is unknown/);
  });

  it("refuses inconsistent lease limits", async () => {
    const dataDir = await bus.tempDir("lease");
    await expect(startCoordinator({ nc, dataDir, prefix: P, limits: { leaseMs: 1000, leaseMarginMs: 600 } })).rejects.toThrow(/leaseMarginMs × 2 must be <= leaseMs/);
    await expect(startCoordinator({ nc, dataDir, prefix: P, limits: { leaseMs: 1000, leaseRenewMs: 500 } })).rejects.toThrow(/leaseRenewMs × 2/);
    expect(StrataError.is(await startCoordinator({ nc, dataDir, prefix: P, leaseMs: 0 }).catch((e: unknown) => e), "INVALID_ARGUMENT")).toBe(true);
  });
});

function encodeRaw(bytes: number[]): Uint8Array {
  return Uint8Array.from(bytes);
}
