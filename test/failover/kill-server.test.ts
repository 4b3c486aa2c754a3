/**
 * Failover scenario: kill -9 one of three servers while writers (msgId, both ack levels) and
 * watchers run on 200 locations (streams and kvs).
 * Asserts: every location the dead server held is answered by a live server with a higher epoch
 * and written again, p99 within lease + 3 s of the kill; nothing acknowledged at "object" is lost;
 * lost "local" acks only from the seal window before the kill (counted, logged); no msgId stored
 * twice; watchers see every surviving change once, in order.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { pidAlive } from "../../src/testing/cluster.js";
import { busiest, heldBy, locateAll } from "../helpers/failover-workload.js";
import { diagnoseOnFailure, FAILOVER_TEST_MS, expectLocalLossBounded, expectSafe, RECOVERY_P99_MS, RECOVERY_WAIT_MS, startRun, type Run } from "./run.js";

let run: Run;
beforeAll(async () => {
  run = await startRun();
});
afterAll(async () => {
  await run?.cluster.stop();
});

it("kill -9 of one of three servers under load: all locations served again, no object-acked write lost", async () => {
  const { cluster, workload } = run;
  diagnoseOnFailure(cluster);
  workload.start();
  await workload.waitForAcks({ count: 2 }, 30_000);

  const before = await locateAll(cluster, workload.locations);
  const victimId = busiest(before);
  const moved = heldBy(before, victimId);
  expect(moved.length).toBeGreaterThan(0);
  const victim = cluster.server(victimId);
  const pid = victim.pid;

  const killAt = Date.now();
  await victim.kill9();
  expect(pidAlive(pid)).toBe(false);

  // Served again: every one of its locations gets a write acknowledged after the kill…
  await workload.waitForAcks({ locations: moved, since: killAt }, RECOVERY_WAIT_MS);
  // …and the run goes on a little at the new owners (two more writes each).
  await workload.waitForAcks({ locations: moved, since: killAt, count: 3 }, RECOVERY_WAIT_MS);

  const after = await locateAll(cluster, workload.locations);
  for (const location of workload.locations) {
    const was = before.get(location)!;
    const now = after.get(location)!;
    expect("code" in now ? now : null, `locate ${location} after the kill`).toBeNull();
    const n = now as { server: string; epoch?: number };
    if (moved.includes(location)) {
      expect(n.server).not.toBe(victimId);
      expect(n.epoch, `epoch of ${location} after its move`).toBeGreaterThan((was as { epoch?: number }).epoch ?? -1);
    } else {
      expect(n.server, `${location} was not the victim's and must not move`).toBe((was as { server: string }).server);
    }
  }

  const kills = [{ at: killAt, locations: moved }];
  const a = await run.finish(kills);
  expectSafe(a);
  expectLocalLossBounded(a, kills);
  expect(a.recovery[0]!.unrecovered).toEqual([]);
  expect(a.recovery[0]!.p99, "p99 ms from kill -9 to the first acknowledged write at the new owner").toBeLessThan(RECOVERY_P99_MS);
}, FAILOVER_TEST_MS);
