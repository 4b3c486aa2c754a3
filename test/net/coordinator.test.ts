/**
 * The coordinator against a real nats-server: servers register by heartbeating, new locations
 * spread over the live ones, answers are sticky (also across a coordinator restart), a down
 * server's locations answer UNAVAILABLE, and malformed input gets error replies.
 *
 * Waiting is always on an observable event: a heartbeat counts as seen once `P.coord.servers`
 * reports the server (polled with a deadline), never after a fixed sleep.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { encode } from "cbor-x";
import type { NatsConnection } from "nats";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { startCoordinator, type Coordinator } from "../../src/net/coord/coordinator.js";
import { SERVER_HEADER, decodeBody, type ServerView } from "../../src/net/wire/coordinator-protocol.js";
import { errorOfReply } from "../../src/net/wire/wire-errors.js";
import { startHeartbeat, type Heartbeat } from "../../src/net/server/heartbeat.js";
import type { RunningNatsServer } from "../helpers/nats-server.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

const P = "strata";
const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const WAIT_MS = 10_000;

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

const tempDir = () => bus.tempDir("coord");

async function coordinator(dataDir: string, serverTtlMs?: number): Promise<Coordinator> {
  const c = await startCoordinator({ nc, dataDir, prefix: P, ...(serverTtlMs ? { serverTtlMs } : {}), onWarning: () => undefined });
  cleanups.push(() => c.stop());
  return c;
}

function heartbeat(id: string, intervalMs = 100): Heartbeat {
  const hb = startHeartbeat(nc, { prefix: P, id, intervalMs, load: () => ({ locations: 0 }) });
  cleanups.push(() => hb.stop());
  return hb;
}

interface Answer {
  body?: unknown;
  error?: StrataError;
  server?: string;
}

async function ask(subject: string, data: Uint8Array): Promise<Answer> {
  const reply = await nc.request(subject, data, { timeout: 5000 });
  const error = errorOfReply(reply, () => subject);
  if (error) return { error, server: reply.headers?.get(SERVER_HEADER) || undefined };
  return { body: decodeBody(reply.data, "reply") };
}

async function locate(location: unknown): Promise<Answer> {
  return ask(`${P}.coord.locate`, encode({ location }));
}

async function locateOk(location: string): Promise<string> {
  const a = await locate(location);
  if (a.error) throw a.error;
  return (a.body as { server: string }).server;
}

async function servers(): Promise<ServerView[]> {
  return ((await ask(`${P}.coord.servers`, new Uint8Array(0))).body as { servers: ServerView[] }).servers;
}

/** Polls `P.coord.servers` until `ok` holds; the coordinator's view is the event we wait for. */
async function waitForServers(ok: (list: ServerView[]) => boolean, what: string): Promise<ServerView[]> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const list = await servers();
    if (ok(list)) return list;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; servers: ${JSON.stringify(list)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const liveness = (ids: string[], live: boolean) => (list: ServerView[]) =>
  ids.every((id) => list.some((s) => s.id === id && s.live === live));

describe("coordinator", () => {
  it("spreads new locations over live servers, keeps answers sticky and across a restart", async () => {
    const dir = await tempDir();
    const first = await coordinator(dir);
    heartbeat("srv-a");
    heartbeat("srv-b");
    await waitForServers(liveness(["srv-a", "srv-b"], true), "both servers live");

    const locations = Array.from({ length: 60 }, (_, i) => `acct/user${i}/chat`);
    const answers = new Map<string, string>();
    for (const loc of locations) answers.set(loc, await locateOk(loc));
    const perServer = (id: string) => [...answers.values()].filter((s) => s === id).length;
    expect(perServer("srv-a") + perServer("srv-b")).toBe(60);
    expect(perServer("srv-a")).toBeGreaterThanOrEqual(20);
    expect(perServer("srv-b")).toBeGreaterThanOrEqual(20);

    // Concurrent first lookups of one new location agree on a single answer.
    const racing = await Promise.all(Array.from({ length: 20 }, () => locateOk("acct/race/one")));
    expect(new Set(racing).size).toBe(1);
    answers.set("acct/race/one", racing[0]!);

    for (const [loc, server] of answers) expect(await locateOk(loc)).toBe(server);
    const before = await servers();
    expect(before.map((s) => [s.id, s.assigned])).toEqual([
      ["srv-a", [...answers.values()].filter((s) => s === "srv-a").length],
      ["srv-b", [...answers.values()].filter((s) => s === "srv-b").length],
    ]);

    await first.stop();
    await coordinator(dir);
    await waitForServers(liveness(["srv-a", "srv-b"], true), "both servers live after the restart");
    for (const [loc, server] of answers) expect(await locateOk(loc)).toBe(server);
    const after = await servers();
    expect(after.map((s) => [s.id, s.assigned, s.firstSeenAt])).toEqual(before.map((s) => [s.id, s.assigned, s.firstSeenAt]));
  });

  it("answers UNAVAILABLE for a down server's locations and never moves them", async () => {
    await coordinator(await tempDir(), 500);
    const a = heartbeat("srv-a");
    heartbeat("srv-b");
    await waitForServers(liveness(["srv-a", "srv-b"], true), "both servers live");
    const held = new Map<string, string>();
    for (let i = 0; i < 40; i++) held.set(`acct/down${i}/x`, await locateOk(`acct/down${i}/x`));
    const onA = [...held].filter(([, s]) => s === "srv-a").map(([loc]) => loc);
    const onB = [...held].filter(([, s]) => s === "srv-b").map(([loc]) => loc);
    expect(onA.length).toBeGreaterThan(0);
    expect(onB.length).toBeGreaterThan(0);

    a.stop();
    await waitForServers(liveness(["srv-a"], false), "srv-a to be seen as down");
    const down = await locate(onA[0]);
    expect(down.error?.code).toBe("UNAVAILABLE");
    expect(down.error?.retryable).toBe(true);
    expect(down.server).toBe("srv-a");
    expect(down.error?.message).toMatch(/srv-a/);
    expect(await locateOk(onB[0]!)).toBe("srv-b");
    for (let i = 0; i < 10; i++) expect(await locateOk(`acct/new${i}/x`)).toBe("srv-b");

    // A restarted server (new startedAt) gets its own locations back.
    heartbeat("srv-a");
    await waitForServers(liveness(["srv-a"], true), "srv-a live again");
    for (const loc of onA) expect(await locateOk(loc)).toBe("srv-a");
  });

  it("answers UNAVAILABLE while no server is live", async () => {
    await coordinator(await tempDir());
    const a = await locate("acct/alice/chat");
    expect(a.error?.code).toBe("UNAVAILABLE");
    expect(a.error?.message).toMatch(/no persistence server is live/);
    expect(await servers()).toEqual([]);
  });

  it("replies with error codes to malformed requests and ignores malformed heartbeats", async () => {
    await coordinator(await tempDir());
    const raw = (bytes: number[]) => ask(`${P}.coord.locate`, Uint8Array.from(bytes));
    expect((await raw([])).error?.code).toBe("INVALID_ARGUMENT");
    expect((await raw([0xff, 0xff, 0x00])).error?.code).toBe("INVALID_ARGUMENT");
    expect((await ask(`${P}.coord.locate`, encode("acct/alice"))).error?.code).toBe("INVALID_ARGUMENT");
    expect((await ask(`${P}.coord.locate`, encode([1, 2]))).error?.code).toBe("INVALID_ARGUMENT");
    expect((await ask(`${P}.coord.locate`, encode({}))).error?.code).toBe("INVALID_LOCATION");
    for (const bad of [5, null, "", "a/../b", "a//b", "a.b", "a/*", ">", "x/".repeat(20) + "x", "a".repeat(256), new Uint8Array(3)]) {
      expect((await locate(bad)).error?.code, `location ${String(bad)}`).toBe("INVALID_LOCATION");
    }
    expect((await ask(`${P}.coord.servers`, Uint8Array.from([0xff]))).error?.code).toBe("INVALID_ARGUMENT");

    const hbSubject = `${P}.coord.heartbeat`;
    for (const body of [
      Uint8Array.from([0xff]),
      encode("hello"),
      encode({ id: "a.b", startedAt: 1, load: {} }),
      encode({ id: "x", startedAt: -1, load: {} }),
      encode({ id: 7, startedAt: 1 }),
      encode({ id: "y", startedAt: 1, load: { bytes: "lots" } }),
    ]) {
      nc.publish(hbSubject, body);
    }
    // A heartbeat sent as a request gets an error reply instead of being silently dropped.
    expect((await ask(hbSubject, encode({ id: "a>b", startedAt: 1 }))).error?.code).toBe("INVALID_ARGUMENT");
    // Positive control: messages from one connection arrive in order, so once this valid
    // heartbeat is visible every malformed one before it has been processed.
    heartbeat("late");
    const list = await waitForServers(liveness(["late"], true), "the valid heartbeat");
    expect(list.map((s) => s.id)).toEqual(["late"]);
    expect(await locateOk("acct/after/garbage")).toBe("late");
  });

  it("warns when two processes heartbeat with the same server id", async () => {
    const warnings: string[] = [];
    const c = await startCoordinator({ nc, dataDir: await tempDir(), prefix: P, onWarning: (m) => warnings.push(m) });
    cleanups.push(() => c.stop());
    const newer = startHeartbeat(nc, { prefix: P, id: "twin", intervalMs: 50, startedAt: 2000 });
    cleanups.push(() => newer.stop());
    await waitForServers(liveness(["twin"], true), "twin live");
    expect(warnings).toEqual([]);
    const older = startHeartbeat(nc, { prefix: P, id: "twin", intervalMs: 50, startedAt: 1000 });
    cleanups.push(() => older.stop());
    // The older process's first heartbeat was published before this request on the same
    // connection, so the coordinator has handled it by the time the reply arrives.
    const list = await servers();
    expect(warnings[0]).toMatch(/two processes heartbeat as server "twin"/);
    expect(list).toMatchObject([{ id: "twin", startedAt: 2000, live: true }]);
  });

  it("runs as `strata coordinator` and shuts down cleanly on SIGTERM", async () => {
    const dir = await tempDir();
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "coordinator", "--data", dir, "--nats", nats.url], {
      cwd: REPO_ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
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
    expect((await locate("acct/cli/x")).error?.code).toBe("UNAVAILABLE");
    heartbeat("srv-cli");
    await waitForServers(liveness(["srv-cli"], true), "the CLI coordinator to see srv-cli");
    expect(await locateOk("acct/cli/x")).toBe("srv-cli");

    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(existsSync(join(dir, "LOCK"))).toBe(false);
    // The state it wrote is there for the next coordinator.
    await coordinator(dir);
    await waitForServers(liveness(["srv-cli"], true), "srv-cli after the restart");
    expect(await locateOk("acct/cli/x")).toBe("srv-cli");
  });

  it("refuses a second coordinator on the same data directory", async () => {
    const dir = await tempDir();
    await coordinator(dir);
    await expect(startCoordinator({ nc, dataDir: dir, prefix: P })).rejects.toMatchObject({ code: "UNAVAILABLE" });
  });
});
