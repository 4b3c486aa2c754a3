/**
 * The client's check for a vanished server (src/net/client/server-probe.ts), against a real
 * nats-server and a real strata server in a child process (test/net/held-server-child.ts) that
 * holds requests unanswered: writes at `ack: "object"` whose object store never completes a put,
 * or kv gets of a held location.
 * - kill -9 of the server: every write in flight (a lone request, a coalesced batch, an upload)
 *   ends with TIMEOUT naming the vanished server within a few seconds, not after timeoutMs.
 * - SIGSTOP instead: nothing ends early (a paused server keeps its subscriptions); the write
 *   times out as usual, and the pings it was checked with reach the server once it runs again.
 * - A read in flight at a killed server of a cluster is asked again at the new owner once the
 *   coordinator moved its location, long before its attempt would have timed out.
 * The bounds only separate "checked" from "waited the whole budget" (see each test).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient, type StrataClientOptions } from "../../src/net/client/client.js";
import { Transport } from "../../src/net/client/client-transport.js";
import { serverGone } from "../../src/net/client/server-probe.js";
import { errorHeaders } from "../../src/net/wire/wire-errors.js";
import { requestSubject } from "../../src/net/wire/subjects.js";
import { decodeMap, encode } from "../../src/net/wire/wire-codec.js";
import { resolveClientLimits } from "../../src/limits.js";
import { SERVER_READY, startCluster, type Cluster } from "../../src/testing/cluster.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { StrataProcess, waitFor } from "../../src/testing/process.js";

const CHILD = "test/net/held-server-child.ts";
/** Small, so that a value of a few times it travels as an upload. */
const MAX_PAYLOAD = 64 * 1024;
const enc = (s: string) => new TextEncoder().encode(s);

let nats: RunningNatsServer;
let dir: string;
const conns: NatsConnection[] = [];
const procs: StrataProcess[] = [];
let cluster: Cluster | undefined;

beforeAll(async () => {
  nats = await startNatsServer({ maxPayload: MAX_PAYLOAD });
  dir = await mkdtemp(join(tmpdir(), "strata-probe-"));
});

afterEach(async () => {
  for (const p of procs.splice(0)) {
    if (p.paused) p.resume();
    await p.kill9();
  }
  await cluster?.stop();
  cluster = undefined;
});

afterAll(async () => {
  for (const nc of conns) await nc.close();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function newClient(options: StrataClientOptions): Promise<StrataClient> {
  const nc = await connect({ servers: nats.url, reconnectTimeWait: 100 });
  conns.push(nc);
  return new StrataClient(nc, options);
}

/** A standalone held server whose object store never completes a put once it is ready. */
async function heldServer(id: string): Promise<StrataProcess> {
  const p = new StrataProcess(id, ["server", "--id", id, "--data", join(dir, id), "--nats", nats.url, "--standalone", "--hold-puts", "--seal-interval-ms", "100"], SERVER_READY, { script: CHILD, ipc: true });
  procs.push(p);
  await p.start();
  return p;
}

interface Settled {
  at: number;
  code?: string;
  message?: string;
}

function settled(p: Promise<unknown>): Promise<Settled> & { done: boolean } {
  const out = p.then(
    () => ({ at: Date.now() }),
    (err: unknown) => {
      if (!StrataError.is(err)) throw err;
      return { at: Date.now(), code: err.code, message: err.message };
    },
  ) as Promise<Settled> & { done: boolean };
  out.done = false;
  void out.then(() => (out.done = true));
  return out;
}

/** A raw `ping` to `server` for `location` (no retry): the decoded answer. */
async function ping(nc: NatsConnection, prefix: string, server: string, location: string): Promise<unknown> {
  const msg = await nc.request(requestSubject(prefix, "r", server, location), encode({ op: "ping" }), { timeout: 5000 });
  expect(msg.headers?.get("Strata-Error") ?? "").toBe("");
  return decodeMap(msg.data, "a ping reply");
}

async function requestsSeen(p: StrataProcess): Promise<number> {
  const reply = await p.request({ type: "stats" });
  return (reply.stats as { requests: number }).requests;
}

it("serverProbeMs: 1000 by default, 0 turns the check off, a negative value is refused", () => {
  expect(resolveClientLimits().serverProbeMs).toBe(1000);
  expect(resolveClientLimits({ serverProbeMs: 0 }).serverProbeMs).toBe(0);
  expect(resolveClientLimits({ serverProbeMs: 250 }).serverProbeMs).toBe(250);
  expect(() => resolveClientLimits({ serverProbeMs: -1 })).toThrow(/serverProbeMs must be a positive integer/);
});

it("a server is gone only on nats-server's no responders: an error answer (an older server) or no answer means alive", async () => {
  const nc = await connect({ servers: nats.url });
  conns.push(nc);
  const transport = new Transport(nc);
  expect(await serverGone(transport, "probe.nobody", 1000)).toBe(true);
  // An older server answers a ping it does not know with an error: it is there.
  const older = nc.subscribe("probe.older", { callback: (_err, msg) => msg.respond(new Uint8Array(0), { headers: errorHeaders(new StrataError("INVALID_ARGUMENT", 'unknown op "ping"')) }) });
  // A paused or busy server does not answer in time: not known to be gone.
  let pingsHeard = 0;
  const silent = nc.subscribe("probe.silent", { callback: () => (pingsHeard += 1) });
  await nc.flush();
  expect(await serverGone(transport, "probe.older", 1000)).toBe(false);
  // Waits on the same subject share one ping in flight.
  expect(await Promise.all([1, 2, 3].map(() => serverGone(transport, "probe.silent", 300)))).toEqual([false, false, false]);
  expect(pingsHeard).toBe(1);
  older.unsubscribe();
  silent.unsubscribe();
  transport.close();
});

it("kill -9 of a server holding writes: a lone write, a batch and an upload end with TIMEOUT naming it, well before timeoutMs", async () => {
  const server = await heldServer("pk");
  const client = await newClient({ server: "pk", timeoutMs: 20_000 });
  await client.stream("probe/one").append({ value: enc("warm") }); // seq 1, ack local: the server is up
  expect(await ping(conns[conns.length - 1]!, "strata", "pk", "probe/one")).toEqual({ ok: {} });

  const lone = settled(client.stream("probe/one").append({ value: enc("held") }, { ack: "object" }));
  await waitFor("the lone write stored locally (then held for the object store)", async () => (await client.stream("probe/one").get(2)) !== undefined, 10_000);
  const batch = [1, 2, 3].map((n) => settled(client.stream("probe/two").append({ value: enc(`b${n}`) }, { ack: "object" })));
  const upload = settled(client.kv("probe/three").set("big", new Uint8Array(3 * MAX_PAYLOAD).fill(7), { ack: "object" }));
  await waitFor("the batch stored locally", async () => (await client.stream("probe/two").get(3)) !== undefined, 10_000);
  await waitFor("the upload stored locally", async () => (await client.kv("probe/three").get("big")) !== undefined, 10_000);
  const all = [lone, ...batch, upload];
  expect(all.map((s) => s.done), "writes at ack object, held by the object store").toEqual(all.map(() => false));

  const killedAt = Date.now();
  await server.kill9();
  const outcomes = await Promise.all(all);
  for (const o of outcomes) {
    expect(o.code).toBe("TIMEOUT");
    expect(o.message).toMatch(/server went away while the request for probe\/\w+ on server "pk" was in flight/);
    expect(o.message).toMatch(/may or may not be applied/);
    // Checked every serverProbeMs (1 s): a few seconds at most, against the 20 s budget.
    expect(o.at - killedAt).toBeLessThan(5000);
  }
}, 60_000);

it("SIGSTOP of a server holding a write: no early failure; it times out as usual, and the pings reach the server after SIGCONT", async () => {
  const server = await heldServer("pp");
  const client = await newClient({ server: "pp", timeoutMs: 6000, limits: { serverProbeMs: 500 } });
  await client.stream("probe/one").append({ value: enc("warm") });
  const sentAt = Date.now();
  const write = settled(client.stream("probe/one").append({ value: enc("held") }, { ack: "object" }));
  await waitFor("the write stored locally", async () => (await client.stream("probe/one").get(2)) !== undefined, 5000);
  const before = await requestsSeen(server);

  server.pause();
  const o = await write;
  expect(o.code).toBe("TIMEOUT");
  expect(o.message).toMatch(/no reply for probe\/one on server "pp" within 6000 ms/);
  expect(o.at - sentAt).toBeGreaterThanOrEqual(6000 - 50);
  server.resume();
  // The pings sent while it was paused (every 500 ms of the wait) were queued for it, not refused.
  await waitFor("the pings answered after SIGCONT", async () => (await requestsSeen(server)) >= before + 3, 10_000);
}, 60_000);

it("a read in flight at a killed server of a cluster is asked again at the new owner, long before its attempt times out", async () => {
  const c = await startCluster({ servers: 2, leaseMs: 2000, sealIntervalMs: 100, serverScript: CHILD });
  cluster = c;
  // An attempt of a read waits a third of 60 s without the check, far past the move (lease 2 s).
  const client = await c.client({ timeoutMs: 60_000, limits: { attemptTimeoutMs: 20_000 } });
  const location = "probe/read";
  await client.kv(location).set("k", enc("v"), { ack: "object" });
  const owner = await c.locate(location);
  if (!("server" in owner) || "code" in owner) throw new Error(`locate ${location}: ${JSON.stringify(owner)}`);
  const victim = c.server(owner.server);
  // A ping is answered without a grant: by a server that does not hold the location too.
  const other = c.serverIds.find((id) => id !== owner.server)!;
  expect(await ping(await c.connect(), c.prefix, other, location)).toEqual({ ok: {} });
  await victim.request({ type: "holdReads", prefix: "probe/" });

  const sentAt = Date.now();
  const read = client.kv(location).get("k").then((e) => ({ at: Date.now(), value: e && Buffer.from(e.value).toString() }));
  // The read reached the owner: it is in flight there (held) before the kill.
  await waitFor("the read in flight at the owner", async () => ((await victim.request({ type: "stats" })).stats as { inFlight: number }).inFlight > 0, 5000);
  const killedAt = Date.now();
  await victim.kill9();

  const r = await read;
  expect(r.value).toBe("v");
  const after = await c.locate(location);
  expect("server" in after && after.server).not.toBe(owner.server);
  // Without the check the first attempt alone waits 20 s; with it: the lease, the takeover, a retry.
  expect(r.at - killedAt, `read sent ${killedAt - sentAt} ms before the kill`).toBeLessThan(12_000);
}, 90_000);
