/**
 * The server's lifecycle: `strata server` as a real process (ready line, serving, SIGTERM → exit
 * 0 with the data kept), graceful stop (new requests are refused with UNAVAILABLE while an
 * upload already in progress finishes, then the store is closed), and examples/stream-watch.ts
 * run against a live server so it keeps working.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import { startServer } from "../../src/net/server/server.js";
import { Store } from "../../src/store.js";
import { SERVER_READY } from "../../src/testing/cluster.js";
import type { RunningNatsServer } from "../../src/testing/nats-server.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const enc = (s: string) => new TextEncoder().encode(s);

let bus: Bus;
let nats: RunningNatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  bus = await startBus();
  ({ nats, nc } = bus);
});

afterAll(async () => {
  await bus?.stop();
});

const tempDir = () => bus.tempDir("life");

describe("strata server (CLI)", () => {
  it("serves until SIGTERM, then exits 0 with its data on disk", async () => {
    const dir = await tempDir();
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "server", "--id", "cli1", "--data", dir, "--nats", nats.url, "--standalone"], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (SERVER_READY.test(out) && out.includes("cli1")) resolve();
      });
      void exited.then((code) => reject(new Error(`strata server exited (${code}):\n${out}`)));
    });
    const client = new StrataClient(nc, { server: "cli1" });
    try {
      const { seq } = await client.stream("cli/s").append({ value: enc("kept") });
      expect(seq).toBe(1);
      process.kill(child.pid!, "SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      client.close();
      // A failed step must not leave the server running after the test (only our own child, by PID).
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGKILL");
    }
    const store = await Store.open({ dir, id: "cli1" });
    expect(new TextDecoder().decode((await store.stream("cli/s").get(1))?.value)).toBe("kept");
    await store.close();
  });

  it("refuses bad flags with a clear error", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "server", "--id", "bad id", "--data", "/nonexistent-x", "--nats", nats.url], {
      cwd: ROOT,
      stdio: ["ignore", "ignore", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
    expect(code).toBe(1);
    expect(err).toMatch(/INVALID_ARGUMENT: server id/);
  });
});

describe("start", () => {
  it("answers a request sent on another connection as soon as startServer resolves (its subscriptions are flushed)", async () => {
    // Without the flush the request can reach nats-server before the subscription: "no responders".
    for (let i = 0; i < 20; i++) {
      const server = await startServer({ dir: await bus.tempDir(`start-${i}`), nats: nats.url, id: `fresh-${i}`, standalone: true });
      try {
        // Any reply (this empty body gets an error reply) shows the server was there to answer.
        await expect(nc.request(`strata.r.fresh-${i}.acct.x`, new Uint8Array(0), { timeout: 5000 })).resolves.toBeDefined();
      } finally {
        await server.stop();
      }
    }
  });
});

describe("graceful stop", () => {
  it("finishes an upload in flight, refuses new requests, then closes the store", async () => {
    const dir = await tempDir();
    const server = await startServer({ standalone: true, dir, nats: nats.url, id: "g1" });
    const client = new StrataClient(nc, { server: "g1", timeoutMs: 500 });
    const value = randomBytes(24 * 1024 * 1024);
    const upload = client.stream("g/s").append({ value });
    while (server.stats().uploadsOpen === 0) await new Promise((resolve) => setImmediate(resolve));
    const stopped = server.stop();
    // Its own client with room for a loaded machine: a refusal must come back as UNAVAILABLE,
    // not time out because the reply was slow while 24 MiB are being taken in.
    const asker = new StrataClient(nc, { server: "g1", timeoutMs: 2000 });
    const refused = await asker.stream("g/s").inventory().catch((e: unknown) => e);
    asker.close();
    expect(StrataError.is(refused, "UNAVAILABLE")).toBe(true);
    const { seq } = await upload;
    await stopped;
    expect(server.store.closed).toBe(true);
    client.close();
    const store = await Store.open({ dir, id: "g1" });
    expect((await store.stream("g/s").get(seq))?.value.byteLength).toBe(value.byteLength);
    await store.close();
  });
});

describe("examples/stream-watch.ts", () => {
  it("runs to completion against a server", async () => {
    const server = await startServer({ standalone: true, dir: await tempDir(), nats: nats.url, id: "ex" });
    const child = spawn(process.execPath, ["--import", "tsx", "examples/stream-watch.ts", nats.url, "--server", "ex"], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
    await server.stop();
    expect(code, out).toBe(0);
    expect(out).toContain("watch: rev 6 #6 live-3");
  });
});
