/**
 * Failover scenario: NATS itself as a cluster — three nats-servers routed together on loopback;
 * the coordinator on node 0, server sK on node K-1, writers on nodes 1 and 2 and watchers on the
 * node after theirs. Kill -9 nats-server node 2 (one server, one writer and one watcher client
 * lose their connection and reconnect to another node) under load.
 * Asserts: service resumes (every location written again after the kill); no object-acked write
 * lost; local acks lost only where the server on that node lost its locations, within the seal
 * window; no duplicates; watchers see every surviving change once, in order.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { pidAlive } from "../../src/testing/cluster.js";
import { heldBy, locateAll } from "../helpers/failover-workload.js";
import { diagnoseOnFailure, FAILOVER_TEST_MS, expectLocalLossBounded, expectSafe, RECOVERY_WAIT_MS, startRun, type Run } from "./run.js";

let run: Run;
beforeAll(async () => {
  run = await startRun({ cluster: { natsNodes: 3 }, writerNodes: [1, 2] });
});
afterAll(async () => {
  await run?.cluster.stop();
});

it("kill -9 of one of three routed nats-servers under load: service resumes, nothing object-acked lost", async () => {
  const { cluster, workload } = run;
  diagnoseOnFailure(cluster);
  workload.start();
  await workload.waitForAcks({ count: 2 }, 30_000);
  const before = await locateAll(cluster, workload.locations);

  const node = cluster.nats[2]!;
  const pid = node.pid;
  const killAt = Date.now();
  await node.kill9();
  expect(pidAlive(pid)).toBe(false);

  await workload.waitForAcks({ since: killAt, count: 2 }, RECOVERY_WAIT_MS);
  for (const p of [cluster.coordinator, ...cluster.servers]) expect(p.running, `${p.name} survives the loss of a NATS node`).toBe(true);

  // The server on node 2 (s3) may have lost its lease while reconnecting; only its locations may lose local acks.
  const kills = [{ at: killAt, locations: heldBy(before, "s3") }];
  const a = await run.finish(kills);
  expectSafe(a);
  expectLocalLossBounded(a, kills);
}, FAILOVER_TEST_MS);
