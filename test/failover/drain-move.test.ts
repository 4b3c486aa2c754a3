/**
 * Failover scenario, on purpose: `strata move LOCATION --to SERVER` and `strata drain SERVER`
 * (the CLI, run as child processes) under load.
 * Asserts: move exits 0 and the location is then answered by the target with a higher epoch;
 * drain exits 0 and every location of the drained server is then answered by another server with
 * a higher epoch, and written there; the drained server stays up; nothing acknowledged is lost at
 * EITHER ack level (the owner seals and ships before it lets go); no write fails (calls in flight
 * retry within their budget); no duplicates; watchers clean.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { waitFor } from "../../src/testing/cluster.js";
import { busiest, heldBy, locateAll } from "../helpers/failover-workload.js";
import { diagnoseOnFailure, FAILOVER_TEST_MS, expectSafe, RECOVERY_WAIT_MS, startRun, type Run } from "./run.js";

let run: Run;
beforeAll(async () => {
  run = await startRun();
});
afterAll(async () => {
  await run?.cluster.stop();
});

it("move and drain under load lose nothing, even at ack local", async () => {
  const { cluster, workload } = run;
  diagnoseOnFailure(cluster);
  workload.start();
  await workload.waitForAcks({ count: 2 }, 30_000);
  const before = await locateAll(cluster, workload.locations);

  // Move one location (an ack-local stream) to a server that does not hold it.
  const target = workload.plan.find((p) => p.kind === "stream" && p.ack === "local")!;
  const was = before.get(target.location) as { server: string; epoch?: number };
  const to = cluster.serverIds.find((id) => id !== was.server)!;
  const moveAt = Date.now();
  const mv = await cluster.cli(["move", target.location, "--to", to]);
  expect(mv.code, `strata move: ${mv.stdout}\n${mv.stderr}`).toBe(0);
  expect(await cluster.locate(target.location)).toMatchObject({ server: to });
  await workload.waitForAcks({ locations: [target.location], since: moveAt, count: 2 }, RECOVERY_WAIT_MS);
  // The epoch goes up when the new owner is granted the location (the writers' next request there claims it).
  const movedTo = await waitFor(
    "the new owner to be granted the moved location",
    async () => {
      const a = await cluster.locate(target.location);
      return !("code" in a) && (a.epoch ?? 0) > (was.epoch ?? Infinity) ? a : undefined;
    },
    RECOVERY_WAIT_MS,
  );
  expect(movedTo).toMatchObject({ server: to });

  // Drain the busiest server.
  const mid = await locateAll(cluster, workload.locations);
  const drainedId = busiest(mid);
  const drained = heldBy(mid, drainedId);
  const drainAt = Date.now();
  const dr = await cluster.cli(["drain", drainedId], { timeoutMs: 60_000 });
  expect(dr.code, `strata drain: ${dr.stdout}\n${dr.stderr}`).toBe(0);
  expect(heldBy(await locateAll(cluster, workload.locations), drainedId)).toEqual([]);
  await workload.waitForAcks({ locations: drained, since: drainAt, count: 2 }, RECOVERY_WAIT_MS);
  const grantedAgain = async () => {
    const now = await locateAll(cluster, drained);
    return drained.every((l) => {
      const n = now.get(l)!;
      return !("code" in n) && (n.epoch ?? 0) > ((mid.get(l) as { epoch?: number }).epoch ?? Infinity);
    });
  };
  await waitFor("every drained location to be granted at its new owner", grantedAgain, RECOVERY_WAIT_MS);
  const after = await locateAll(cluster, workload.locations);
  for (const l of drained) {
    const n = after.get(l)!;
    expect("code" in n ? n : n.server, `${l} after draining ${drainedId}`).not.toBe(drainedId);
    expect((n as { epoch?: number }).epoch).toBeGreaterThan((mid.get(l) as { epoch?: number }).epoch ?? Infinity);
  }
  expect(heldBy(after, drainedId)).toEqual([]);
  expect(cluster.server(drainedId).running, "a drained server keeps running").toBe(true);

  const a = await run.finish();
  expectSafe(a);
  expect(a.localLost, "a handover on purpose loses nothing, even at ack local").toEqual([]);
  expect(a.failures, "writes ride through a move and a drain").toEqual({});
}, FAILOVER_TEST_MS);
