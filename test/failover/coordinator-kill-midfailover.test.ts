/**
 * Failover scenario: kill -9 a server, and kill -9 the coordinator in the middle of the failover
 * (right after it has moved the first of the dead server's locations), then restart it.
 * Asserts: every location ends up served by a live server; no epoch goes backwards against any
 * answer seen before the coordinator died; no location has two owners (asked directly, exactly
 * one live server serves each moved location); no object-acked write lost; local loss only
 * within the seal window before the server's kill; no duplicates; watchers clean.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import type { StrataClient } from "../../src/net/client/client.js";
import { pidAlive, waitFor, type LocateAnswer } from "../../src/testing/cluster.js";
import { busiest, forEachLimit, heldBy, locateAll, servingServers } from "../helpers/failover-workload.js";
import { CLIENT_LIMITS, diagnoseOnFailure, FAILOVER_TEST_MS, expectLocalLossBounded, expectSafe, RECOVERY_WAIT_MS, startRun, type Run } from "./run.js";

let run: Run;
beforeAll(async () => {
  run = await startRun();
});
afterAll(async () => {
  await run?.cluster.stop();
});

it("coordinator kill -9 in the middle of a failover: one owner per location, no epoch backwards, nothing object-acked lost", async () => {
  const { cluster, workload } = run;
  diagnoseOnFailure(cluster);
  workload.start();
  await workload.waitForAcks({ count: 2 }, 30_000);

  const highest = new Map<string, number>();
  const note = (answers: Map<string, LocateAnswer>) => {
    for (const [l, a] of answers) if (!("code" in a) && a.epoch !== undefined) highest.set(l, Math.max(highest.get(l) ?? -1, a.epoch));
  };
  const before = await locateAll(cluster, workload.locations);
  note(before);
  const victimId = busiest(before);
  const moved = heldBy(before, victimId);

  const killAt = Date.now();
  await cluster.server(victimId).kill9();
  // The failover has begun once the coordinator answers another server for one of them.
  await waitFor(
    "the coordinator to move the first location of the dead server",
    async () => {
      const a = await cluster.locate(moved[0]!);
      if (!("code" in a) && a.epoch !== undefined) highest.set(moved[0]!, Math.max(highest.get(moved[0]!) ?? -1, a.epoch));
      return !("code" in a) && a.server !== victimId;
    },
    RECOVERY_WAIT_MS,
    25,
  );
  const coordPid = cluster.coordinator.pid;
  await cluster.coordinator.kill9();
  expect(pidAlive(coordPid)).toBe(false);
  await cluster.coordinator.restart();

  await workload.waitForAcks({ locations: moved, since: Date.now(), count: 2 }, RECOVERY_WAIT_MS);
  const after = await locateAll(cluster, workload.locations);
  const live = cluster.servers.filter((s) => s.running).map((s) => s.name);
  for (const l of workload.locations) {
    const n = after.get(l)!;
    expect("code" in n ? n : live.includes(n.server), `${l} is answered by a live server`).toBe(true);
    expect((n as { epoch?: number }).epoch, `epoch of ${l} did not go backwards`).toBeGreaterThanOrEqual(highest.get(l) ?? Infinity);
  }

  // No two owners: ask every live server directly for each moved location.
  const pinned = new Map<string, StrataClient>();
  for (const id of live) pinned.set(id, await cluster.client({ server: id, timeoutMs: 1500, limits: CLIENT_LIMITS }));
  const plan = workload.plan.filter((p) => moved.includes(p.location));
  const owners = new Map<string, string[]>();
  await forEachLimit(plan, 25, async (p) => {
    owners.set(p.location, await servingServers(pinned, p));
  });
  for (const p of plan) expect(owners.get(p.location), `servers serving ${p.location}`).toEqual([(after.get(p.location) as { server: string }).server]);

  const kills = [{ at: killAt, locations: moved }];
  const a = await run.finish(kills);
  expectSafe(a);
  expectLocalLossBounded(a, kills);
}, FAILOVER_TEST_MS);
