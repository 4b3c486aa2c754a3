/**
 * The kv read cache across a real fault: its strata server (a child process) killed with SIGKILL
 * by PID, then started again on the same data. Once the server is gone the cache serves no longer
 * than `cacheStaleMsMax` after it last heard from it, then refuses with UNAVAILABLE; once the
 * server is back it catches up, serves the writes made since, and never goes back to an older
 * value.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { startChildServer, type ChildServer } from "./server-child.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => Buffer.from(b).toString();
const STALE_MS = 1200;

let nats: RunningNatsServer;
let dir: string;
let child: ChildServer | undefined;
const conns: NatsConnection[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  dir = await mkdtemp(join(tmpdir(), "strata-kvcache-"));
});

afterAll(async () => {
  await child?.kill();
  for (const nc of conns) await nc.close();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function newClient(): Promise<StrataClient> {
  const nc = await connect({ servers: nats.url, reconnectTimeWait: 100 });
  conns.push(nc);
  return new StrataClient(nc, { server: "kf", timeoutMs: 1500, limits: { attemptTimeoutMs: 400, cacheStaleMsMax: STALE_MS } });
}

type Outcome = { at: number; value?: string; code?: string };

async function probe(get: () => Promise<{ value: Uint8Array } | undefined>): Promise<Outcome> {
  try {
    const e = await get();
    return { at: Date.now(), value: e ? dec(e.value) : "(none)" };
  } catch (err) {
    if (!StrataError.is(err)) throw err;
    return { at: Date.now(), code: err.code };
  }
}

it("serves at most cacheStaleMsMax past the server's death, refuses with UNAVAILABLE, then catches up after a restart", async () => {
  child = await startChildServer({ dir, url: nats.url, id: "kf", limits: { changeInlineBytesMax: 64 } });
  const reader = await newClient();
  const writer = await newClient();
  const cache = reader.kv("kf/loc").cache();
  await cache.ready;
  await cache.waitFor((await writer.kv("kf/loc").set("a", enc("one"))).revision);
  expect(dec((await cache.get("a"))!.value)).toBe("one");

  // Kill the server: the cache last heard from it before this moment.
  const killedAt = Date.now();
  await child.kill();
  child = undefined;
  const outcomes: Outcome[] = [];
  for (;;) {
    const o = await probe(() => cache.get("a"));
    outcomes.push(o);
    if (o.code !== undefined) break;
    expect(o.at - killedAt, "still serving long after the server died").toBeLessThan(STALE_MS + 5000);
    await new Promise((r) => setTimeout(r, 10));
  }
  const refused = outcomes[outcomes.length - 1]!;
  expect(refused.code).toBe("UNAVAILABLE");
  // Every get served after the kill was within the admitted staleness of the last contact.
  for (const o of outcomes.filter((x) => x.value !== undefined)) {
    expect(o.value).toBe("one");
    expect(o.at - killedAt).toBeLessThanOrEqual(STALE_MS + 50);
  }
  // While the server is down it keeps refusing (it does not fall back to serving what it has).
  await new Promise((r) => setTimeout(r, 300));
  expect((await probe(() => cache.get("a"))).code).toBe("UNAVAILABLE");

  // Restart on the same data; a write made after the restart reaches the cache.
  child = await startChildServer({ dir, url: nats.url, id: "kf", limits: { changeInlineBytesMax: 64 } });
  const two = await writer.kv("kf/loc").set("a", enc("two".padEnd(200, "!")));
  const bee = await writer.kv("kf/loc").set("b", enc("bee"));
  const seen: string[] = [];
  const end = Date.now() + 15_000;
  for (;;) {
    const o = await probe(() => cache.get("a"));
    if (o.value !== undefined) seen.push(o.value);
    else expect(o.code).toBe("UNAVAILABLE");
    if (o.value !== undefined && o.value.startsWith("two")) break;
    expect(Date.now()).toBeLessThan(end);
    await new Promise((r) => setTimeout(r, 20));
  }
  // Never back to an older value once the newer one was served.
  for (let i = 0; i < 20; i++) expect((await probe(() => cache.get("a"))).value).toBe(seen[seen.length - 1]);
  await cache.waitFor(bee.revision);
  expect((await cache.get("a"))?.revision).toBe(two.revision);
  expect(dec((await cache.get("b"))!.value)).toBe("bee");
  // Read-after-write holds again through the cache.
  const r = await cache.set("c", enc("sea"));
  expect((await cache.get("c"))?.revision).toBe(r.revision);
  cache.close();
  reader.close();
  writer.close();
  await child.stop();
  child = undefined;
}, 60_000);
