/**
 * One process per name (src/net/wire/presence.ts): a second server started under an id that a
 * running server holds, with another data directory, is refused with CONFLICT naming the first
 * (which goes on serving, and is the only one answering); a second coordinator on one prefix
 * likewise. The name is free again once its holder stops or is killed -9. A subscriber that does
 * not answer (a connection nats-server has not yet dropped) does not keep a server from starting.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataClient } from "../../src/net/client/client.js";
import { startCoordinator } from "../../src/net/coord/coordinator.js";
import { startServer } from "../../src/net/server/server.js";
import { presenceSubject } from "../../src/net/wire/subjects.js";
import { StrataProcess } from "../../src/testing/process.js";
import { Store } from "../../src/store.js";
import { captureLogger } from "../helpers/capture-logger.js";
import { StrataError } from "../../src/errors.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

let bus: Bus;

beforeAll(async () => {
  bus = await startBus();
});

afterAll(async () => {
  await bus?.stop();
});

const text = (b: Uint8Array | undefined) => Buffer.from(b ?? new Uint8Array()).toString();

/** The CONFLICT a start is refused with (fails the test if it starts, or fails otherwise). */
async function conflict(start: Promise<{ stop(): Promise<void> }>): Promise<StrataError> {
  const outcome = await start.then(
    async (started) => {
      await started.stop();
      return new Error("it started");
    },
    (err: unknown) => err,
  );
  expect(outcome).toBeInstanceOf(StrataError);
  expect((outcome as StrataError).code).toBe("CONFLICT");
  return outcome as StrataError;
}

describe("a second server under an id in use", () => {
  it("is refused with CONFLICT naming the first, which goes on as the only one answering; the id is free once the first stops", async () => {
    const firstDir = await bus.tempDir("first");
    const secondDir = await bus.tempDir("second");
    const first = await startServer({ dir: firstDir, nats: bus.nats.url, id: "dup", standalone: true });
    const err = await conflict(startServer({ dir: secondDir, nats: bus.nats.url, id: "dup", standalone: true }));
    expect(err.message).toContain(`pid ${process.pid}`);
    expect(err.message).toContain(firstDir);
    expect(err.message).toContain("--id");
    // The refused server let go of everything: its data directory opens again (lock released) and is empty.
    const left = await Store.open({ dir: secondDir, id: "dup" });
    expect(left.meta("p/s", "stream")).toBeUndefined();
    await left.close();

    // The first serves, and only it: a write is acknowledged once, and lands in its directory.
    const client = new StrataClient(bus.nc, { server: "dup" });
    const ack = await client.stream("p/s").append({ value: new TextEncoder().encode("one") });
    expect(ack.seq).toBe(1);
    expect(text((await client.stream("p/s").get(1))?.value)).toBe("one");
    client.close();
    await first.stop();

    // Free again: the second starts now, and serves what its own directory holds (nothing yet).
    const second = await startServer({ dir: secondDir, nats: bus.nats.url, id: "dup", standalone: true });
    const again = new StrataClient(bus.nc, { server: "dup" });
    expect(await again.stream("p/s").get(1)).toBeUndefined();
    again.close();
    await second.stop();
  });

  it("is free at once when its holder is killed -9 (nats-server drops the connection)", async () => {
    const dir = await bus.tempDir("killed");
    const proc = new StrataProcess("server", ["server", "--id", "k9", "--data", dir, "--nats", bus.nats.url, "--standalone"], /ready on strata\.\{w,r\}/);
    await proc.start();
    try {
      const refused = await conflict(startServer({ dir: await bus.tempDir("other"), nats: bus.nats.url, id: "k9", standalone: true }));
      expect(refused.message).toContain(`pid ${proc.pid}`);
    } finally {
      await proc.kill9();
    }
    const log = captureLogger();
    const replacement = await startServer({ dir, nats: bus.nats.url, id: "k9", standalone: true, logger: log.logger });
    expect(log.find("presence_unchecked")).toBeUndefined();
    await replacement.stop();
  });

  it("starts beside a subscriber that does not answer, after presenceProbeMs, with a warning", async () => {
    const silent = bus.nc.subscribe(presenceSubject("strata", "mute"), { callback: () => undefined });
    await bus.nc.flush();
    const log = captureLogger();
    const started = performance.now();
    const server = await startServer({ dir: await bus.tempDir("mute"), nats: bus.nats.url, id: "mute", standalone: true, logger: log.logger, limits: { presenceProbeMs: 300 } });
    expect(performance.now() - started).toBeGreaterThanOrEqual(300);
    expect(log.find("presence_unchecked")).toMatchObject({ subject: "strata.s.mute.presence" });
    silent.unsubscribe();
    await server.stop();
  });

  it("does not stand in the way of other ids", async () => {
    const a = await startServer({ dir: await bus.tempDir("a"), nats: bus.nats.url, id: "id-a", standalone: true });
    const b = await startServer({ dir: await bus.tempDir("b"), nats: bus.nats.url, id: "id-b", standalone: true });
    await b.stop();
    await a.stop();
  });
});

describe("a second coordinator on a prefix in use", () => {
  it("is refused with CONFLICT naming the first; another prefix is free, and so is this one once the first stops", async () => {
    const firstDir = await bus.tempDir("coord1");
    const first = await startCoordinator({ nc: bus.nc, dataDir: firstDir, prefix: "cp" });
    const err = await conflict(startCoordinator({ nc: bus.nc, dataDir: await bus.tempDir("coord2"), prefix: "cp" }));
    expect(err.message).toContain("another coordinator");
    expect(err.message).toContain(firstDir);
    const elsewhere = await startCoordinator({ nc: bus.nc, dataDir: await bus.tempDir("coord3"), prefix: "cq" });
    await elsewhere.stop();
    await first.stop();
    const next = await startCoordinator({ nc: bus.nc, dataDir: await bus.tempDir("coord4"), prefix: "cp" });
    await next.stop();
  });
});
