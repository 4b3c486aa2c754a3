/**
 * The coordinator against a real nats-server, across its own restarts: new locations spread over
 * the live servers and stay put; assignments, epochs, incarnations and cuts survive a stop and
 * reopen and a kill -9 of `strata coordinator`; after a restart it honours the leases it may have
 * granted (no move before start + lease + margin) and no epoch goes backwards; an old-format state
 * directory is migrated, an unknown one refused. The protocol itself: coordinator-leases.test.ts.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { open } from "lmdb";
import type { NatsConnection } from "nats";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startCoordinator, type Coordinator } from "../../src/net/coord/coordinator.js";
import type { ServerView } from "../../src/net/wire/coordinator-protocol.js";
import { ask, fakeServer, ok, type FakeServer } from "../helpers/fake-coord-server.js";
import type { RunningNatsServer } from "../../src/testing/nats-server.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

const P = "strata";
const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const LEASE = 600;
const LEASE_END = LEASE + LEASE / 5;

let bus: Bus;
let nats: RunningNatsServer;
let nc: NatsConnection;
const cleanups: Array<() => unknown> = [];

beforeAll(async () => {
  bus = await startBus();
  ({ nats, nc } = bus);
});
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});
afterAll(async () => {
  await bus?.stop();
});

async function coordinator(dataDir: string, leaseMs = LEASE): Promise<Coordinator> {
  const c = await startCoordinator({ nc, dataDir, prefix: P, leaseMs });
  cleanups.push(() => c.stop());
  return c;
}

async function server(id: string): Promise<FakeServer> {
  const s = await fakeServer(nc, P, id);
  cleanups.push(() => s.stop());
  await s.register();
  s.startRenewing();
  return s;
}

const locateOk = async (location: string) => ok(await ask(nc, `${P}.coord.locate`, { location })) as { server: string; epoch: number };
const servers = async () => ok(await ask(nc, `${P}.coord.servers`, new Uint8Array(0))).servers as ServerView[];

async function until<T>(check: () => Promise<T | undefined>, what: string, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** `strata coordinator` as a child process; resolves once it prints "coordinator ready". */
async function coordinatorChild(dir: string): Promise<{ child: ChildProcess; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "coordinator", "--data", dir, "--nats", nats.url, "--lease-ms", String(LEASE)], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGKILL");
    await exited;
  });
  let output = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the coordinator did not get ready:\n${output}`)), 30_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("coordinator ready")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    void exited.then((code) => reject(new Error(`the coordinator exited with ${code}:\n${output}`)));
  });
  expect(output).toContain(`lease ${LEASE} ms (renew ${LEASE / 5}, margin ${LEASE / 5})`);
  return { child, exited };
}

describe("coordinator", () => {
  it("spreads new locations over live servers and keeps answers sticky", async () => {
    await coordinator(await bus.tempDir("coord"), 10_000);
    await server("srv-a");
    await server("srv-b");
    const answers = new Map<string, string>();
    for (let i = 0; i < 60; i++) answers.set(`acct/user${i}/chat`, (await locateOk(`acct/user${i}/chat`)).server);
    const per = (id: string) => [...answers.values()].filter((s) => s === id).length;
    expect(per("srv-a") + per("srv-b")).toBe(60);
    expect(per("srv-a")).toBeGreaterThanOrEqual(20);
    expect(per("srv-b")).toBeGreaterThanOrEqual(20);
    // Concurrent first lookups of one new location agree on a single answer.
    const racing = await Promise.all(Array.from({ length: 20 }, () => locateOk("acct/race/one")));
    expect(new Set(racing.map((r) => r.server)).size).toBe(1);
    for (const [loc, s] of answers) expect((await locateOk(loc)).server).toBe(s);
    expect((await servers()).map((s) => [s.id, s.assigned])).toEqual([
      ["srv-a", per("srv-a") + (racing[0]!.server === "srv-a" ? 1 : 0)],
      ["srv-b", per("srv-b") + (racing[0]!.server === "srv-b" ? 1 : 0)],
    ]);
  });

  it("keeps assignments, epochs, incarnations and cuts across a stop and reopen, and honours leases after it", async () => {
    const dir = await bus.tempDir("coord");
    const first = await coordinator(dir);
    const a = await server("a");
    const b = await server("b");
    const g = (r: Record<string, unknown>) => (r.grants as Array<Record<string, unknown>>)[0]!;
    expect(g(ok(await a.claim(["acct/keep/x"])))).toEqual({ location: "acct/keep/x", epoch: 1 });
    ok(await a.claim(["acct/keep/y"]));
    // A handoff with a fixed cut: move y to b, b claims and proposes a cut.
    a.onHandover = () => ({ cuts: [["acct/keep/y", null]] });
    ok(await ask(nc, `${P}.coord.move`, { location: "acct/keep/y", to: "b" }));
    expect(g(ok(await b.claim(["acct/keep/y"])))).toEqual({ location: "acct/keep/y", epoch: 2, handoff: { from: "a", incarnation: a.incarnation } });
    expect(ok(await b.cut("acct/keep/y", 2, "a", 11))).toEqual({ cut: 11 });
    const before = (await servers()).map((s) => [s.id, s.incarnation, s.assigned, s.epochsHeld]);

    a.stopRenewing();
    b.stopRenewing();
    await first.stop();
    const startedAt = performance.now();
    await coordinator(dir);
    // Incarnations survive: the old ones renew fine; a new registration gets a larger number.
    expect((await servers()).map((s) => [s.id, s.incarnation, s.assigned, s.epochsHeld])).toEqual(before);
    expect(ok(await b.renew())).toEqual({ ok: true });
    b.startRenewing();
    expect(g(ok(await b.claim(["acct/keep/y"])))).toEqual({ location: "acct/keep/y", epoch: 2, handoff: { from: "a", incarnation: a.incarnation, cut: 11 } });
    // "a" never renews again: the restarted coordinator counts it as renewed at its start and
    // keeps its locations until start + lease + margin, then moves them.
    const moved = await until(async () => {
      const r = await locateOk("acct/keep/x");
      return r.server === "a" ? undefined : { r, at: performance.now() };
    }, "x to move");
    expect(moved.at - startedAt).toBeGreaterThanOrEqual(LEASE_END);
    expect(moved.r).toEqual({ server: "b", epoch: 1 });
    expect(g(ok(await b.claim(["acct/keep/x"])))).toEqual({ location: "acct/keep/x", epoch: 2, handoff: { from: "a", incarnation: a.incarnation } });
    const oldIncarnation = a.incarnation;
    expect(await a.register()).toBeGreaterThan(Math.max(oldIncarnation, b.incarnation));
  });

  it("does not revive, after a restart, an incarnation whose location was moved away when its lease ended", async () => {
    // Regression (found by the model test): the restart rule counts every known incarnation as
    // renewed; one that lost a location to its lease running out must stay fenced, or it would
    // renew again and keep serving the location its successor now holds.
    const dir = await bus.tempDir("coord");
    const first = await coordinator(dir);
    const a = await server("a");
    const b = await server("b");
    ok(await a.claim(["acct/zombie/x"]));
    a.stopRenewing(); // paused, not dead: it still believes in its grant
    await until(async () => ((await locateOk("acct/zombie/x")).server === "b" ? true : undefined), "the move");
    expect((ok(await b.claim(["acct/zombie/x"])).grants as Array<{ epoch: number }>)[0]!.epoch).toBe(2);
    b.stopRenewing();
    await first.stop();
    await coordinator(dir);
    expect((await a.renew()).error?.code).toBe("FENCED");
    expect(ok(await b.renew())).toEqual({ ok: true });
    expect((await servers()).find((s) => s.id === "a")).toMatchObject({ lease: "over", live: false });
  });

  it("survives kill -9 of `strata coordinator`: state intact, leases honoured, epochs never lower", async () => {
    const dir = await bus.tempDir("coord");
    const first = await coordinatorChild(dir);
    const a = await server("a");
    const b = await server("b");
    const epochs = new Map<string, number>();
    for (let i = 0; i < 20; i++) {
      const loc = `acct/k9/${i}`;
      const s = (await locateOk(loc)).server === "a" ? a : b;
      epochs.set(loc, ((ok(await s.claim([loc])).grants as Array<{ epoch: number }>)[0]!).epoch);
    }
    const holders = new Map<string, string>();
    for (const loc of epochs.keys()) holders.set(loc, (await locateOk(loc)).server);
    expect(new Set(holders.values())).toEqual(new Set(["a", "b"]));
    a.stopRenewing();
    process.kill(first.child.pid!, "SIGKILL");
    await first.exited;

    const spawnedAt = performance.now();
    await coordinatorChild(dir);
    expect(ok(await b.renew())).toEqual({ ok: true });
    for (const [loc, server] of holders) expect(await locateOk(loc)).toEqual({ server, epoch: epochs.get(loc) });
    const aLocs = [...holders].filter(([, s]) => s === "a").map(([l]) => l);
    // No move before the restarted coordinator's start + lease + margin (it started after spawnedAt).
    const moved = await until(async () => ((await locateOk(aLocs[0]!)).server === "a" ? undefined : performance.now()), "a's location to move");
    expect(moved - spawnedAt).toBeGreaterThanOrEqual(LEASE_END);
    for (const loc of aLocs) {
      const r = await locateOk(loc);
      expect(r.server).toBe("b");
      const grant = (ok(await b.claim([loc])).grants as Array<{ epoch: number }>)[0]!;
      expect(grant.epoch).toBe(epochs.get(loc)! + 1);
    }
    expect((await a.renew()).error?.code).toBe("FENCED");
    expect(existsSync(join(dir, "coordinator.mdb"))).toBe(true);
  });

  it("migrates a format-1 state directory and refuses an unknown format", async () => {
    const dir = await bus.tempDir("coord");
    const root = open({ path: join(dir, "coordinator.mdb"), noSubdir: true, maxDbs: 4 });
    await root.openDB({ name: "sys" }).put("format", 1);
    await root.openDB({ name: "assign" }).put("acct/old/x", { server: "old", assignedAt: 1 });
    await root.openDB({ name: "servers" }).put("old", { id: "old", startedAt: 5, firstSeenAt: 6, lastHeartbeatAt: 7, assigned: 1, load: {} });
    await root.close();
    const c = await coordinator(dir);
    expect(await locateOk("acct/old/x")).toEqual({ server: "old", epoch: 0 });
    expect((await servers())[0]).toMatchObject({ id: "old", incarnation: 0, assigned: 1, epochsHeld: 0, firstSeenAt: 6 });
    const old = await server("old");
    expect(old.incarnation).toBe(1);
    expect(ok(await old.claim(["acct/old/x"])).grants).toEqual([{ location: "acct/old/x", epoch: 1 }]);
    await c.stop();

    const bad = await bus.tempDir("coord");
    const r2 = open({ path: join(bad, "coordinator.mdb"), noSubdir: true, maxDbs: 4 });
    await r2.openDB({ name: "sys" }).put("format", 99);
    await r2.close();
    await expect(startCoordinator({ nc, dataDir: bad, prefix: P })).rejects.toMatchObject({ code: "CORRUPT", message: expect.stringMatching(/format 99/) });
    expect(existsSync(join(bad, "LOCK"))).toBe(false);
  });
});
