/**
 * Failover scenario: double failover — kill -9 a server; as soon as its locations are served
 * again, kill -9 the server that took over most of them; the last server takes everything.
 * Asserts: every location ends up at the last live server and is written again; each location's
 * whole history survives both moves (no object-acked write lost, including those acknowledged by
 * the first new owner); local loss only within the seal window before either kill; msgId dedup
 * state survives (no msgId stored twice); watchers clean.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { pidAlive } from "../../src/testing/cluster.js";
import { heldBy, locateAll, busiest } from "../helpers/failover-workload.js";
import { diagnoseOnFailure, FAILOVER_TEST_MS, expectLocalLossBounded, expectSafe, RECOVERY_WAIT_MS, startRun, type Run } from "./run.js";

let run: Run;
beforeAll(async () => {
  run = await startRun();
});
afterAll(async () => {
  await run?.cluster.stop();
});

it("double failover: the new owner dies too, and the history of every location survives both moves", async () => {
  const { cluster, workload } = run;
  diagnoseOnFailure(cluster);
  workload.start();
  await workload.waitForAcks({ count: 2 }, 30_000);

  const first = await locateAll(cluster, workload.locations);
  const aId = busiest(first);
  const movedA = heldBy(first, aId);
  const killA = Date.now();
  await cluster.server(aId).kill9();
  await workload.waitForAcks({ locations: movedA, since: killA }, RECOVERY_WAIT_MS);

  const second = await locateAll(cluster, workload.locations);
  const takers = new Map<string, string[]>();
  for (const l of movedA) {
    const a = second.get(l)!;
    expect("code" in a ? a : a.server).not.toBe(aId);
    if (!("code" in a)) takers.set(a.server, [...(takers.get(a.server) ?? []), l]);
  }
  const bId = [...takers].sort((x, y) => y[1].length - x[1].length)[0]![0];
  const movedB = heldBy(second, bId);
  const bPid = cluster.server(bId).pid;
  const killB = Date.now();
  await cluster.server(bId).kill9();
  expect(pidAlive(bPid)).toBe(false);

  const lastId = cluster.serverIds.find((id) => id !== aId && id !== bId)!;
  await workload.waitForAcks({ locations: movedB, since: killB, count: 2 }, RECOVERY_WAIT_MS);
  const third = await locateAll(cluster, workload.locations);
  for (const l of workload.locations) expect(third.get(l), `owner of ${l} after both kills`).toMatchObject({ server: lastId });

  const kills = [
    { at: killA, locations: movedA },
    { at: killB, locations: movedB },
  ];
  const a = await run.finish(kills);
  expectSafe(a);
  expectLocalLossBounded(a, kills);
  expect(a.recovery[1]!.unrecovered).toEqual([]);
}, FAILOVER_TEST_MS);
