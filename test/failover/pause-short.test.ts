/**
 * Failover scenario: SIGSTOP a server for less than its lease, then SIGCONT.
 * Asserts: no move happens — locate keeps answering the same server with the same epoch for
 * every location, during the pause and after; every write completes (no failures) and nothing
 * acknowledged at either ack level is lost.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { busiest, heldBy, locateAll } from "../helpers/failover-workload.js";
import { diagnoseOnFailure, FAILOVER_TEST_MS, expectSafe, LEASE_MS, MARGIN_MS, startRun, type Run } from "./run.js";

/** Well inside the server's own view of its lease (lease − margin after its last renewal). */
const PAUSE_MS = Math.floor((LEASE_MS - 2 * MARGIN_MS) / 2);

let run: Run;
beforeAll(async () => {
  run = await startRun();
});
afterAll(async () => {
  await run?.cluster.stop();
});

it("a SIGSTOP shorter than the lease moves nothing", async () => {
  const { cluster, workload } = run;
  diagnoseOnFailure(cluster);
  workload.start();
  await workload.waitForAcks({ count: 2 }, 30_000);

  const before = await locateAll(cluster, workload.locations);
  for (const a of before.values()) expect("code" in a ? a : typeof a.epoch).toBe("number");
  const victimId = busiest(before);
  const held = heldBy(before, victimId);
  const victim = cluster.server(victimId);

  victim.pause();
  // The pause is the fault under test, so it is timed; locate during it must not move anything.
  const pausedUntil = Date.now() + PAUSE_MS;
  const during = await locateAll(cluster, held);
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, pausedUntil - Date.now())));
  victim.resume();
  const resumedAt = Date.now();
  for (const l of held) expect(during.get(l), `locate of ${l} during a short pause`).toEqual(before.get(l));

  await workload.waitForAcks({ locations: held, since: resumedAt, count: 2 }, 15_000);
  const after = await locateAll(cluster, workload.locations);
  for (const l of workload.locations) expect(after.get(l), `locate of ${l} after a short pause`).toEqual(before.get(l));

  const a = await run.finish();
  expectSafe(a);
  expect(a.localLost, "no server died: no local ack may be lost").toEqual([]);
  expect(a.failures, "every write rides through a short pause").toEqual({});
}, FAILOVER_TEST_MS);
