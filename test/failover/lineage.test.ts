/**
 * Failover scenario for the epoch lineage (docs/failover.md, step 3; src/index/lineage.ts): a
 * location moves twice by kill -9 (A → B → C), then C is killed and restarted. Asserts that the
 * owner's `changes` reply answers a watcher last shown changes under A's epoch with the revision
 * B's epoch began at (the import of A's data), not C's start, after both moves and after C's
 * restart (the lineage came through the takeover from B and is kept with C's index and log); a
 * watcher shown B's epoch gets C's start; one that names no epoch gets the current epoch's start,
 * as before lineages.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { Caller } from "../../src/net/client/client-call.js";
import { Transport } from "../../src/net/client/client-transport.js";
import { resolveClientLimits } from "../../src/net/wire/net-limits.js";
import { startCluster, type Cluster } from "../../src/testing/cluster.js";
import { diagnoseOnFailure, FAILOVER_TEST_MS, LEASE_MS, SEAL_MS } from "./run.js";

const enc = (s: string) => new TextEncoder().encode(s);

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster({ servers: 3, leaseMs: LEASE_MS, sealIntervalMs: SEAL_MS });
});
afterAll(async () => {
  await cluster?.stop();
});

it("a location's epoch lineage survives two takeovers and a restart of its owner", async () => {
  diagnoseOnFailure(cluster);
  const client = await cluster.client({ timeoutMs: 20_000 });
  const caller = new Caller(new Transport(await cluster.connect()), cluster.prefix, resolveClientLimits({ timeoutMs: 20_000 }), undefined);
  const location = "acct/lineage/l1";
  const stream = client.stream(location);
  /** A `changes` request as a watcher sends it (routed and retried by the client's caller). */
  const changes = async (shownEpoch?: number) => (await caller.request({ location, cls: "r", idempotent: true }, { op: "changes", after: 0, limit: 1, ...(shownEpoch !== undefined ? { shownEpoch } : {}) })) as { epoch: number; since: number };
  const append = async (k: number) => expect((await stream.append({ value: enc(`#${k}`) }, { ack: "object", msgId: `m${k}` })).seq).toBe(k);
  const owner = async () => {
    const a = await cluster.locate(location);
    if ("code" in a) throw new Error(`locate ${location}: ${a.code}`);
    return a.server;
  };

  for (let k = 1; k <= 3; k++) await append(k);
  const a = await owner();
  const e1 = (await changes()).epoch;

  // A dies; B takes over from A's object-store data (revision 3: every write was object-acked).
  await cluster.server(a).kill9();
  for (let k = 4; k <= 5; k++) await append(k);
  const b = await owner();
  expect(b).not.toBe(a);
  const atB = await changes(e1);
  expect(atB.epoch).toBeGreaterThan(e1);
  expect(atB.since).toBe(3);

  // B dies; C takes over from B's (revision 5).
  await cluster.server(b).kill9();
  await append(6);
  const c = await owner();
  expect([a, b]).not.toContain(c);
  const atC = await changes(e1);
  expect(atC.epoch).toBeGreaterThan(atB.epoch);
  // A watcher last shown A's epoch rewinds to where B's began; one shown B's, to where C's began.
  expect(atC.since, "since for a watcher shown the first owner's epoch").toBe(3);
  expect((await changes(atB.epoch)).since).toBe(5);
  expect((await changes()).since, "no shownEpoch: the current epoch's start").toBe(5);

  // C is killed and restarted: it serves the location again under a new epoch (no takeover), and
  // its lineage is still there.
  await cluster.server(c).kill9();
  await cluster.server(c).restart();
  await append(7);
  expect(await owner()).toBe(c);
  const again = await changes(e1);
  expect(again.epoch).toBeGreaterThan(atC.epoch);
  expect(again.since, "since for a watcher shown the first owner's epoch, after the owner's restart").toBe(3);
  expect((await changes(atB.epoch)).since).toBe(5);
  expect((await changes(atC.epoch)).since, "a watcher shown the epoch before the restart: the restart's start").toBe(6);
  await expect(caller.request({ location, cls: "r", idempotent: true }, { op: "changes", after: 0, shownEpoch: -1 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
}, FAILOVER_TEST_MS);
