/**
 * Failover scenario: kill -9 the coordinator in steady state (all servers alive) under load,
 * then restart it on the same data dir.
 * Asserts: after the restart every location is answered by the same server as before, with an
 * epoch that did not go backwards; writes to every location succeed again; nothing acknowledged
 * at either ack level is lost (no server died); no duplicates; watchers clean.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { pidAlive } from "../../src/testing/cluster.js";
import { locateAll } from "../helpers/failover-workload.js";
import { diagnoseOnFailure, FAILOVER_TEST_MS, expectSafe, RECOVERY_WAIT_MS, startRun, type Run } from "./run.js";

let run: Run;
beforeAll(async () => {
  run = await startRun();
});
afterAll(async () => {
  await run?.cluster.stop();
});

it("coordinator kill -9 in steady state: no move, no epoch backwards, nothing lost", async () => {
  const { cluster, workload } = run;
  diagnoseOnFailure(cluster);
  workload.start();
  await workload.waitForAcks({ count: 2 }, 30_000);
  const before = await locateAll(cluster, workload.locations);

  const pid = cluster.coordinator.pid;
  await cluster.coordinator.kill9();
  expect(pidAlive(pid)).toBe(false);
  await cluster.coordinator.restart();
  const restartedAt = Date.now();

  await workload.waitForAcks({ since: restartedAt, count: 2 }, RECOVERY_WAIT_MS);
  const after = await locateAll(cluster, workload.locations);
  for (const l of workload.locations) {
    const b = before.get(l) as { server: string; epoch?: number };
    const n = after.get(l)!;
    expect("code" in n ? n : n.server, `owner of ${l} after the coordinator restart`).toBe(b.server);
    expect((n as { epoch?: number }).epoch, `epoch of ${l}`).toBeGreaterThanOrEqual(b.epoch ?? Infinity);
  }
  for (const s of cluster.servers) expect(s.running, `${s.name} survives the coordinator's death`).toBe(true);

  const a = await run.finish();
  expectSafe(a);
  expect(a.localLost, "no server died: no local ack may be lost").toEqual([]);
}, FAILOVER_TEST_MS);
